//! Jenkins cron syntax: five fields, `H` spreading, `@daily` and friends, one schedule per
//! line with `#` comments.
//!
//! `H` ("hash") picks a value from the job's name, so jobs with the same schedule start at
//! different, stable times instead of all at once. As in Jenkins, every field must match
//! (day of month *and* day of week), all times are UTC, and `H` in the day-of-month field
//! ranges over 1-28 so that it fires in every month.

use sha2::{Digest, Sha256};

/// A parsed schedule: it fires when any of its lines matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    pub lines: Vec<CronLine>,
}

/// One schedule line, as the set of values each field matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronLine {
    pub minutes: u64,
    pub hours: u64,
    pub days_of_month: u64,
    pub months: u64,
    /// Bit 0 is Sunday.
    pub days_of_week: u64,
    /// The line matches every minute (`* * * * *`-like): worth a warning.
    pub every_minute: bool,
}

/// What is wrong with a schedule, on which line of it (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub line: usize,
    pub message: String,
    pub help: String,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Range used by a bare `H` (Jenkins keeps days of month to 1-28).
    hash_max: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        hash_max: 59,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        hash_max: 23,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        hash_max: 28,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        hash_max: 12,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        hash_max: 6,
    },
];

const SYNTAX_HELP: &str =
    "write five fields `MINUTE HOUR DOM MONTH DOW`, e.g. `H H(2-4) * * 1-5`, or @hourly, @daily, @weekly, @monthly, @yearly";

impl CronSchedule {
    /// Parses `text`; `seed` (the job's name) decides what `H` means for this job.
    pub fn parse(text: &str, seed: &str) -> Result<CronSchedule, CronError> {
        let mut hasher = Hasher::new(seed);
        let mut lines = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(zone) = line.strip_prefix("TZ=") {
                if zone.trim() == "UTC" || zone.trim() == "Etc/UTC" {
                    continue;
                }
                return Err(CronError {
                    line: line_no,
                    message: format!("time zone `{}` is not supported", zone.trim()),
                    help: "kubeci runs schedules in UTC: remove the TZ= line and convert the hours to UTC".into(),
                });
            }
            let expanded = match line {
                "@yearly" | "@annually" => "H H H H *",
                "@monthly" => "H H H * *",
                "@weekly" => "H H * * H",
                "@daily" => "H H * * *",
                "@midnight" => "H H(0-2) * * *",
                "@hourly" => "H * * * *",
                other if other.starts_with('@') => {
                    return Err(CronError {
                        line: line_no,
                        message: format!("`{other}` is not a known shorthand"),
                        help: SYNTAX_HELP.into(),
                    })
                }
                other => other,
            };
            let parts: Vec<&str> = expanded.split_whitespace().collect();
            if parts.len() != 5 {
                return Err(CronError {
                    line: line_no,
                    message: format!("a schedule has 5 fields; `{line}` has {}", parts.len()),
                    help: SYNTAX_HELP.into(),
                });
            }
            let mut sets = [0u64; 5];
            for (i, (part, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
                sets[i] = parse_field(part, field, &mut hasher).map_err(|message| CronError {
                    line: line_no,
                    message: format!("{} field `{part}`: {message}", field.name),
                    help: format!(
                        "the {} field takes values {}-{}: `*`, `H`, `H(a-b)`, `a`, `a-b`, `a,b`, each with an optional `/step`",
                        field.name, field.min, field.max
                    ),
                })?;
            }
            // Sunday may be written 0 or 7.
            if sets[4] & (1 << 7) != 0 {
                sets[4] = (sets[4] | 1) & !(1 << 7);
            }
            lines.push(CronLine {
                minutes: sets[0],
                hours: sets[1],
                days_of_month: sets[2],
                months: sets[3],
                days_of_week: sets[4],
                every_minute: sets[0] == (1u64 << 60) - 1,
            });
        }
        if lines.is_empty() {
            return Err(CronError {
                line: 1,
                message: "the schedule is empty".into(),
                help: SYNTAX_HELP.into(),
            });
        }
        Ok(CronSchedule { lines })
    }

    /// The first minute strictly after `after` (seconds since the Unix epoch, UTC) at which
    /// the schedule fires, within the next five years.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let mut minute = after.div_euclid(60) + 1;
        let limit = minute + 5 * 366 * 24 * 60;
        while minute < limit {
            let days = minute.div_euclid(1440);
            let (_, month, day) = civil_from_days(days);
            let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
            let day_matches = self.lines.iter().any(|l| {
                bit(l.months, month) && bit(l.days_of_month, day) && bit(l.days_of_week, weekday)
            });
            if !day_matches {
                minute = (days + 1) * 1440;
                continue;
            }
            let of_day = minute.rem_euclid(1440);
            let (hour, min) = ((of_day / 60) as u32, (of_day % 60) as u32);
            if self.lines.iter().any(|l| {
                bit(l.months, month)
                    && bit(l.days_of_month, day)
                    && bit(l.days_of_week, weekday)
                    && bit(l.hours, hour)
                    && bit(l.minutes, min)
            }) {
                return Some(minute * 60);
            }
            minute += 1;
        }
        None
    }
}

