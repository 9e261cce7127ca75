//! What every request passes on its way in, at the fake API server and at the proxy in
//! front of a real one: it is recorded, and faults are injected — held requests, error
//! answers, latency, dropped and expired watches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::ApiError;

/// One request as a client sent it, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub user_agent: String,
    /// The Kubernetes verb: get, list, watch, create, update, patch, delete, ...
    pub verb: String,
    /// The resource (`jobs`, `pods/log`, `configmaps`), empty for discovery.
    pub resource: String,
    /// When it arrived.
    pub received: std::time::Instant,
}

#[derive(Debug, Default)]
struct Faults {
    latency: Duration,
    /// Answers to give instead of serving: (status, Retry-After seconds).
    responses: VecDeque<(u16, Option<u64>)>,
    hold: Option<(String, String)>,
    held: usize,
}

/// Recording and fault injection for one server.
pub struct Gate {
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<Faults>,
    watch_epoch: Mutex<CancellationToken>,
    /// Bumped to release held requests; the value says whether they proceed.
    release: tokio::sync::watch::Sender<(u64, bool)>,
    expired_watches: AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            requests: Mutex::default(),
            faults: Mutex::default(),
            watch_epoch: Mutex::new(CancellationToken::new()),
            release: tokio::sync::watch::channel((0, false)).0,
            expired_watches: AtomicUsize::new(0),
        }
    }
}

/// What the gate decided for a request.
pub enum Admission {
    Serve,
    /// Answer with this error instead (and `Retry-After` seconds, if any).
    Refuse(ApiError, Option<u64>),
}

impl Gate {
    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn clear_requests(&self) {
        self.requests.lock().expect("lock").clear();
    }

    /// The next `count` requests fail with `status` (500, 503, ...).
    pub fn fail_next(&self, count: usize, status: u16) {
        let mut faults = self.faults.lock().expect("lock");
        faults
            .responses
            .extend(std::iter::repeat_n((status, None), count));
    }

    /// The next `count` requests get 429 Too Many Requests with `Retry-After`.
    pub fn throttle_next(&self, count: usize, retry_after_seconds: u64) {
        let mut faults = self.faults.lock().expect("lock");
        faults
            .responses
            .extend(std::iter::repeat_n((429, Some(retry_after_seconds)), count));
    }

    /// Delays every response.
    pub fn set_latency(&self, latency: Duration) {
        self.faults.lock().expect("lock").latency = latency;
    }

    /// Breaks every open watch connection, as a network failure would.
    pub fn drop_watches(&self) {
        let mut epoch = self.watch_epoch.lock().expect("lock");
        epoch.cancel();
        *epoch = CancellationToken::new();
    }

    /// Cancelled when [`Gate::drop_watches`] is called: watch streams end with it.
    pub fn watch_epoch(&self) -> CancellationToken {
        self.watch_epoch.lock().expect("lock").clone()
    }

    /// The next `count` watches resumed from a resourceVersion are answered 410 Gone
    /// ("too old resource version"), as after the API server compacted its history.
    pub fn expire_watches(&self, count: usize) {
        self.expired_watches.fetch_add(count, Ordering::SeqCst);
    }

    /// Whether this resumed watch is one to answer 410 Gone.
    pub(crate) fn take_expired_watch(&self) -> bool {
        self.expired_watches
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Makes requests with `verb` on `resource` (e.g. `create`, `jobs`) wait until
    /// [`Gate::release`]: a request that reached the server and is not served yet.
    pub fn hold(&self, verb: &str, resource: &str) {
        let mut faults = self.faults.lock().expect("lock");
        faults.hold = Some((verb.to_owned(), resource.to_owned()));
        faults.held = 0;
    }

    /// How many requests were held since [`Gate::hold`].
    pub fn held(&self) -> usize {
        self.faults.lock().expect("lock").held
    }

    /// Stops holding; held requests are served (`proceed`) or fail with 503 as if they
    /// never reached storage.
    pub fn release(&self, proceed: bool) {
        self.faults.lock().expect("lock").hold = None;
        self.release.send_modify(|(generation, p)| {
            *generation += 1;
            *p = proceed;
        });
    }

    /// Records `request`, holds it if asked to, waits the latency, and says whether to
    /// serve it or which fault to answer instead.
    pub(crate) async fn admit(&self, request: RecordedRequest) -> Admission {
        let held = {
            let mut faults = self.faults.lock().expect("lock");
            let held = faults.hold.as_ref().is_some_and(|(verb, resource)| {
                *verb == request.verb && *resource == request.resource
            });
            if held {
                faults.held += 1;
            }
            held
        };
        self.requests.lock().expect("lock").push(request);
        if held {
            let mut release = self.release.subscribe();
            let generation = release.borrow().0;
            let proceed = loop {
                let (current, proceed) = *release.borrow_and_update();
                if current != generation {
                    break proceed;
                }
                if release.changed().await.is_err() {
                    break false;
                }
            };
            if !proceed {
                return Admission::Refuse(
                    ApiError::new(
                        503,
                        "ServiceUnavailable",
                        "the request was held and dropped before it was served",
                    ),
                    None,
                );
            }
        }
        let (latency, injected) = {
            let mut faults = self.faults.lock().expect("lock");
            (faults.latency, faults.responses.pop_front())
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match injected {
            None => Admission::Serve,
            Some((code, retry_after)) => {
                let error = match code {
                    429 => ApiError::new(429, "TooManyRequests", "the server has received too many requests and has asked us to try again later"),
                    503 => ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
                    _ => ApiError::new(code, "InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding"),
                };
                Admission::Refuse(error, retry_after)
            }
        }
    }
}
