//! Five-field cron expressions (`minute hour day-of-month month day-of-week`)
//! for scheduled pre-scaling.

use std::collections::BTreeSet;

use jiff::civil::DateTime;

/// A parsed cron schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: BTreeSet<u8>,
    hours: BTreeSet<u8>,
    days: BTreeSet<u8>,
    months: BTreeSet<u8>,
    weekdays: BTreeSet<u8>,
    days_restricted: bool,
    weekdays_restricted: bool,
    text: String,
}

/// Why a cron expression was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{expr}` is not a valid cron expression: {reason}")]
pub struct CronError {
    /// The expression.
    pub expr: String,
    /// What is wrong.
    pub reason: String,
}

const FIELDS: [(&str, u8, u8); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

fn parse_field(text: &str, name: &str, lo: u8, hi: u8) -> Result<BTreeSet<u8>, String> {
    let mut out = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u8 = s.parse().map_err(|_| format!("{name}: bad step `{s}`"))?;
                if step == 0 {
                    return Err(format!("{name}: step must be at least 1"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (start, end) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let a: u8 = a.parse().map_err(|_| format!("{name}: bad value `{a}`"))?;
            let b: u8 = b.parse().map_err(|_| format!("{name}: bad value `{b}`"))?;
            (a, b)
        } else {
            let v: u8 = range
                .parse()
                .map_err(|_| format!("{name}: bad value `{range}`"))?;
            (v, if part.contains('/') { hi } else { v })
        };
        if start < lo || end > hi || start > end {
            return Err(format!("{name}: `{part}` is outside {lo}-{hi}"));
        }
        out.extend((start..=end).step_by(usize::from(step)));
    }
    Ok(out)
}

impl Cron {
    /// Parses a five-field expression. Fields accept `*`, numbers, ranges
    /// `a-b`, steps `*/n` and `a-b/n`, and comma lists; day of week 0 and 7
    /// are both Sunday. As in classic cron, when both day of month and day
    /// of week are restricted, a time matches if either does.
    ///
    /// # Errors
    /// A [`CronError`] naming the field and the bad part.
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let err = |reason: String| CronError {
            expr: expr.to_owned(),
            reason,
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!("expected 5 fields, found {}", fields.len())));
        }
        let mut sets = Vec::with_capacity(5);
        for (text, (name, lo, hi)) in fields.iter().zip(FIELDS) {
            sets.push(parse_field(text, name, lo, hi).map_err(err)?);
        }
        let mut weekdays = sets.pop().unwrap_or_default();
        if weekdays.remove(&7) {
            weekdays.insert(0);
        }
        let months = sets.pop().unwrap_or_default();
        let days = sets.pop().unwrap_or_default();
        let hours = sets.pop().unwrap_or_default();
        let minutes = sets.pop().unwrap_or_default();
        Ok(Self {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
            text: expr.to_owned(),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the schedule fires in the minute of `t` (a civil time in the
    /// schedule's time zone).
    pub fn matches(&self, t: DateTime) -> bool {
        let (Ok(minute), Ok(hour), Ok(day), Ok(month)) = (
            u8::try_from(t.minute()),
            u8::try_from(t.hour()),
            u8::try_from(t.day()),
            u8::try_from(t.month()),
        ) else {
            return false;
        };
        let weekday = u8::try_from(t.weekday().to_sunday_zero_offset()).unwrap_or(0);
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => self.days.contains(&day) || self.weekdays.contains(&weekday),
            _ => self.days.contains(&day) && self.weekdays.contains(&weekday),
        };
        self.minutes.contains(&minute)
            && self.hours.contains(&hour)
            && self.months.contains(&month)
            && day_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn weekday_mornings_match() {
        let cron = Cron::parse("30 7 * * 1-5").unwrap();
        // 2026-11-23 is a Monday.
        assert!(cron.matches(date(2026, 11, 23).at(7, 30, 0, 0)));
        assert!(!cron.matches(date(2026, 11, 22).at(7, 30, 0, 0)));
        assert!(!cron.matches(date(2026, 11, 23).at(7, 31, 0, 0)));
    }

    #[test]
    fn steps_lists_and_sunday_as_seven() {
        let cron = Cron::parse("*/15 0,12 * * 7").unwrap();
        assert!(cron.matches(date(2026, 11, 22).at(12, 45, 0, 0)));
        assert!(!cron.matches(date(2026, 11, 22).at(12, 50, 0, 0)));
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (expr, reason) in [
            ("* * * *", "expected 5 fields, found 4"),
            ("60 * * * *", "minute: `60` is outside 0-59"),
            ("* * * 13 *", "month: `13` is outside 1-12"),
            ("*/0 * * * *", "minute: step must be at least 1"),
            ("x * * * *", "minute: bad value `x`"),
        ] {
            assert_eq!(Cron::parse(expr).unwrap_err().reason, reason, "{expr}");
        }
    }
}
