//! Scenario 8: the wall clock jumps and DST days, on the real daemon under libfaketime.
//!
//! The daemon runs with `LD_PRELOAD=libfaketime`, its wall clock read from a file the test
//! rewrites (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`) and its monotonic clock left
//! alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`), so tokio's timers keep real time. libfaketime also
//! wraps `timerfd_settime`: the daemon's absolute `CLOCK_REALTIME` deadline is converted to the
//! real clock, speed-up included (measured: a deadline 120 fake seconds ahead at x60 fires after
//! 2.00 real seconds). A jump in the file is not a clock *set*, so the kernel does not cancel the
//! timer (`TFD_TIMER_CANCEL_ON_SET`): the daemon learns of the jump at its next wake, which is
//! armed for the next minute at most. That is the path of a wake after a suspend, and of a clock
//! set between the timer's expiry and the daemon's reading; the cancel path itself needs the
//! real clock set, which a test must not do.
//!
//! Jumps (UTC, x60: a fake minute is a real second): a minutely job, an hourly wildcard job
//! (`0 * * * *`) and an hourly fixed-time job (`0 0-23 * * *`); 2 h forward, then 1 h back.
//! DST (America/New_York, x240): the spring gap and the autumn repeat, one daemon each, started
//! just before the transition. Every (job, instant) row is checked against the README's rules.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schedule::jiff::{tz::TimeZone, Timestamp};
use silica_cron_tests::jobs::{config, rows, script};
use silica_cron_tests::report::Scenario;
use silica_cron_tests::{Daemon, Env};

use crate::common::{cli, iterations};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn real_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn at(utc: &str) -> i64 {
    utc.parse::<Timestamp>().unwrap().as_second()
}