fn bit(set: u64, value: u32) -> bool {
    set & (1u64 << value) != 0
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Hasher {
    state: [u8; 32],
    counter: u64,
}

impl Hasher {
    fn new(seed: &str) -> Hasher {
        Hasher {
            state: Sha256::digest(seed.as_bytes()).into(),
            counter: 0,
        }
    }

    /// A stable pseudo-random number in `0..n`, different for each `H` of the schedule.
    fn next(&mut self, n: u32) -> u32 {
        let mut hasher = Sha256::new();
        hasher.update(self.state);
        hasher.update(self.counter.to_le_bytes());
        self.counter += 1;
        let digest = hasher.finalize();
        let value = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        (value % u64::from(n.max(1))) as u32
    }
}

fn parse_field(text: &str, field: &Field, hasher: &mut Hasher) -> Result<u64, String> {
    let mut set = 0u64;
    for term in text.split(',') {
        let (range, step) = match term.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step `{step}` is not a number"))?;
                if step == 0 {
                    return Err("a step of 0 never advances".into());
                }
                (range, Some(step))
            }
            None => (term, None),
        };
        let (lo, hi, hashed) = if range == "*" {
            (field.min, field.max, false)
        } else if range == "H" {
            (field.min, field.hash_max, true)
        } else if let Some(inner) = range.strip_prefix("H(").and_then(|r| r.strip_suffix(')')) {
            let (lo, hi) = parse_range(inner, field)?;
            (lo, hi, true)
        } else {
            let (lo, hi) = parse_range(range, field)?;
            if step.is_some() && !range.contains('-') {
                // `5/15` means from 5 to the end, stepping 15.
                (lo, field.max, false)
            } else {
                (lo, hi, false)
            }
        };
        match (hashed, step) {
            (true, None) => set |= 1 << (lo + hasher.next(hi - lo + 1)),
            (true, Some(step)) => {
                let start = lo + hasher.next(step.min(hi - lo + 1));
                set |= stepped(start, hi, step);
            }
            (false, step) => set |= stepped(lo, hi, step.unwrap_or(1)),
        }
    }
    Ok(set)
}

fn stepped(lo: u32, hi: u32, step: u32) -> u64 {
    (lo..=hi)
        .step_by(step as usize)
        .fold(0, |set, v| set | 1 << v)
}

fn parse_range(text: &str, field: &Field) -> Result<(u32, u32), String> {
    let value = |s: &str| -> Result<u32, String> {
        let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
        if v < field.min || v > field.max {
            return Err(format!("{v} is outside {}-{}", field.min, field.max));
        }
        Ok(v)
    };
    match text.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (value(lo)?, value(hi)?);
            if lo > hi {
                return Err(format!("the range {lo}-{hi} runs backwards"));
            }
            Ok((lo, hi))
        }
        None => {
            let v = value(text)?;
            Ok((v, v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> CronLine {
        CronSchedule::parse(text, "my-job").unwrap().lines.remove(0)
    }

    #[test]
    fn plain_fields() {
        let line = one("*/15 2-4 1,15 * 1-5");
        assert_eq!(line.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(line.hours, 0b11100);
        assert_eq!(line.days_of_month, 1 << 1 | 1 << 15);
        assert_eq!(line.days_of_week, 0b111110);
        assert!(!line.every_minute);
        assert!(one("* * * * *").every_minute);
        assert_eq!(one("0 0 * * 7").days_of_week, 1);
    }

    #[test]
    fn h_is_stable_per_job_and_spreads_jobs() {
        let a = CronSchedule::parse("H H * * *", "job-a").unwrap();
        assert_eq!(a, CronSchedule::parse("H H * * *", "job-a").unwrap());
        let minutes: std::collections::HashSet<u64> = (0..20)
            .map(|i| {
                CronSchedule::parse("H * * * *", &format!("job-{i}"))
                    .unwrap()
                    .lines[0]
                    .minutes
            })
            .collect();
        assert!(minutes.len() > 10, "H spreads jobs over the hour");
        let ranged = one("H(0-29)/10 H(2-4) H * *");
        assert_eq!(ranged.minutes.count_ones(), 3);
        assert!(ranged.minutes.trailing_zeros() < 10);
        assert_eq!(ranged.hours.count_ones(), 1);
        assert!((2..=4).contains(&ranged.hours.trailing_zeros()));
        assert!(ranged.days_of_month.trailing_zeros() <= 28);
    }

    #[test]
    fn shorthands_comments_and_lines() {
        let schedule =
            CronSchedule::parse("# nightly\n@daily\n\nTZ=UTC\nH/30 * * * 1 # mondays\n", "j")
                .unwrap();
        assert_eq!(schedule.lines.len(), 2);
        assert_eq!(schedule.lines[0].hours.count_ones(), 1);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let err = CronSchedule::parse("H * * * *\n61 * * * *", "j").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message
                .contains("minute field `61`: 61 is outside 0-59"),
            "{}",
            err.message
        );
        for bad in [
            "* * * *",
            "@sometimes",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
            "",
            "TZ=Europe/Paris\n* * * * *",
        ] {
            assert!(CronSchedule::parse(bad, "j").is_err(), "{bad}");
        }
    }

    #[test]
    fn next_fire_times() {
        // 2026-11-23 (a Monday) 10:07:30 UTC
        let now = 1_795_428_450;
        let every_quarter = CronSchedule::parse("*/15 * * * *", "j").unwrap();
        assert_eq!(every_quarter.next_after(now), Some(1_795_428_900)); // 10:15
        let sunday_noon = CronSchedule::parse("0 12 * * 0", "j").unwrap();
        // 2026-11-29 12:00 UTC
        assert_eq!(
            sunday_noon.next_after(now),
            Some(1_795_428_450 - 36_450 + 6 * 86_400 + 43_200)
        );
        let leap_day = CronSchedule::parse("0 0 29 2 *", "j").unwrap();
        let next = leap_day.next_after(now).unwrap();
        assert_eq!(civil_from_days(next / 86_400), (2028, 2, 29));
    }
}
