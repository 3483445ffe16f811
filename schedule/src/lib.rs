//! Cron expressions with Vixie cron (cronie) semantics, evaluated "correct to the second".
//!
//! * [`Schedule::parse`]: strict 5-field syntax (names, lists, ranges, `*/n`, `a-b/n`,
//!   weekday `5-0` wrap, the `@yearly`..`@hourly` macros; no seconds, years, `L W # ? H`).
//! * [`Schedule::never_reason`]: well-formed expressions that can never fire (`0 0 30 2 *`,
//!   a reversed range like `0 5-1 * * *`).
//! * [`Schedule::next_after`] / [`Schedule::iter_after`]: fire instants strictly after an
//!   instant, in a time zone, with the day-of-month/day-of-week OR rule and cronie's DST rules:
//!   in a spring gap fixed-time jobs (neither minute nor hour field starts with `*`) fire once
//!   at the first minute after the gap and wildcard jobs do not catch up; in an autumn repeat
//!   fixed-time jobs fire only in the first pass, wildcard jobs in both. Forward jumps of
//!   3 hours or more (date-line moves such as Pacific/Apia 2011) are not caught up, as cronie
//!   treats them as clock changes.
//!
//! Time types are [`jiff`]'s (re-exported). [`time_zone`] looks zones up in jiff's bundled
//! tzdb, so results do not depend on the machine's zoneinfo.

use std::{fmt, str::FromStr, sync::OnceLock};

pub use jiff;
use jiff::{
    civil,
    tz::{TimeZone, TimeZoneDatabase},
    Timestamp, ZonedDateTime,
};

mod eval;
mod parse;

/// A field of a cron expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    /// The field's name as used in messages: `minute`, `hour`, `day-of-month`, `month`,
    /// `day-of-week`.
    pub fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an expression was rejected. `Display` gives the full human reason, e.g.
/// `day-of-month: 32 is out of range 1-31`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    field: Option<Field>,
    token: String,
    message: String,
}

impl ParseError {
    /// The offending field, or `None` for whole-expression errors (field count, macros).
    pub fn field(&self) -> Option<Field> {
        self.field
    }
    /// The offending token (a value, list element, field or the whole expression).
    pub fn token(&self) -> &str {
        &self.token
    }
    /// The human reason (same as `Display`).
    pub fn reason(&self) -> &str {
        &self.message
    }
}

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Schedule {
    expr: String,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    dom: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    dow: u8,
    dom_star: bool,
    dow_star: bool,
    fixed: bool,
    /// For each weekday of the 1st of a month (0 = Sunday): day-of-month bits whose weekday is
    /// in `dow`.
    dow_masks: [u32; 7],
    never: Option<String>,
}

