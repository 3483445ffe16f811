//! Which fire instants are due: pure functions of the schedule and two wall-clock readings, so
//! DST days, clock jumps and suspends are unit-tested without waiting.
//!
//! Rules (DESIGN §7, as cronie): the scheduler wakes at the next due instant. Waking up to a
//! minute late is normal and everything due meanwhile fires. Waking later means the clock jumped
//! forward or the machine slept: below 3 h, fixed-time jobs catch up their missed instants, once
//! each, and wildcard jobs fire only for the current minute; from 3 h on, only the current minute
//! fires. A clock that went back fires nothing twice: the unique key on (job, instant) sees to it.

use schedule::jiff::{tz::TimeZone, SignedDuration, Timestamp};
use schedule::Schedule;

/// Later than this after its instant, a wake is a jump or a resume, not a late timer.
pub const LATE: SignedDuration = SignedDuration::from_secs(60);
/// Jumps at least this long catch nothing up.
pub const MAX_CATCH_UP: SignedDuration = SignedDuration::from_secs(3 * 3600);

pub struct Plannable<'a> {
    pub schedule: &'a Schedule,
    pub tz: &'a TimeZone,
}

/// Instants in (since, now] that fire now.
pub fn due(job: &Plannable<'_>, since: Timestamp, now: Timestamp) -> Vec<Timestamp> {
    if now <= since {
        return vec![];
    }
    let mut all = Vec::new();
    let mut t = since;
    while let Some(next) = job.schedule.next_timestamp_after(t, job.tz) {
        if next > now {
            break;
        }
        all.push(next);
        t = next;
        // A window is at most hours long; a minutely job gives a few hundred instants at most.
        if all.len() > 10_000 {
            break;
        }
    }
    let Some(&first) = all.first() else {
        return all;
    };
    let lateness = now.duration_since(first);
    if lateness <= LATE {
        return all;
    }
    let current_minute = |i: &Timestamp| now.duration_since(*i) < LATE;
    if lateness < MAX_CATCH_UP && job.schedule.is_fixed_time() {
        all
    } else {
        all.into_iter().filter(current_minute).collect()
    }
}

/// The next instant after `now` for any of the jobs.
pub fn next_deadline<'a>(
    jobs: impl Iterator<Item = Plannable<'a>>,
    now: Timestamp,
) -> Option<Timestamp> {
    jobs.filter_map(|j| j.schedule.next_timestamp_after(now, j.tz))
        .min()
}

