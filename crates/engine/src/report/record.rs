//! What each reporter was sent of a build: the `kubeci.io/reported` annotation on the
//! Kubernetes engine, the `reported` column of the local engine's `builds` table.
//!
//! One entry per reporter, by its name, `;` between entries, `:` after the name, then its
//! states and what it left at the receiver, `,` between them:
//!
//! ```text
//! github-checks:pending,running,success,check-run=42;webhook:pending,success
//! ```
//!
//! A reporter's name is lowercase letters, digits and `-` (at most 32 of them), so none of
//! `;`, `:`, `,` or `=` can be in one and the text reads back without ambiguity. Each
//! entry holds each state once and at most one check run, and at most 16 entries are read,
//! so the text stays within a few hundred bytes whatever is written to it.
//!
//! A record of a kubeci from before (`pending,success,check-run=42`: no `:` anywhere) was
//! written only once every reporter then configured had received those states — the old
//! queue retried a report to all of them until all succeeded — so it reads as delivered to
//! every reporter: the entry `*`, written back as such.

use std::collections::BTreeMap;

use super::{next_report, CommitState, Reported};
use crate::build::BuildState;
use CommitState::{Error, Failure, Pending, Running, Success};

/// The entry of what every reporter was sent (a record from before per-reporter entries).
pub const EVERY_REPORTER: &str = "*";

/// The longest reporter name.
pub const MAX_REPORTER_NAME: usize = 32;

/// The most entries read from a record.
const MAX_ENTRIES: usize = 16;

