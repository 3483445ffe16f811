//! Property-style tests with a deterministic PRNG: for random valid expressions, zones and
//! start instants (many near DST transitions), the produced instants are strictly increasing,
//! whole minutes, match the fields in local time (except gap-shifted fixed-time runs), and
//! agree exactly with an independent minute-by-minute reference of the README's rules.

use schedule::{
    jiff::{civil::DateTime, tz::TimeZone, Timestamp},
    time_zone, Schedule,
};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One list element of a field with values lo..=hi; `dense` biases towards `*`.
fn element(rng: &mut Rng, lo: u32, hi: u32, names: &[&str], base: u32) -> String {
    let value = |rng: &mut Rng, v: u32| {
        if !names.is_empty() && v >= base && ((v - base) as usize) < names.len() && rng.chance(30) {
            names[(v - base) as usize].to_string()
        } else {
            v.to_string()
        }
    };
    match rng.below(6) {
        0 => "*".into(),
        1 => format!("*/{}", rng.range(1, (hi - lo + 1).min(13))),
        2 => {
            let v = rng.range(lo, hi);
            value(rng, v)
        }
        3 | 4 => {
            let a = rng.range(lo, hi);
            let b = rng.range(a, hi);
            let (a, b) = (value(rng, a), value(rng, b));
            if rng.chance(40) {
                format!("{a}-{b}/{}", rng.range(1, 7))
            } else {
                format!("{a}-{b}")
            }
        }
        _ => {
            let n = rng.range(2, 4);
            (0..n)
                .map(|_| {
                    let v = rng.range(lo, hi);
                    value(rng, v)
                })
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

fn field(rng: &mut Rng, lo: u32, hi: u32, names: &[&str], base: u32, star: u32) -> String {
    if rng.chance(star) {
        return "*".into();
    }
    if rng.chance(25) {
        let a = element(rng, lo, hi, names, base);
        let b = element(rng, lo, hi, names, base);
        format!("{a},{b}")
    } else {
        element(rng, lo, hi, names, base)
    }
}

fn random_expr(rng: &mut Rng) -> String {
    if rng.chance(40) {
        // Around DST transitions (which happen between 22:00 and 04:00 locally).
        let minute = match rng.below(4) {
            0 => "*/15".to_string(),
            1 => rng.below(60).to_string(),
            2 => format!("{},{}", rng.below(30), rng.range(30, 59)),
            _ => format!("{}-59/{}", rng.below(40), rng.range(5, 20)),
        };
        let hour = match rng.below(5) {
            0 => "*".to_string(),
            1 => rng.below(4).to_string(),
            2 => format!("{}-{}", rng.below(3), rng.range(2, 4)),
            3 => format!("{},{}", rng.range(22, 23), rng.below(4)),
            _ => format!("0-23/{}", rng.range(1, 3)),
        };
        let dow = if rng.chance(20) { "0,6" } else { "*" };
        return format!("{minute} {hour} * * {dow}");
    }
    if rng.chance(3) {
        // A reversed range: never fires.
        return format!("0 {}-{} * * *", rng.range(12, 23), rng.range(0, 11));
    }
    let minute = field(rng, 0, 59, &[], 0, 25);
    let hour = field(rng, 0, 23, &[], 0, 30);
    let dom = field(rng, 1, 31, &[], 0, 60);
    let month = field(rng, 1, 12, &MONTHS, 1, 70);
    let dow = if rng.chance(5) {
        // Wrap through Sunday.
        format!(
            "{}-{}",
            DAYS[rng.range(1, 6) as usize],
            ["sun", "0", "7"][rng.below(3) as usize]
        )
    } else {
        field(rng, 0, 7, &DAYS, 0, 60)
    };
    format!("{minute} {hour} {dom} {month} {dow}")
}

fn wall_secs(dt: DateTime) -> i64 {
    dt.to_zoned_datetime(TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second()
}

fn civil(wall: i64) -> DateTime {
    TimeZone::UTC.to_datetime(Timestamp::from_second(wall).unwrap())
}

/// Independent reference: walk every UTC minute from well before `start` to `end`,
/// tracking the highest wall time seen (autumn repeat) and skipped wall minutes (spring gap).
fn reference(s: &Schedule, tz: &TimeZone, start: Timestamp, end: Timestamp) -> Vec<Timestamp> {
    let fixed = s.is_fixed_time();
    let mut t = start.as_second().div_euclid(60) * 60 - 2 * 86_400;
    let wall_at = |t: i64| wall_secs(tz.to_datetime(Timestamp::from_second(t).unwrap()));
    let mut prev_wall = wall_at(t - 60);
    let mut max_wall = prev_wall;
    let mut out = Vec::new();
    while t <= end.as_second() {
        let w = wall_at(t);
        let mut fire = s.matches(civil(w)) && (!fixed || w > max_wall);
        // Spring gap (under 3 hours; bigger jumps are not caught up, as in cronie).
        if fixed && w - prev_wall > 60 && w - prev_wall - 60 < 3 * 3600 {
            let mut skipped = prev_wall + 60;
            while skipped < w && !fire {
                fire = s.matches(civil(skipped));
                skipped += 60;
            }
        }
        let ts = Timestamp::from_second(t).unwrap();
        if fire && ts > start {
            out.push(ts);
        }
        max_wall = max_wall.max(w);
        prev_wall = w;
        t += 60;
    }
    out
}

/// A start instant: random in 2019-2027, or within two days of a transition of `tz`.
fn random_start(rng: &mut Rng, tz: &TimeZone) -> Timestamp {
    let base =
        Timestamp::from_second(1_546_300_800 + i64::from(rng.below(8 * 365)) * 86_400).unwrap();
    let anchor = if rng.chance(70) {
        tz.following(base)
            .next()
            .map(|t| t.timestamp())
            .unwrap_or(base)
    } else {
        base
    };
    let jitter = i64::from(rng.below(4 * 86_400)) - 2 * 86_400;
    let secs = if rng.chance(50) {
        jitter - jitter.rem_euclid(60)
    } else {
        jitter
    };
    Timestamp::from_second(anchor.as_second() + secs).unwrap()
}

#[test]
fn random_expressions_match_reference() {
    let zones = [
        "UTC",
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "America/Santiago",
        "America/Havana",
        "Asia/Kathmandu",
        "Pacific/Apia",
    ];
    let zones: Vec<TimeZone> = zones.iter().map(|z| time_zone(z).unwrap()).collect();
    let mut rng = Rng(0x5eed_c0ff_ee15_900d);
    let (mut checked, mut produced, mut gap_runs, mut never) = (0, 0, 0, 0);
    for case in 0..800 {
        let expr = random_expr(&mut rng);
        let s = Schedule::parse(&expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
        let tz = &zones[case % zones.len()];
        let start = random_start(&mut rng, tz);
        let got: Vec<Timestamp> = s
            .iter_after(start, tz)
            .take(40)
            .map(|z| z.timestamp())
            .collect();
        if s.never_reason().is_some() {
            never += 1;
            assert!(got.is_empty(), "{expr:?}: never but produced {got:?}");
            continue;
        }
        assert!(
            !got.is_empty(),
            "{expr:?}: no never_reason but nothing produced"
        );
        let mut prev = start;
        for &t in &got {
            assert!(t > prev, "{expr:?} in {tz:?}: {t} not after {prev}");
            assert_eq!(t.as_second() % 60, 0, "{expr:?}: {t} is not a whole minute");
            assert_eq!(t.subsec_nanosecond(), 0);
            let local = tz.to_datetime(t);
            if !s.matches(local) {
                // Only a fixed-time run moved out of a spring gap may not match.
                let before = tz.to_offset(Timestamp::from_second(t.as_second() - 1).unwrap());
                assert!(
                    s.is_fixed_time() && before.seconds() < tz.to_offset(t).seconds(),
                    "{expr:?} in {tz:?}: {t} ({local}) does not match and is not a gap run"
                );
                gap_runs += 1;
            }
            prev = t;
        }
        produced += got.len();
        // Exact agreement with the reference over a bounded window.
        let window_end = Timestamp::from_second(start.as_second() + 5 * 86_400).unwrap();
        let got_in: Vec<Timestamp> = got.iter().copied().filter(|t| *t <= window_end).collect();
        let end = if got_in.len() == got.len() {
            *got.last().unwrap()
        } else {
            window_end
        };
        let end = end.min(window_end);
        let want = reference(&s, tz, start, end);
        assert_eq!(
            got_in.iter().filter(|t| **t <= end).collect::<Vec<_>>(),
            want.iter().collect::<Vec<_>>(),
            "{expr:?} in {tz:?} from {start}"
        );
        checked += 1;
    }
    println!(
        "checked {checked} expressions against the reference ({produced} instants, \
         {gap_runs} gap runs, {never} never)"
    );
    assert!(checked > 400);
    assert!(gap_runs > 5, "too few gap runs exercised");
    assert!(never > 3, "too few never cases exercised");
}

#[test]
fn successive_calls_equal_iterator() {
    let mut rng = Rng(42);
    let tz = time_zone("Europe/Berlin").unwrap();
    for _ in 0..100 {
        let expr = random_expr(&mut rng);
        let s = Schedule::parse(&expr).unwrap();
        let start = random_start(&mut rng, &tz);
        let mut t = start;
        for z in s.iter_after(start, &tz).take(10) {
            let n = s.next_after(t, &tz).unwrap();
            assert_eq!(n, z);
            assert_eq!(s.next_timestamp_after(t, &tz), Some(z.timestamp()));
            t = z.timestamp();
        }
    }
}
