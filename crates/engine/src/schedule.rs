//! When a cron-triggered job is due.

use kubeci_spec::cron::CronSchedule;

/// How far back missed runs are looked for (a server that was down for a week starts one
/// build, not a week of them).
pub const CATCH_UP_WINDOW: i64 = 24 * 3600;

/// The run that is due at `now`, if any: the latest scheduled time after `last_run` (looking
/// back at most [`CATCH_UP_WINDOW`]) and at or before `now`; without a last run, only a time
/// in the current minute. Missed runs collapse into one, as in Jenkins.
pub fn due_run(schedule: &CronSchedule, last_run: Option<i64>, now: i64) -> Option<i64> {
    let from = match last_run {
        Some(last) => last.max(now - CATCH_UP_WINDOW),
        // A job seen for the first time does not catch up on its past.
        None => now - now.rem_euclid(60) - 1,
    };
    let mut due = None;
    let mut cursor = from;
    while let Some(next) = schedule.next_after(cursor) {
        if next > now {
            break;
        }
        due = Some(next);
        cursor = next;
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONDAY_10_07_30: i64 = 1_795_428_450;

    #[test]
    fn due_runs() {
        let quarterly = CronSchedule::parse("*/15 * * * *", "j").unwrap();
        let ten = MONDAY_10_07_30 - 450; // 10:00:00
        assert_eq!(
            due_run(&quarterly, Some(ten - 900), MONDAY_10_07_30),
            Some(ten),
            "the 10:00 run is due"
        );
        assert_eq!(
            due_run(&quarterly, Some(ten), MONDAY_10_07_30),
            None,
            "already ran at 10:00"
        );
        assert_eq!(
            due_run(&quarterly, Some(ten - 7 * 86_400), MONDAY_10_07_30),
            Some(ten),
            "a week of missed runs is one run"
        );
        assert_eq!(
            due_run(&quarterly, None, MONDAY_10_07_30),
            None,
            "a new job waits for its next time"
        );
        assert_eq!(
            due_run(&quarterly, None, ten + 20),
            Some(ten),
            "unless that time is this minute"
        );
    }
}