/// Whether `name` can name a reporter in a record: 1 to 32 lowercase ASCII letters, digits
/// and `-`, none of the record's separators.
pub fn valid_reporter_name(name: &str) -> bool {
    (1..=MAX_REPORTER_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What each reporter was sent of a build, and what it left at its receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportRecord {
    /// What every reporter was sent (a record of a kubeci from before).
    pub everyone: Reported,
    /// What each reporter was sent besides, by name: never a state or check run that
    /// `everyone` holds, never empty.
    pub by_reporter: BTreeMap<String, Reported>,
}

impl ReportRecord {
    /// What reporter `name` was sent: `reported`, nothing else.
    pub fn only(name: &str, reported: Reported) -> ReportRecord {
        let mut record = ReportRecord::default();
        record.add(name, &reported);
        record
    }

    /// Reads a record; what it cannot read (an unknown state, an invalid name) it skips.
    pub fn parse(text: Option<&str>) -> ReportRecord {
        let text = text.unwrap_or("").trim();
        if !text.contains(':') {
            return ReportRecord {
                everyone: Reported::parse(Some(text)),
                by_reporter: BTreeMap::new(),
            };
        }
        let mut record = ReportRecord::default();
        for entry in text.split(';').take(MAX_ENTRIES) {
            let Some((name, items)) = entry.split_once(':') else {
                continue;
            };
            let (name, reported) = (name.trim(), Reported::parse(Some(items)));
            if name == EVERY_REPORTER {
                record.everyone = record.everyone.union(&reported);
            } else if valid_reporter_name(name) {
                record.add(name, &reported);
            }
        }
        record.tidy();
        record
    }

    /// Writes it: `*` first, then the reporters by name.
    pub fn format(&self) -> String {
        let everyone =
            (self.everyone != Reported::default()).then_some((EVERY_REPORTER, &self.everyone));
        everyone
            .into_iter()
            .chain(self.by_reporter.iter().map(|(n, r)| (n.as_str(), r)))
            .map(|(name, reported)| format!("{name}:{}", reported.format()))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// What reporter `name` was sent: what everyone was, and its own.
    pub fn of(&self, name: &str) -> Reported {
        match self.by_reporter.get(name) {
            Some(own) => self.everyone.union(own),
            None => self.everyone.clone(),
        }
    }

    /// This record and what `other` adds, reporter by reporter.
    pub fn union(&self, other: &ReportRecord) -> ReportRecord {
        let mut union = self.clone();
        union.everyone = union.everyone.union(&other.everyone);
        for (name, reported) in &other.by_reporter {
            union.add(name, reported);
        }
        union.tidy();
        union
    }

    /// Whether everything in `other` is here.
    pub fn includes(&self, other: &ReportRecord) -> bool {
        self.everyone.includes(&other.everyone)
            && other
                .by_reporter
                .keys()
                .all(|name| self.of(name).includes(&other.of(name)))
    }

    /// Every state some reporter was sent, each once, in a build's order (`pending`,
    /// `running`, then its end).
    pub fn states(&self) -> Vec<CommitState> {
        let order = |state: &CommitState| {
            let all = [Pending, Running, Success, Failure, Error];
            all.iter().position(|s| s == state)
        };
        let mut states = self.everyone.states.clone();
        for state in self.by_reporter.values().flat_map(|r| &r.states) {
            if !states.contains(state) {
                states.push(*state);
            }
        }
        states.sort_by_key(order);
        states
    }

    /// The report owed next to reporter `name` (which reports `running`, or not) for a
    /// build in `state` (see [`next_report`]).
    pub fn next_for(
        &self,
        name: &str,
        state: &BuildState,
        running: bool,
    ) -> Option<(CommitState, String)> {
        next_report(state, &self.of(name).states, running)
    }

    fn add(&mut self, name: &str, reported: &Reported) {
        let own = self.by_reporter.entry(name.to_owned()).or_default();
        *own = own.union(reported);
    }

    /// Drops from each reporter's entry what everyone's holds, then the empty entries.
    fn tidy(&mut self) {
        let everyone = &self.everyone;
        for own in self.by_reporter.values_mut() {
            own.states.retain(|s| !everyone.states.contains(s));
            if everyone.check_run.is_some() {
                own.check_run = None;
            }
        }
        self.by_reporter
            .retain(|_, own| *own != Reported::default());
    }
}

/// Whether a build in `state` owes no report to any of `reporters` — the name of each
/// that wants it, and whether it reports `running` — given `record`: what retention waits
/// for before deleting a build.
pub fn fully_reported<'a>(
    state: &BuildState,
    record: &ReportRecord,
    reporters: impl IntoIterator<Item = (&'a str, bool)>,
) -> bool {
    reporters
        .into_iter()
        .all(|(name, running)| record.next_for(name, state, running).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ReportRecord {
        ReportRecord::parse(Some(text))
    }

    fn reported(states: &[CommitState], check_run: Option<u64>) -> Reported {
        Reported {
            states: states.to_vec(),
            check_run,
        }
    }

    #[test]
    fn each_reporters_entry_round_trips() {
        let mut record =
            ReportRecord::only("github-checks", reported(&[Pending, Running], Some(42)));
        record = record.union(&ReportRecord::only("webhook", reported(&[Pending], None)));
        let text = "github-checks:pending,running,check-run=42;webhook:pending";
        assert_eq!(record.format(), text);
        assert_eq!(parse(text), record);
        assert_eq!(record.of("webhook"), reported(&[Pending], None));
        assert_eq!(record.of("github-checks").check_run, Some(42));
        assert_eq!(
            record.of("github-status"),
            Reported::default(),
            "sent nothing"
        );
        assert_eq!(parse(""), ReportRecord::default());
        assert_eq!(ReportRecord::default().format(), "");
    }

    #[test]
    fn an_old_record_was_delivered_to_every_reporter() {
        let old = parse("pending,success,check-run=42");
        for name in ["github-status", "github-checks", "webhook"] {
            assert_eq!(
                old.of(name),
                reported(&[Pending, Success], Some(42)),
                "{name}"
            );
            assert_eq!(
                old.next_for(name, &BuildState::Succeeded, true),
                None,
                "{name}"
            );
        }
        assert!(fully_reported(
            &BuildState::Succeeded,
            &old,
            [("github-checks", true), ("webhook", false)]
        ));
        assert_eq!(
            old.format(),
            "*:pending,success,check-run=42",
            "written back for all"
        );
        assert_eq!(parse(&old.format()), old);
        let running = parse("pending,running");
        assert_eq!(
            running.next_for("webhook", &BuildState::Succeeded, false),
            Some((Success, "Build succeeded".into())),
            "what the old kubeci had not sent yet is owed to each"
        );
    }

    #[test]
    fn unions_add_up_per_reporter_and_drop_what_everyone_was_sent() {
        let union = parse("pending,check-run=7")
            .union(&parse("webhook:pending,success"))
            .union(&parse("github-checks:running,check-run=8"));
        assert_eq!(
            union.format(),
            "*:pending,check-run=7;github-checks:running;webhook:success",
            "the check run known first stays"
        );
        assert_eq!(union.of("webhook"), reported(&[Pending, Success], Some(7)));
        assert_eq!(union.states(), [Pending, Running, Success]);
        assert!(union.includes(&parse("webhook:success")));
        assert!(union.includes(&parse("github-checks:pending,running")));
        assert!(!union.includes(&parse("github-checks:success")));
        assert!(!parse("webhook:success").includes(&parse("github-checks:success")));
        assert_eq!(
            parse("webhook:pending").union(&parse("webhook:pending")),
            parse("webhook:pending"),
            "each state once"
        );
    }

    #[test]
    fn what_is_owed_is_owed_to_each_reporter_alone() {
        let record = parse("github-checks:pending,running,success;webhook:pending");
        let state = BuildState::Succeeded;
        assert_eq!(record.next_for("github-checks", &state, true), None);
        assert_eq!(
            record.next_for("webhook", &state, false).map(|r| r.0),
            Some(Success)
        );
        assert!(!fully_reported(
            &state,
            &record,
            [("github-checks", true), ("webhook", false)]
        ));
        assert!(fully_reported(&state, &record, [("github-checks", true)]));
        assert!(fully_reported(&state, &record, []), "no reporter wants it");
    }

    #[test]
    fn what_cannot_be_read_is_skipped_and_the_text_stays_bounded() {
        assert_eq!(
            parse("Bad Name:success;webhook:pending,bogus,pending;x:;:success;nothing"),
            parse("webhook:pending"),
        );
        assert!(valid_reporter_name("github-checks"));
        for bad in [
            "",
            "*",
            "a:b",
            "a;b",
            "a,b",
            "a=b",
            "Webhook",
            &"x".repeat(33),
        ] {
            assert!(!valid_reporter_name(bad), "{bad:?}");
        }
        let many: Vec<String> = (0..100).map(|i| format!("r{i}:pending,success")).collect();
        let record = parse(&many.join(";"));
        assert_eq!(record.by_reporter.len(), 16);
        assert!(record.format().len() < 512);
    }
}
