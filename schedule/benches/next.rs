//! `cron next` evaluations per second (issue #4). Plain `std::time` loop, no harness:
//! `cargo bench -p silica-cron-schedule --bench next`.

use std::{hint::black_box, time::Instant};

use schedule::{jiff::Timestamp, time_zone, Schedule};

fn bench(label: &str, expr: &str, zone: &str, start: &str) {
    let schedule = Schedule::parse(expr).expect("valid expression");
    let tz = time_zone(zone).expect("known zone");
    let start: Timestamp = start.parse().expect("valid timestamp");
    // Walk successive instants (each evaluation starts from the previous result, as the
    // daemon does), restarting from `start` every 1,000 so the dates stay realistic.
    let run = |n: u32| {
        let mut t = start;
        for i in 0..n {
            if i % 1000 == 0 {
                t = start;
            }
            t = schedule
                .next_timestamp_after(black_box(t), &tz)
                .expect("fires");
        }
        black_box(t);
    };
    run(10_000); // warm-up
    let mut n = 10_000u32;
    loop {
        let began = Instant::now();
        run(n);
        let secs = began.elapsed().as_secs_f64();
        if secs >= 0.5 || n >= 1 << 26 {
            println!(
                "{label:<34} {expr:<22} {zone:<17} {:>12.0} evaluations/s  ({:.3} us each)",
                f64::from(n) / secs,
                secs * 1e6 / f64::from(n),
            );
            return;
        }
        n *= 4;
    }
}

fn main() {
    let start = "2024-01-15T10:17:30Z";
    bench("every minute", "* * * * *", "UTC", start);
    bench("every 15 minutes", "*/15 * * * *", "UTC", start);
    bench("daily 09:30", "30 9 * * *", "UTC", start);
    bench(
        "weekdays 09:30 (New York)",
        "30 9 * * 1-5",
        "America/New_York",
        start,
    );
    bench("hourly (New York)", "0 * * * *", "America/New_York", start);
    bench(
        "02:30 daily (Berlin, DST)",
        "30 2 * * *",
        "Europe/Berlin",
        start,
    );
    bench("OR rule 13th or Friday", "0 0 13 * 5", "UTC", start);
    bench("leap day", "0 0 29 2 *", "UTC", start);
    // `next_after` returns a ZonedDateTime (clones the TimeZone handle).
    let s = Schedule::parse("30 9 * * 1-5").expect("parses");
    let tz = time_zone("America/New_York").expect("zone");
    let n = 2_000_000u32;
    let began = Instant::now();
    let mut t: Timestamp = start.parse().expect("timestamp");
    for i in 0..n {
        if i % 1000 == 0 {
            t = start.parse().expect("timestamp");
        }
        t = s.next_after(black_box(t), &tz).expect("fires").timestamp();
    }
    println!(
        "{:<34} {:<22} {:<17} {:>12.0} evaluations/s",
        "next_after (zoned result, NY)",
        "30 9 * * 1-5",
        "America/New_York",
        f64::from(n) / began.elapsed().as_secs_f64()
    );
    let exprs = ["*/15 9-17 * * mon-fri", "0 0 1,15 jan-jun *", "@daily"];
    let n = 1_000_000u32;
    let began = Instant::now();
    for i in 0..n {
        black_box(Schedule::parse(black_box(exprs[i as usize % 3])).expect("parses"));
    }
    println!(
        "{:<34} {:<22} {:<17} {:>12.0} parses/s",
        "Schedule::parse",
        "(3 expressions)",
        "-",
        f64::from(n) / began.elapsed().as_secs_f64()
    );
    let never = Schedule::parse("0 0 30 2 *").expect("parses");
    let tz = time_zone("UTC").expect("utc");
    let began = Instant::now();
    for _ in 0..100_000 {
        black_box(never.next_timestamp_after(black_box(Timestamp::UNIX_EPOCH), &tz));
    }
    println!(
        "{:<34} {:<22} {:<17} {:>12.0} evaluations/s",
        "never (0 0 30 2 *)",
        "0 0 30 2 *",
        "UTC",
        100_000.0 / began.elapsed().as_secs_f64()
    );
}