/// For the missed-run policy `catch-up`: the latest instant in (last, now], if any.
pub fn latest_missed(job: &Plannable<'_>, last: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let mut t = last;
    let mut latest = None;
    // Walk forward; a job missed for years is walked at most a bounded number of steps by
    // starting close to now when the gap is long.
    let floor = now
        .checked_sub(SignedDuration::from_hours(24 * 400))
        .unwrap_or(last);
    if t < floor {
        t = floor;
    }
    while let Some(next) = job.schedule.next_timestamp_after(t, job.tz) {
        if next > now {
            break;
        }
        latest = Some(next);
        t = next;
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan(expr: &str, tz: &str, since: &str, now: &str) -> Vec<String> {
        let s = Schedule::parse(expr).unwrap();
        let tz = schedule::time_zone(tz).unwrap();
        due(
            &Plannable {
                schedule: &s,
                tz: &tz,
            },
            ts(since),
            ts(now),
        )
        .iter()
        .map(|t| t.to_string())
        .collect()
    }

    #[test]
    fn on_time_and_slightly_late_wakes_fire_the_instant() {
        assert_eq!(
            plan(
                "30 9 * * *",
                "UTC",
                "2026-01-01T09:29:00Z",
                "2026-01-01T09:30:00Z"
            ),
            ["2026-01-01T09:30:00Z"]
        );
        assert_eq!(
            plan(
                "30 9 * * *",
                "UTC",
                "2026-01-01T09:29:00Z",
                "2026-01-01T09:30:45Z"
            ),
            ["2026-01-01T09:30:00Z"]
        );
        assert!(
            plan(
                "30 9 * * *",
                "UTC",
                "2026-01-01T09:30:00Z",
                "2026-01-01T09:31:00Z"
            )
            .is_empty(),
            "never twice"
        );
    }

    #[test]
    fn jump_under_three_hours_catches_up_fixed_time_once_each() {
        let got = plan(
            "0 * * * *",
            "UTC",
            "2026-01-01T08:59:00Z",
            "2026-01-01T11:30:00Z",
        );
        assert!(
            got.is_empty(),
            "hourly is a wildcard job (hour field *): no catch-up, got {got:?}"
        );
        let got = plan(
            "0 9,10,11 * * *",
            "UTC",
            "2026-01-01T08:59:00Z",
            "2026-01-01T11:30:00Z",
        );
        assert_eq!(
            got,
            [
                "2026-01-01T09:00:00Z",
                "2026-01-01T10:00:00Z",
                "2026-01-01T11:00:00Z"
            ]
        );
        let got = plan(
            "* * * * *",
            "UTC",
            "2026-01-01T08:59:00Z",
            "2026-01-01T10:00:30Z",
        );
        assert_eq!(
            got,
            ["2026-01-01T10:00:00Z"],
            "wildcard: only the current minute"
        );
    }

    #[test]
    fn jump_of_three_hours_or_more_catches_nothing_up() {
        let got = plan(
            "0 9,10,11,12 * * *",
            "UTC",
            "2026-01-01T08:59:00Z",
            "2026-01-01T12:00:20Z",
        );
        assert_eq!(got, ["2026-01-01T12:00:00Z"]);
        assert!(plan(
            "0 9 * * *",
            "UTC",
            "2026-01-01T08:59:00Z",
            "2026-01-01T13:00:00Z"
        )
        .is_empty());
    }

    #[test]
    fn clock_going_back_fires_nothing() {
        assert!(plan(
            "* * * * *",
            "UTC",
            "2026-01-01T10:00:00Z",
            "2026-01-01T09:00:00Z"
        )
        .is_empty());
    }

    #[test]
    fn dst_days_follow_the_schedule_rules() {
        // Berlin, 2024-03-31: 02:30 does not exist; a fixed-time job fires at 03:00 CEST once.
        let got = plan(
            "30 2 * * *",
            "Europe/Berlin",
            "2024-03-31T00:59:00Z",
            "2024-03-31T01:00:10Z",
        );
        assert_eq!(got, ["2024-03-31T01:00:00Z"]);
        // Autumn: 02:30 happens twice; fixed-time fires in the first pass only.
        let first = plan(
            "30 2 * * *",
            "Europe/Berlin",
            "2024-10-27T00:29:00Z",
            "2024-10-27T00:30:10Z",
        );
        assert_eq!(first, ["2024-10-27T00:30:00Z"]);
        assert!(plan(
            "30 2 * * *",
            "Europe/Berlin",
            "2024-10-27T01:29:00Z",
            "2024-10-27T01:30:10Z"
        )
        .is_empty());
    }

    #[test]
    fn latest_missed_is_the_last_instant_before_now() {
        let s = Schedule::parse("0 */6 * * *").unwrap();
        let tz = schedule::time_zone("UTC").unwrap();
        let job = Plannable {
            schedule: &s,
            tz: &tz,
        };
        assert_eq!(
            latest_missed(&job, ts("2026-01-01T00:00:00Z"), ts("2026-01-02T13:00:00Z")),
            Some(ts("2026-01-02T12:00:00Z"))
        );
        assert_eq!(
            latest_missed(&job, ts("2026-01-02T12:00:00Z"), ts("2026-01-02T13:00:00Z")),
            None
        );
        // Years away is bounded and still right.
        assert_eq!(
            latest_missed(&job, ts("2000-01-01T00:00:00Z"), ts("2026-01-02T13:00:00Z")),
            Some(ts("2026-01-02T12:00:00Z"))
        );
    }
}
