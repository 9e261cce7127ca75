//! The GitHub pull request builder's pure parts (DESIGN.md §5). So far: webhook signature
//! verification. Events, matching and the trust policy follow (issue 6).

pub mod signature;

pub use signature::{verify, SignatureError};