const MONTH_LONG: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl Schedule {
    /// Parses a 5-field expression or a macro, strictly (see the crate docs).
    pub fn parse(expr: &str) -> Result<Schedule, ParseError> {
        parse::parse(expr)
    }

    fn from_fields(expr: String, f: parse::Fields) -> Schedule {
        let mut dow_masks = [0u32; 7];
        for (w1, mask) in dow_masks.iter_mut().enumerate() {
            for day in 1..=31u32 {
                if f.dow & (1 << ((w1 as u32 + day - 1) % 7)) != 0 {
                    *mask |= 1 << day;
                }
            }
        }
        let mut s = Schedule {
            expr,
            minutes: f.minutes,
            hours: f.hours,
            dom: f.dom,
            months: f.months,
            dow: f.dow,
            dom_star: f.dom_star,
            dow_star: f.dow_star,
            fixed: !f.minute_star && !f.hour_star,
            dow_masks,
            never: None,
        };
        s.never = s.compute_never(&f);
        s
    }

    /// Static proof that the expression can never fire, with the reason.
    fn compute_never(&self, f: &parse::Fields) -> Option<String> {
        let empty = |i: usize, what: &str| {
            let field = [
                Field::Minute,
                Field::Hour,
                Field::DayOfMonth,
                Field::Month,
                Field::DayOfWeek,
            ][i];
            Some(match &f.reversed[i] {
                Some(r) => format!(
                    "{field}: range '{r}' is reversed, so '{}' matches no {what}",
                    f.texts[i]
                ),
                None => format!("{field}: '{}' matches no {what}", f.texts[i]),
            })
        };
        if self.minutes == 0 {
            return empty(0, "minute");
        }
        if self.hours == 0 {
            return empty(1, "hour");
        }
        if self.months == 0 {
            return empty(3, "month");
        }
        // Is some selected day-of-month possible in some selected month (February: 29)?
        let dom_possible = (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && self.dom & (((1u64 << (days_max(m) + 1)) - 2) as u32) != 0
        });
        let dom_reason = || {
            if self.dom == 0 {
                return empty(2, "day");
            }
            let months: Vec<&str> = (1..=12u32)
                .filter(|m| self.months & (1 << m) != 0)
                .map(|m| MONTH_LONG[m as usize - 1])
                .collect();
            let longest = (1..=12u32)
                .filter(|m| self.months & (1 << m) != 0)
                .map(days_max)
                .max()
                .unwrap_or(31);
            let months = match months.len() {
                1 => months[0].to_string(),
                12 => "any month".to_string(),
                _ => months.join(", "),
            };
            Some(format!(
                "day-of-month '{}' never occurs in {months} (at most {longest} days)",
                f.texts[2]
            ))
        };
        if self.dom_star || self.dow_star {
            if self.dow == 0 {
                return empty(4, "weekday");
            }
            if !dom_possible {
                return dom_reason();
            }
        } else if self.dow == 0 && !dom_possible {
            // OR rule: neither day field can ever match.
            return dom_reason().map(|r| match &f.reversed[4] {
                Some(rev) => format!("{r}, and day-of-week range '{rev}' is reversed"),
                None => format!("{r}, and day-of-week '{}' matches no weekday", f.texts[4]),
            });
        }
        None
    }

    /// Why this well-formed expression can never fire (`None` if it fires).
    pub fn never_reason(&self) -> Option<String> {
        self.never.clone()
    }

    /// `true` for fixed-time jobs: neither the minute nor the hour field starts with `*`
    /// (`@hourly` is a wildcard job, the other macros are fixed-time).
    pub fn is_fixed_time(&self) -> bool {
        self.fixed
    }

    /// The expression, normalised (fields separated by one space; macros as written).
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// Whether a local wall-clock time matches the fields (seconds ignored; no DST rules).
    pub fn matches(&self, dt: civil::DateTime) -> bool {
        let (y, m, d) = (i64::from(dt.year()), dt.month() as u32, dt.day() as u32);
        self.minutes & (1 << dt.minute()) != 0
            && self.hours & (1 << dt.hour()) != 0
            && self.months & (1 << m) != 0
            && {
                let w1 = eval::weekday(eval::days_from_civil(y, m, 1)) as usize;
                let dom = self.dom & (1 << d) != 0;
                let dow = self.dow_masks[w1] & (1 << d) != 0;
                if self.dom_star || self.dow_star {
                    dom && dow
                } else {
                    dom || dow
                }
            }
    }

    /// The first fire instant strictly after `after`, as a timestamp (no time zone clone).
    pub fn next_timestamp_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        self.next_instant(after, tz)
    }

    /// The first fire instant strictly after `after`, in `tz`. `None` for a never-firing
    /// expression (or beyond year 9999).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<ZonedDateTime> {
        self.next_instant(after, tz)
            .map(|t| t.to_zoned_datetime(tz.clone()))
    }

    /// Successive fire instants strictly after `after`: strictly increasing, never repeated.
    pub fn iter_after(&self, after: Timestamp, tz: &TimeZone) -> Upcoming<'_> {
        Upcoming {
            schedule: self,
            tz: tz.clone(),
            cursor: Some(after),
        }
    }
}

fn days_max(m: u32) -> u32 {
    eval::days_in_month(2000, m)
}

impl FromStr for Schedule {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Schedule, ParseError> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// Iterator over fire instants; see [`Schedule::iter_after`].
#[derive(Clone, Debug)]
pub struct Upcoming<'a> {
    schedule: &'a Schedule,
    tz: TimeZone,
    cursor: Option<Timestamp>,
}

impl Iterator for Upcoming<'_> {
    type Item = ZonedDateTime;
    fn next(&mut self) -> Option<ZonedDateTime> {
        let next = self.schedule.next_instant(self.cursor?, &self.tz);
        self.cursor = next;
        next.map(|t| t.to_zoned_datetime(self.tz.clone()))
    }
}

/// Looks an IANA zone up in jiff's bundled tzdb (independent of the machine's zoneinfo).
pub fn time_zone(name: &str) -> Result<TimeZone, jiff::Error> {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled).get(name)
}
