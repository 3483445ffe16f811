//! Parser edge cases, never-reasons and DST behaviour.

use schedule::{
    jiff::{tz::TimeZone, Timestamp},
    time_zone, Field, Schedule,
};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn next_n(expr: &str, zone: &str, start: &str, n: usize) -> Vec<String> {
    let s = Schedule::parse(expr).unwrap();
    let tz = time_zone(zone).unwrap();
    s.iter_after(ts(start), &tz)
        .take(n)
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .collect()
}

fn err(expr: &str) -> String {
    match Schedule::parse(expr) {
        Ok(s) => panic!("{expr:?} accepted: {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn error_messages_name_field_and_token() {
    assert_eq!(err("* * 32 * *"), "day-of-month: 32 is out of range 1-31");
    assert_eq!(err("* 24 * * *"), "hour: 24 is out of range 0-23");
    assert_eq!(
        err("0-60 * * * *"),
        "minute: 60 is out of range 0-59 in '0-60'"
    );
    assert!(err("* * * * 0-8").starts_with("day-of-week: 8 is out of range 0-7"));
    assert!(err("* * 0-5 * *").starts_with("day-of-month: 0 is out of range 1-31"));
    assert!(err("99999999999999999999 * * * *").contains("out of range"));
    assert!(err("5/15 * * * *").contains("'5/15'"));
    assert!(err("0 0 * * mon/2").starts_with("day-of-week: step needs"));
    assert!(err("0 */0 * * *").starts_with("hour: step 0"));
    assert!(err("*/-1 * * * *").contains("bad step '-1'"));
    assert!(err("1- * * * *").contains("missing number"));
    assert!(err("1,,2 * * * *").contains("empty list element"));
    assert!(err("1, * * * *").contains("empty list element"));
    assert!(err("* * * foo *").starts_with("month: bad value 'foo'"));
    assert!(err("* * * * MONDAY").starts_with("day-of-week: bad value 'MONDAY'"));
    assert!(err("* * * * * *").starts_with("expected 5 fields, got 6"));
    assert!(err("").starts_with("expected 5 fields, got 0"));
    assert!(err("@reboot").contains("not supported"));
    assert!(err("@DAILY").contains("unknown macro"));
    assert!(err("@daily now").contains("unknown macro"));
    let e = Schedule::parse("* * * * 1-7-1").unwrap_err();
    assert_eq!(e.field(), Some(Field::DayOfWeek));
    assert_eq!(e.token(), "7-1");
    let e = Schedule::parse("* * * *").unwrap_err();
    assert_eq!(e.field(), None);
}

#[test]
fn rejects_non_vixie_syntax() {
    for expr in [
        "0 0 L * *",
        "0 0 LW * *",
        "0 0 15W * *",
        "0 0 * * 5#3",
        "0 0 * * 5L",
        "0 0 ? * *",
        "0 0 * * ?",
        "H * * * *",
        "H/5 * * * *",
        "**/5 * * * *",
        "*5 * * * *",
        "*-5 * * * *",
        "5-* * * * *",
        "1~5 * * * *",
        "+5 * * * *",
        "1.5 * * * *",
        "-5 * * * *",
        "5--6 * * * *",
        "*/2/3 * * * *",
        "*/ * * * *",
        "0 0 1 january *",
        "0 0 1 ja *",
        "0 0 * * tues",
        "jan * * * *",
        "0 mon * * *",
        "0 0 * 0 *",
        "0 0 0 * *",
        "@every 5m",
        "@ daily",
        "@Hourly",
        "0 0 1 1 * 2024",
        "0\n0 * * *",
    ] {
        assert!(
            Schedule::parse(expr).is_err(),
            "{expr:?} should be rejected"
        );
    }
}

#[test]
fn accepts_vixie_syntax() {
    for expr in [
        "* * * * *",
        "\t0\t0 * * *\t",
        "07 * * * *",
        "*/60 * * * *",
        "*/61 * * * *",
        "30 */24 * * *",
        "0 0 * * 7",
        "0 0 * * 5-0",
        "0 0 * * fri-sun",
        "0 0 * * 5-7/2",
        "0 0 * JAN-3 Sun-6",
        "0 0 * jun-aug/2 *",
        "0-30/7,45 1,2-3 1-31/7 * *",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "  @daily  ",
    ] {
        let s = Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
        assert_eq!(s.never_reason(), None, "{expr:?}");
    }
}

#[test]
fn fixed_time_classification() {
    let fixed = |e: &str| Schedule::parse(e).unwrap().is_fixed_time();
    assert!(fixed("0 2 * * *"));
    assert!(fixed("5 0-23/1 * * *"));
    assert!(fixed("0,30 2-3 * * *"));
    assert!(!fixed("*/15 2 * * *"));
    assert!(!fixed("0 * * * *"));
    assert!(!fixed("0 */2 * * *"));
    assert!(fixed("@daily"));
    assert!(fixed("@weekly"));
    assert!(!fixed("@hourly"));
}

#[test]
fn never_reasons() {
    let never = |e: &str| Schedule::parse(e).unwrap().never_reason();
    let r = never("0 0 30 2 *").unwrap();
    assert!(r.contains("day-of-month") && r.contains("February"), "{r}");
    let r = never("0 5-1 * * *").unwrap();
    assert!(r.starts_with("hour:") && r.contains("5-1"), "{r}");
    assert!(never("0 0 * 12-1 *").unwrap().starts_with("month:"));
    assert!(never("0 0 31 2,4,6,9,11 *").is_some());
    assert!(never("0 0 * * sat-mon")
        .unwrap()
        .starts_with("day-of-week:"));
    // OR rule: one satisfiable day field is enough.
    assert_eq!(never("0 0 31 4 mon"), None);
    assert_eq!(never("0 0 1 * 5-1"), None);
    assert_eq!(never("0 0 29 2 *"), None);
    assert_eq!(never("0 5-1,3 * * *"), None);
    let tz = time_zone("UTC").unwrap();
    let s = Schedule::parse("0 0 30 2 *").unwrap();
    assert_eq!(s.next_after(ts("2024-01-01T00:00:00Z"), &tz), None);
    assert_eq!(s.iter_after(ts("2024-01-01T00:00:00Z"), &tz).count(), 0);
}

#[test]
fn or_rule_and_star_prefix() {
    // Both restricted: 13th OR Friday.
    assert_eq!(
        next_n("0 0 13 * fri", "UTC", "2024-09-01T00:00:00Z", 4),
        [
            "2024-09-06T00:00:00+00:00",
            "2024-09-13T00:00:00+00:00",
            "2024-09-20T00:00:00+00:00",
            "2024-09-27T00:00:00+00:00"
        ]
    );
    // `*/2` starts with `*`: AND, odd days that are Mondays.
    assert_eq!(
        next_n("0 0 */2 * 1", "UTC", "2023-12-31T12:00:00Z", 3),
        [
            "2024-01-01T00:00:00+00:00",
            "2024-01-15T00:00:00+00:00",
            "2024-01-29T00:00:00+00:00"
        ]
    );
    // `1-31/2` does not: OR, odd days or Mondays.
    assert_eq!(
        next_n("0 0 1-31/2 * 1", "UTC", "2024-01-06T12:00:00Z", 3),
        [
            "2024-01-07T00:00:00+00:00",
            "2024-01-08T00:00:00+00:00",
            "2024-01-09T00:00:00+00:00"
        ]
    );
}

#[test]
fn leap_day_and_far_future() {
    assert_eq!(
        next_n("0 0 29 2 *", "UTC", "2097-01-01T00:00:00Z", 2),
        ["2104-02-29T00:00:00+00:00", "2108-02-29T00:00:00+00:00"]
    );
    let tz = TimeZone::UTC;
    let s = Schedule::parse("0 0 29 2 *").unwrap();
    assert_eq!(s.next_after(ts("9996-03-01T00:00:00Z"), &tz), None);
    let s = Schedule::parse("* * * * *").unwrap();
    assert_eq!(
        s.next_after(ts("2024-01-01T00:00:00.5Z"), &tz)
            .unwrap()
            .timestamp(),
        ts("2024-01-01T00:01:00Z")
    );
    assert_eq!(
        s.next_after(ts("1969-12-31T23:59:59.5Z"), &tz)
            .unwrap()
            .timestamp(),
        ts("1970-01-01T00:00:00Z")
    );
}

#[test]
fn spring_gap() {
    // New York 2024-03-10: 02:00 EST -> 03:00 EDT.
    assert_eq!(
        next_n(
            "30 2 * * *",
            "America/New_York",
            "2024-03-10T00:00:00-05:00",
            2
        ),
        ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"]
    );
    // Several gap times collapse into one run, merged with a regular 03:00 match.
    assert_eq!(
        next_n(
            "0,30 2-3 * * *",
            "America/New_York",
            "2024-03-10T00:00:00-05:00",
            3
        ),
        [
            "2024-03-10T03:00:00-04:00",
            "2024-03-10T03:30:00-04:00",
            "2024-03-11T02:00:00-04:00"
        ]
    );
    // Wildcard jobs do not catch up.
    assert_eq!(
        next_n(
            "* 2 * * *",
            "America/New_York",
            "2024-03-10T00:00:00-05:00",
            1
        ),
        ["2024-03-11T02:00:00-04:00"]
    );
    // Starting at the gap run itself: it is not produced again.
    assert_eq!(
        next_n(
            "30 2 * * *",
            "America/New_York",
            "2024-03-10T03:00:00-04:00",
            1
        ),
        ["2024-03-11T02:30:00-04:00"]
    );
    // Lord Howe: 30-minute DST, 02:00 -> 02:30.
    assert_eq!(
        next_n(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2024-10-05T12:00:00+10:30",
            2
        ),
        ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"]
    );
}

#[test]
fn date_line_jump_is_not_caught_up() {
    // Pacific/Apia skipped 2011-12-30 entirely (24 h forward): like cronie's clock-jump rule,
    // runs due in a jump of 3 hours or more are skipped, not caught up.
    assert_eq!(
        next_n("0 12 * * *", "Pacific/Apia", "2011-12-29T13:00:00-10:00", 2),
        ["2011-12-31T12:00:00+14:00", "2012-01-01T12:00:00+14:00"]
    );
}

#[test]
fn autumn_repeat() {
    // New York 2024-11-03: 02:00 EDT -> 01:00 EST.
    assert_eq!(
        next_n(
            "30 1 * * *",
            "America/New_York",
            "2024-11-03T00:00:00-04:00",
            2
        ),
        ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]
    );
    assert_eq!(
        next_n(
            "30 1 * * *",
            "America/New_York",
            "2024-11-03T01:45:00-04:00",
            1
        ),
        ["2024-11-04T01:30:00-05:00"]
    );
    assert_eq!(
        next_n(
            "*/30 1 * * *",
            "America/New_York",
            "2024-11-03T00:00:00-04:00",
            5
        ),
        [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:30:00-05:00",
            "2024-11-04T01:00:00-05:00"
        ]
    );
    assert_eq!(
        next_n("@hourly", "Europe/Berlin", "2024-10-27T01:30:00+02:00", 3),
        [
            "2024-10-27T02:00:00+02:00",
            "2024-10-27T02:00:00+01:00",
            "2024-10-27T03:00:00+01:00"
        ]
    );
    // Lord Howe: 02:00 (+11) -> 01:30 (+10:30); 01:45 happens twice.
    assert_eq!(
        next_n(
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2024-04-06T12:00:00+11:00",
            2
        ),
        ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"]
    );
    assert_eq!(
        next_n(
            "45 * * * *",
            "Australia/Lord_Howe",
            "2024-04-07T01:00:00+11:00",
            3
        ),
        [
            "2024-04-07T01:45:00+11:00",
            "2024-04-07T01:45:00+10:30",
            "2024-04-07T02:45:00+10:30"
        ]
    );
}

#[test]
fn never_and_sparse_are_fast() {
    let tz = time_zone("America/New_York").unwrap();
    let began = std::time::Instant::now();
    for expr in [
        "0 0 30 2 *",
        "0 0 31 4 *",
        "0 5-1 * * *",
        "0 0 29 2 1",
        "0 0 */28 2 1",
    ] {
        let s = Schedule::parse(expr).unwrap();
        for _ in 0..10 {
            let _ = s.next_after(ts("2024-01-01T00:00:00Z"), &tz);
        }
    }
    assert!(began.elapsed().as_secs_f64() < 2.0, "{:?}", began.elapsed());
}
