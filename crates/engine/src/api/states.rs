//! The state of every job's newest build: what the jobs page's state filter reads.

use crate::build::Phase;

/// A job's newest build's state, and the one time alone turns it into (see
/// [`crate::observe::StateOverTime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestState {
    pub now: Phase,
    /// From this time (seconds since the epoch) on, the state is this one.
    pub later: Option<(i64, Phase)>,
}

impl From<crate::observe::StateOverTime> for NewestState {
    fn from(state: crate::observe::StateOverTime) -> NewestState {
        NewestState {
            now: state.now.phase(),
            later: state.later.map(|(from, later)| (from, later.phase())),
        }
    }
}

impl From<Phase> for NewestState {
    fn from(now: Phase) -> NewestState {
        NewestState { now, later: None }
    }
}

/// Namespace → job → its newest build's state (looked up by `&str`, no key built per job).
pub type StatesByJob =
    std::collections::HashMap<String, std::collections::HashMap<String, NewestState>>;

/// The state of every job's newest build at a time: what the jobs page's state filter
/// reads. Its parts (one per watched scope) are shared, not copied.
#[derive(Debug, Clone, Default)]
pub struct LatestStates {
    parts: Vec<std::sync::Arc<StatesByJob>>,
    now: i64,
}

impl LatestStates {
    /// The states of `parts` (each job in one of them) at `now` (seconds since the epoch).
    pub fn new(parts: Vec<std::sync::Arc<StatesByJob>>, now: i64) -> LatestStates {
        LatestStates { parts, now }
    }

    /// These states, then `part`'s for the jobs none of them holds (the newest archived
    /// builds of jobs whose builds all left the engine).
    pub fn with_fallback(mut self, part: StatesByJob) -> LatestStates {
        self.parts.push(std::sync::Arc::new(part));
        self
    }

    /// The state of the newest build of job `name` of `namespace`, if it has a build.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Phase> {
        let state = self
            .parts
            .iter()
            .find_map(|part| part.get(namespace)?.get(name))?;
        Some(match state.later {
            Some((from, later)) if self.now >= from => later,
            _ => state.now,
        })
    }
}