/// A UTC instant as the rows store it.
fn sql(secs: i64) -> String {
    Timestamp::from_second(secs)
        .unwrap()
        .to_zoned_datetime(TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The daemon's wall clock: fake = origin + offset + (real − origin) × rate, where origin is
/// (about) the daemon's start; a jump changes the offset in the file libfaketime reads.
struct FakeClock {
    file: PathBuf,
    origin: f64,
    offset: i64,
    rate: u32,
}

impl FakeClock {
    /// A clock that reads `start` (UTC) now and runs `rate` times faster than the real one.
    fn new(env: &Env, start: &str, rate: u32) -> FakeClock {
        let origin = real_now();
        let clock = FakeClock {
            file: env.path().join("faketime"),
            origin,
            offset: (at(start) as f64 - origin).round() as i64,
            rate,
        };
        clock.write();
        clock
    }

    fn write(&self) {
        // Renamed into place: libfaketime re-reads the file on every clock read.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{:+} x{}\n", self.offset, self.rate)).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", LIBFAKETIME.into()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            ("NO_FAKE_STAT", "1".into()),
            ("TZ", "UTC".into()),
        ]
    }

    fn now(&self) -> f64 {
        self.origin + self.offset as f64 + (real_now() - self.origin) * f64::from(self.rate)
    }

    /// Sleeps (really) until the fake clock reads `utc`.
    fn sleep_until(&self, utc: &str) {
        let ahead = at(utc) as f64 - self.now();
        assert!(ahead > 0.0, "the fake clock is already past {utc}");
        std::thread::sleep(Duration::from_secs_f64(ahead / f64::from(self.rate)));
    }

    fn jump(&mut self, secs: i64) {
        self.offset += secs;
        self.write();
    }
}

/// A daemon under `clock`, with prompt `p` and `jobs` as (name, cron, zone).
fn start(env: &Env, clock: &FakeClock, jobs: &[(&str, &str, &str)]) -> (Daemon, String) {
    let agent = script(env, "agent.sh", "exit 0");
    let cfg = config(env, &agent, "");
    let vars = clock.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = env.start_daemon_with(&["--config", &cfg], &vars);
    cli(env, &cfg, &["prompts", "add", "p", "p"]).ok();
    for (name, cron, tz) in jobs {
        cli(
            env,
            &cfg,
            &[
                "jobs",
                "add",
                name,
                "--prompt",
                "p",
                "--cron",
                cron,
                "--tz",
                tz,
                "--overlap",
                "allow",
            ],
        )
        .ok();
    }
    (daemon, cfg)
}

/// The instants `job` fired for, in order; panics on a (job, instant) with two rows.
fn fired(env: &Env, job: &str) -> Vec<String> {
    let all = rows(
        env,
        &format!(
            "SELECT e.scheduled_for FROM job_executions e JOIN scheduled_jobs j ON j.id = e.scheduled_job_id
             WHERE j.name = '{job}' AND e.scheduled_for IS NOT NULL ORDER BY 1;"
        ),
    );
    let list: Vec<String> = all.lines().map(str::to_string).collect();
    let mut unique = list.clone();
    unique.dedup();
    assert_eq!(unique, list, "{job} fired an instant twice");
    list
}

/// Every minute from `from` to `to` (UTC, inclusive) as the rows store them.
fn minutes(from: &str, to: &str) -> Vec<String> {
    (at(from)..=at(to)).step_by(60).map(sql).collect()
}

fn jumps(sc: &mut Scenario) {
    let env = Env::built_in();
    let mut clock = FakeClock::new(&env, "2026-06-10T09:57:00Z", 60);
    let jobs = [
        ("minutely", "* * * * *", "UTC"),
        ("hourly", "0 * * * *", "UTC"),
        ("hourly-fixed", "0 0-23 * * *", "UTC"),
    ];
    let (daemon, _) = start(&env, &clock, &jobs);

    // Before the jump: 10:00 fires for all three.
    clock.sleep_until("2026-06-10T10:00:20Z");
    let first = fired(&env, "minutely");
    assert_eq!(
        first.last().map(String::as_str),
        Some("2026-06-10 10:00:00")
    );
    sc.tried("the wall clock 2 h forward at 10:00:20 (UTC, the daemon's clock only, x60)");
    clock.jump(2 * 3600);
    // The daemon's wake armed for 10:01 comes at 12:01: a wake 2 h late.
    clock.sleep_until("2026-06-10T12:01:40Z");
    // Usually the daemon learns of the jump at that 12:01 wake. When something else wakes it
    // first (the 10:00 runs' ends recorded late on a loaded machine: at x60 a third of a real
    // second is 20 fake seconds), the current minute is 12:00 and the wildcard jobs fire it
    // once: the same rule, seen a minute earlier.
    let mut want_minutely = first.clone();
    want_minutely.push(sql(at("2026-06-10T12:01:00Z")));
    let mut early_minutely = first.clone();
    early_minutely.push(sql(at("2026-06-10T12:00:00Z")));
    early_minutely.push(sql(at("2026-06-10T12:01:00Z")));
    let got = fired(&env, "minutely");
    let early = got == early_minutely;
    assert!(
        got == want_minutely || early,
        "minutely after the jump: {got:?}\n{}",
        daemon.log()
    );
    let hourly = fired(&env, "hourly");
    if early {
        assert!(
            hourly == ["2026-06-10 10:00:00"]
                || hourly == ["2026-06-10 10:00:00", "2026-06-10 12:00:00"],
            "{hourly:?}"
        );
    } else {
        assert_eq!(hourly, ["2026-06-10 10:00:00"]);
    }
    assert_eq!(
        fired(&env, "hourly-fixed"),
        [
            "2026-06-10 10:00:00",
            "2026-06-10 11:00:00",
            "2026-06-10 12:00:00"
        ]
    );
    sc.held(format!(
        "2 h forward: the fixed-time hourly job caught up 11:00 and 12:00 once each; the wildcard jobs fired only the current minute ({}); nothing ran twice",
        if early { "12:00, the daemon woke within it, then 12:01" } else { "12:01" }
    ));

    sc.tried("the wall clock 1 h back at 12:01:40, then on past 12:03");
    clock.jump(-3600);
    clock.sleep_until("2026-06-10T12:03:40Z");
    let got = fired(&env, "minutely");
    // The wake that sees the clock back (armed for 12:02, now 11:02:00) plans from that
    // instant: 11:02 itself may be lost (the kernel would have woken the daemon at the set).
    let mut want = first.clone();
    want.extend(minutes("2026-06-10T11:03:00Z", "2026-06-10T12:03:00Z"));
    let without_1102: Vec<String> = got
        .iter()
        .filter(|t| *t != "2026-06-10 11:02:00")
        .cloned()
        .collect();
    assert_eq!(without_1102, want, "{}", daemon.log());
    assert_eq!(
        fired(&env, "hourly"),
        ["2026-06-10 10:00:00", "2026-06-10 12:00:00"]
    );
    assert_eq!(
        fired(&env, "hourly-fixed"),
        [
            "2026-06-10 10:00:00",
            "2026-06-10 11:00:00",
            "2026-06-10 12:00:00"
        ]
    );
    sc.held("1 h back: firing went on from 11:03 (not an hour later); 12:00 (fixed-time) and 12:01 (minutely) did not run a second time; the wildcard hourly job ran 12:00, which the forward jump had skipped");
    sc.iterations(2);
    drop(daemon);
}

/// A zone's DST days in 2026: the spring transition (UTC) and the autumn one, with the local
/// hour that repeats.
struct DstZone {
    name: &'static str,
    spring: &'static str,
    autumn: &'static str,
    repeated_hour: u32,
}

const ZONES: [DstZone; 2] = [
    DstZone {
        name: "America/New_York",
        spring: "2026-03-08T07:00:00Z",
        autumn: "2026-11-01T06:00:00Z",
        repeated_hour: 1,
    },
    DstZone {
        name: "Europe/Berlin",
        spring: "2026-03-29T01:00:00Z",
        autumn: "2026-10-25T01:00:00Z",
        repeated_hour: 2,
    },
];

fn utc(secs: i64) -> String {
    Timestamp::from_second(secs).unwrap().to_string()
}

/// Spring: 02:00 local does not exist. `0 2` and `30 2` fire once, at the first minute after
/// the gap; a wildcard `30 * * * *` does not catch up 02:30.
fn spring(sc: &mut Scenario, z: &DstZone) {
    let env = Env::built_in();
    let t = at(z.spring);
    let clock = FakeClock::new(&env, &utc(t - 10 * 60), 360);
    let jobs = [
        ("two", "0 2 * * *", z.name),
        ("two-thirty", "30 2 * * *", z.name),
        ("half-past", "30 * * * *", z.name),
    ];
    let (daemon, _) = start(&env, &clock, &jobs);
    clock.sleep_until(&utc(t + 40 * 60));
    let log = daemon.log();
    assert_eq!(fired(&env, "two"), [sql(t)], "{log}");
    assert_eq!(fired(&env, "two-thirty"), [sql(t)], "{log}");
    assert_eq!(fired(&env, "half-past"), [sql(t + 30 * 60)], "{log}");
    sc.held(format!(
        "{} spring gap: 0 2 and 30 2 ran once each at 03:00 local; 30 * * * * ran 03:30 only",
        z.name
    ));
}

/// Autumn: the hour `repeated_hour` comes twice. Fixed-time jobs in it fire in the first pass
/// only; a wildcard job fires in both.
fn autumn(sc: &mut Scenario, z: &DstZone) {
    let env = Env::built_in();
    let t = at(z.autumn);
    let h = z.repeated_hour;
    let clock = FakeClock::new(&env, &utc(t - 70 * 60), 360);
    let (on_the_hour, half_past) = (format!("0 {h} * * *"), format!("30 {h} * * *"));
    let jobs = [
        ("fixed", on_the_hour.as_str(), z.name),
        ("fixed-30", half_past.as_str(), z.name),
        ("hourly", "0 * * * *", z.name),
    ];
    let (daemon, _) = start(&env, &clock, &jobs);
    clock.sleep_until(&utc(t + 70 * 60));
    let log = daemon.log();
    assert_eq!(fired(&env, "fixed"), [sql(t - 3600)], "{log}");
    assert_eq!(fired(&env, "fixed-30"), [sql(t - 1800)], "{log}");
    assert_eq!(
        fired(&env, "hourly"),
        [sql(t - 3600), sql(t), sql(t + 3600)],
        "{log}"
    );
    sc.held(format!(
        "{} autumn repeat: 0 {h} and 30 {h} ran in the first pass only; 0 * * * * ran in both",
        z.name
    ));
}

#[test]
fn clock_jumps_and_dst() {
    let mut sc = Scenario::start("8", "clock jumps and DST (libfaketime on the daemon)");
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install libfaketime"
    );
    jumps(&mut sc);
    // Europe/Berlin too with SILICA_CRON_FAULTS_LONG=1.
    for z in &ZONES[..iterations(1, 2) as usize] {
        sc.tried(format!(
            "{}: the daemon started 10 min before the spring gap and 70 min before the autumn repeat (x360)",
            z.name
        ));
        spring(&mut sc, z);
        autumn(&mut sc, z);
        sc.iterations(2);
    }
    sc.pass();
}
