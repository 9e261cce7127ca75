//! Each job's index, pure: what its head and chunks hold and how entries are merged into
//! them. The I/O is in `archive`.

use serde::{Deserialize, Serialize};

use crate::layout::chunk_of;

/// One build in a job's index: its number, its times, and what the caller keeps to list
/// it (a summary of its record; `S` is the caller's type, stored as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry<S> {
    pub number: u64,
    /// When the build started (or was queued, if it never started).
    pub started: jiff::Timestamp,
    /// When the build ended; `None` while it runs. Retention counts a build's age from
    /// here and never deletes a build that has not ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<jiff::Timestamp>,
    pub summary: S,
}

/// `head.json`: the highest build number ever archived for the job (never lowered, so
/// numbers are never given twice) and the lowest one the index may still hold (raised
/// by retention, so listings need not walk emptied chunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub highest: u64,
    pub lowest: u64,
}

impl Head {
    /// The head once `numbers` (not empty) are in the index; `None` when it is unchanged.
    pub fn with(head: Option<Head>, numbers: &[u64]) -> Option<Head> {
        let (min, max) = (*numbers.iter().min()?, *numbers.iter().max()?);
        let next = match head {
            None => Head {
                highest: max,
                lowest: min,
            },
            Some(head) => Head {
                highest: head.highest.max(max),
                lowest: head.lowest.min(min),
            },
        };
        (head != Some(next)).then_some(next)
    }

    /// The numbers a listing may find: `lowest..=highest` (empty once retention removed
    /// every build).
    pub fn span(&self) -> std::ops::RangeInclusive<u64> {
        self.lowest..=self.highest
    }
}

/// `index/CHUNK.json`: the entries of one chunk's builds, newest (highest number) first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk<S> {
    pub chunk: u64,
    pub builds: Vec<IndexEntry<S>>,
}

impl<S> Chunk<S> {
    /// An empty chunk.
    pub fn new(chunk: u64) -> Self {
        Self {
            chunk,
            builds: Vec::new(),
        }
    }

    /// Puts `entries` (all of this chunk) in, replacing an entry of the same number:
    /// adding the same build twice leaves one entry, the later one.
    pub fn upsert(&mut self, entries: impl IntoIterator<Item = IndexEntry<S>>) {
        for entry in entries {
            debug_assert_eq!(chunk_of(entry.number), self.chunk);
            match self
                .builds
                .binary_search_by(|e| entry.number.cmp(&e.number))
            {
                Ok(at) => self.builds[at] = entry,
                Err(at) => self.builds.insert(at, entry),
            }
        }
    }

    /// Takes the entries of `numbers` out; whether any was there.
    pub fn remove(&mut self, numbers: &[u64]) -> bool {
        let before = self.builds.len();
        self.builds.retain(|e| !numbers.contains(&e.number));
        self.builds.len() != before
    }
}

/// How long a job's archived builds are kept: by age, by count, or both (a build goes
/// when either says so). `None` for both keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Builds that ended longer ago than this are deleted.
    pub max_age: Option<std::time::Duration>,
    /// Only the newest this many builds (by number, running ones included) are kept.
    pub max_count: Option<usize>,
}

