//! How much GitHub work an outsider can cause (issue 27 finding 5): opening or reopening a
//! pull request made kubeci read every comment on it looking for its own request for
//! approval, and each resync read every open pull request of every repository.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Pages of comments (of [`crate::client::PER_PAGE`], oldest first) read to find whether
/// kubeci already asked on a pull request. It asks when the pull request is opened, so its
/// request is among the first comments; 300 is more than most pull requests ever get.
/// Past them kubeci may ask a second time, once per replica's life ([`Asked`]).
pub const MAX_COMMENT_PAGES: usize = 3;

/// Open pull requests of one repository a resync looks at, newest first: one page of
/// GitHub's list. Each costs a call or two (its check runs or statuses; memberships are
/// cached); an older pull request whose delivery was missed is healed by its next event
/// (a push, a comment, a reopen), and the log says how many were left.
pub const MAX_RESYNC_PULL_REQUESTS: usize = 100;

/// Comments kubeci remembers making (or finding), so a pull request reopened again and
/// again costs no more reads: at about 40 bytes each, 10,000 take under half a megabyte.
pub const REMEMBERED_COMMENTS: usize = 10_000;

/// The comments kubeci made or found on pull requests, by (repository, number, marker):
/// the newest [`REMEMBERED_COMMENTS`] of them. Kept in memory, per replica: after a
/// restart, the comments are read again (within [`MAX_COMMENT_PAGES`]).
#[derive(Default)]
pub struct Asked {
    seen: Mutex<(HashSet<u64>, VecDeque<u64>)>,
}

impl Asked {
    fn key(repo: &str, number: u64, marker: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        (repo.to_ascii_lowercase(), number, marker).hash(&mut hasher);
        hasher.finish()
    }

    /// Whether a comment with `marker` is known to be on `repo`'s `number`.
    pub fn contains(&self, repo: &str, number: u64, marker: &str) -> bool {
        let key = Self::key(repo, number, marker);
        self.seen.lock().expect("lock").0.contains(&key)
    }

    /// Remembers that a comment with `marker` is on `repo`'s `number`, forgetting the
    /// oldest remembered beyond [`REMEMBERED_COMMENTS`].
    pub fn insert(&self, repo: &str, number: u64, marker: &str) {
        let key = Self::key(repo, number, marker);
        let mut seen = self.seen.lock().expect("lock");
        let (set, order) = &mut *seen;
        if set.insert(key) {
            order.push_back(key);
            if order.len() > REMEMBERED_COMMENTS {
                if let Some(oldest) = order.pop_front() {
                    set.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_comments_are_remembered_within_the_bound() {
        let asked = Asked::default();
        asked.insert("O/R", 1, "marker");
        assert!(asked.contains("o/r", 1, "marker"), "any case");
        assert!(!asked.contains("o/r", 2, "marker"));
        assert!(!asked.contains("o/r", 1, "other"));
        for n in 2..=REMEMBERED_COMMENTS as u64 + 1 {
            asked.insert("o/r", n, "marker");
        }
        assert!(
            !asked.contains("o/r", 1, "marker"),
            "the oldest is forgotten"
        );
        assert!(asked.contains("o/r", 2, "marker"));
        assert_eq!(asked.seen.lock().unwrap().1.len(), REMEMBERED_COMMENTS);
    }
}
