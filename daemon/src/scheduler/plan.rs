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

/// What a due (job, instant) does under the job's overlap policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Queue a new run.
    Start,
    /// Record it as skipped: a run of the job is in progress or waiting (`skip`).
    Skip,
    /// Stop the runs in progress, then queue a new one (`replace`).
    Replace,
}

/// The overlap decisions for a batch of due (job id, overlap policy) pairs, in order. `busy`
/// tells whether a run of the job is in progress or waiting in the queue; a run decided earlier
/// in the same batch counts as waiting (a fixed-time job catching up several instants).
/// `allow` (or any other value) always starts.
pub fn overlap_decisions(due: &[(i64, &str)], busy: impl Fn(i64) -> bool) -> Vec<Overlap> {
    let mut starting = std::collections::HashSet::new();
    due.iter()
        .map(|&(job, policy)| {
            let is_busy = busy(job) || starting.contains(&job);
            let decision = match (is_busy, policy) {
                (true, "skip") => Overlap::Skip,
                (true, "replace") => Overlap::Replace,
                _ => Overlap::Start,
            };
            if decision != Overlap::Skip {
                starting.insert(job);
            }
            decision
        })
        .collect()
}

/// The run a job gets for the time the daemon was down, under its missed-run policy: with
/// `catch-up`, the latest instant in (last, now] (once, however many were missed); with `skip`,
/// none.
pub fn missed_run(
    job: &Plannable<'_>,
    policy: &str,
    last: Timestamp,
    now: Timestamp,
) -> Option<Timestamp> {
    (policy == "catch-up")
        .then(|| latest_missed(job, last, now))
        .flatten()
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

    #[test]
    fn overlap_skip_allow_replace() {
        let free = |_: i64| false;
        let busy = |_: i64| true;
        assert_eq!(
            overlap_decisions(&[(1, "skip")], free),
            vec![Overlap::Start]
        );
        assert_eq!(overlap_decisions(&[(1, "skip")], busy), vec![Overlap::Skip]);
        assert_eq!(
            overlap_decisions(&[(1, "allow")], busy),
            vec![Overlap::Start]
        );
        assert_eq!(
            overlap_decisions(&[(1, "replace")], busy),
            vec![Overlap::Replace]
        );
        assert_eq!(
            overlap_decisions(&[(1, "replace")], free),
            vec![Overlap::Start]
        );
    }

    #[test]
    fn overlap_within_one_batch_counts_earlier_decisions() {
        // A fixed-time job catching up three instants after a jump, with nothing running.
        let free = |_: i64| false;
        assert_eq!(
            overlap_decisions(&[(7, "skip"), (7, "skip"), (7, "skip")], free),
            vec![Overlap::Start, Overlap::Skip, Overlap::Skip]
        );
        assert_eq!(
            overlap_decisions(&[(7, "allow"), (7, "allow")], free),
            vec![Overlap::Start, Overlap::Start]
        );
        assert_eq!(
            overlap_decisions(&[(7, "replace"), (7, "replace")], free),
            vec![Overlap::Start, Overlap::Replace]
        );
        // Other jobs are not affected, and only job 2 is busy.
        assert_eq!(
            overlap_decisions(&[(1, "skip"), (2, "skip"), (1, "skip")], |j| j == 2),
            vec![Overlap::Start, Overlap::Skip, Overlap::Skip]
        );
    }

    #[test]
    fn missed_runs_follow_the_policy() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let tz = TimeZone::UTC;
        let job = Plannable {
            schedule: &s,
            tz: &tz,
        };
        // Down from 09:30 to 13:10: 10:00 .. 13:00 were missed; catch-up runs 13:00 once.
        let (last, now) = (ts("2026-03-02T09:30:00Z"), ts("2026-03-02T13:10:00Z"));
        assert_eq!(
            missed_run(&job, "catch-up", last, now),
            Some(ts("2026-03-02T13:00:00Z"))
        );
        assert_eq!(missed_run(&job, "skip", last, now), None);
        // Nothing missed: down 09:30 to 09:59.
        assert_eq!(
            missed_run(&job, "catch-up", last, ts("2026-03-02T09:59:00Z")),
            None
        );
    }

    #[test]
    fn suspend_over_a_dst_change_catches_up_in_local_time() {
        // Europe/Berlin springs forward at 02:00 -> 03:00 on 2026-03-29. A machine suspended
        // from 01:50 CET (00:50Z) to 04:10 CEST (02:10Z), 80 min of real time and under the
        // catch-up limit, wakes to a fixed-time job's missed 03:00 and 04:00 CEST instants and
        // fires each once; the 02:00 of that day does not exist.
        let fixed = plan(
            "0 2,3,4 * * *",
            "Europe/Berlin",
            "2026-03-29T00:50:00Z",
            "2026-03-29T02:10:00Z",
        );
        assert_eq!(fixed, vec!["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]);
        // An hourly (wildcard-hour) job only fires its current minute, as in cronie: 04:00 CEST
        // is ten minutes old at the wake, so nothing.
        let hourly = plan(
            "0 * * * *",
            "Europe/Berlin",
            "2026-03-29T00:50:00Z",
            "2026-03-29T02:10:00Z",
        );
        assert_eq!(hourly, Vec::<String>::new());
    }
}
