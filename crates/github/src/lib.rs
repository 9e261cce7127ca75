//! The GitHub pull request builder's pure parts (docs/design.md §5): webhook signature
//! verification, the events, the trust policy, and the decisions an event leads to. The
//! GitHub API and the webhook endpoint are in `kubeci-github-api`.

pub mod checks;
pub mod decide;
pub mod delivery;
pub mod event;
mod pattern;
pub mod signature;
pub mod trust;

pub use decide::{Action, Decision, JobRef};
pub use event::{parse, Event, EventError, PullRequestInfo, Repository};
pub use signature::{verify, SignatureError, Verifier};
