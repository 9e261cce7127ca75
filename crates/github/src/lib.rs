//! The GitHub pull request builder's pure parts (DESIGN.md §5). So far: webhook signature
//! verification and the trust policy. Events and matching follow (issue 6).

pub mod signature;
pub mod trust;

pub use signature::{verify, SignatureError};