/// Which archived builds retention deletes now: ended builds older than `max_age` or
/// beyond the newest `max_count`, oldest (lowest number) first, at most `batch` of them.
/// A build that has not ended is never chosen.
pub fn select_for_deletion<S>(
    entries: &[IndexEntry<S>],
    retention: &Retention,
    now: jiff::Timestamp,
    batch: usize,
) -> Vec<u64> {
    let mut numbers: Vec<u64> = entries.iter().map(|e| e.number).collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers.dedup();
    let count_cut = retention
        .max_count
        .and_then(|keep| numbers.get(keep).copied());
    let age_cut = retention.max_age.and_then(|age| {
        let age = jiff::SignedDuration::try_from(age).ok()?;
        now.checked_sub(age).ok()
    });
    let mut chosen: Vec<u64> = entries
        .iter()
        .filter(|e| {
            let Some(ended) = e.ended else { return false };
            let too_many = count_cut.is_some_and(|cut| e.number <= cut);
            let too_old = age_cut.is_some_and(|cut| ended < cut);
            too_many || too_old
        })
        .map(|e| e.number)
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    chosen.truncate(batch);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn entry(number: u64, ended: Option<&str>) -> IndexEntry<&'static str> {
        IndexEntry {
            number,
            started: at("2026-01-01T00:00:00Z"),
            ended: ended.map(at),
            summary: "s",
        }
    }

    #[test]
    fn the_same_build_twice_is_one_entry_newest_first() {
        let mut chunk = Chunk::new(0);
        chunk.upsert([entry(5, None), entry(7, None), entry(6, None)]);
        let mut later = entry(5, Some("2026-01-02T00:00:00Z"));
        later.summary = "ended";
        chunk.upsert([later.clone()]);
        let numbers: Vec<u64> = chunk.builds.iter().map(|e| e.number).collect();
        assert_eq!(numbers, [7, 6, 5]);
        assert_eq!(chunk.builds[2], later, "the later entry replaces the first");
        assert!(chunk.remove(&[6, 99]));
        assert!(!chunk.remove(&[6]));
        assert_eq!(chunk.builds.len(), 2);
    }

    #[test]
    fn the_head_only_grows_at_the_top_and_only_changes_when_it_must() {
        let first = Head::with(None, &[12, 10]).unwrap();
        assert_eq!(
            first,
            Head {
                highest: 12,
                lowest: 10
            }
        );
        assert_eq!(Head::with(Some(first), &[11]), None);
        assert_eq!(
            Head::with(Some(first), &[3]),
            Some(Head {
                highest: 12,
                lowest: 3
            })
        );
        assert_eq!(
            Head::with(Some(first), &[40]),
            Some(Head {
                highest: 40,
                lowest: 10
            })
        );
        assert_eq!(Head::with(Some(first), &[]), None);
    }

    #[test]
    fn retention_by_count_keeps_the_newest_and_never_a_running_build() {
        let entries: Vec<_> = (1..=10)
            .map(|n| entry(n, (n != 2).then_some("2026-01-01T01:00:00Z")))
            .collect();
        let keep_three = Retention {
            max_count: Some(3),
            ..Retention::default()
        };
        let now = at("2026-01-01T02:00:00Z");
        assert_eq!(
            select_for_deletion(&entries, &keep_three, now, 100),
            [1, 3, 4, 5, 6, 7],
            "8, 9, 10 kept as the newest three; 2 is still running"
        );
        assert_eq!(
            select_for_deletion(&entries, &keep_three, now, 2),
            [1, 3],
            "a batch takes the oldest first"
        );
        assert!(select_for_deletion(&entries, &Retention::default(), now, 100).is_empty());
        let keep_all = Retention {
            max_count: Some(10),
            ..Retention::default()
        };
        assert!(select_for_deletion(&entries, &keep_all, now, 100).is_empty());
    }

    #[test]
    fn retention_by_age_counts_from_the_end() {
        let entries = [
            entry(1, Some("2026-01-01T00:00:00Z")),
            entry(2, Some("2026-01-09T00:00:00Z")),
            entry(3, Some("2026-01-03T00:00:00Z")),
            entry(4, None),
        ];
        let week = Retention {
            max_age: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
            ..Retention::default()
        };
        let now = at("2026-01-09T12:00:00Z");
        assert_eq!(select_for_deletion(&entries, &week, now, 100), [1]);
        let both = Retention {
            max_count: Some(2),
            ..week
        };
        assert_eq!(
            select_for_deletion(&entries, &both, now, 100),
            [1, 2],
            "beyond the newest two (4, 3) or older than a week"
        );
    }
}
