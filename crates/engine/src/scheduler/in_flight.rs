//! The report calls under way. A leader that stops closes it and gives its Lease back only
//! once none is under way, so the next leader knows none of its reports can still land
//! (see [`crate::leader::predecessor_may_be_reporting`]).

use std::sync::Arc;

use tokio::sync::watch;

/// Whether new reports may start, and how many are under way.
#[derive(Debug)]
pub struct InFlight {
    state: watch::Sender<(bool, usize)>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            state: watch::Sender::new((false, 0)),
        }
    }
}

impl InFlight {
    /// A report starts, unless [`InFlight::close`] was called; it ends when the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Option<InFlightGuard> {
        let mut started = false;
        self.state.send_if_modified(|(closed, count)| {
            started = !*closed;
            if started {
                *count += 1;
            }
            started
        });
        started.then(|| InFlightGuard(Arc::clone(self)))
    }

    /// No report starts from now on.
    pub fn close(&self) {
        self.state.send_modify(|(closed, _)| *closed = true);
    }

    /// Completes once no report is under way.
    pub async fn settled(&self) {
        let mut state = self.state.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = state.wait_for(|(_, count)| *count == 0).await;
    }
}

/// One report under way.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.state.send_modify(|(_, count)| *count -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_once_the_reports_under_way_end_and_starts_none_once_closed() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.begin().expect("open");
        let second = in_flight.begin().expect("open");
        in_flight.close();
        assert!(in_flight.begin().is_none(), "closed: no new report");
        let settled = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.settled().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!settled.is_finished(), "one report still under way");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(10), settled)
            .await
            .expect("settled once none is under way")
            .unwrap();
    }
}
