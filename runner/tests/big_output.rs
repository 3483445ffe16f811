//! A job printing 1 GB: the pipes are drained to the end, a capped prefix is kept, and the
//! test process's memory stays flat. Alone in its file so no other test disturbs the RSS.

mod common;

use std::time::{Duration, Instant};

use common::{setup, sh};
use runner::{run, Cancel, Live, Status};
use tokio::sync::broadcast;

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn one_gigabyte_is_drained_with_flat_memory() {
    setup();
    const CAP: usize = 1 << 20;
    // A follower that never reads: must not slow the job nor grow memory.
    let (tx, _lagging) = broadcast::channel(16);
    let mut spec = sh(
        "head -c 1000000000 /dev/zero; head -c 3000000 /dev/zero | tr '\\0' e >&2; echo end >&2",
        "big",
    );
    spec.output_cap = CAP;
    spec.timeout = Duration::from_secs(60);
    let rss_before = status_kb("VmRSS:");
    let t = Instant::now();
    let live = Live {
        output: Some(tx),
        started: None,
    };
    let out = run(spec, live, Cancel::new()).await;
    let took = t.elapsed();
    let hwm = status_kb("VmHWM:");
    eprintln!("1 GB drained in {took:?}; RSS before {rss_before} kB, peak {hwm} kB");
    assert_eq!(
        out.status,
        Status::Exited(0),
        "{}",
        &out.stderr[..200.min(out.stderr.len())]
    );
    assert!(out.truncated);
    let marker = format!(
        "\n[silica-cron: output truncated, {} bytes dropped]\n",
        1_000_000_000 - CAP
    );
    assert_eq!(out.stdout.len(), CAP + marker.len());
    assert!(out.stdout.ends_with(&marker));
    assert!(out.stdout[..CAP].bytes().all(|b| b == 0));
    assert!(out.stderr.starts_with("eeee"));
    assert!(out.stderr.len() <= CAP + 80);
    assert_eq!(
        out.dropped_bytes,
        (1_000_000_000 - CAP as u64) + (3_000_004 - CAP as u64)
    );
    assert!(
        hwm.saturating_sub(rss_before) < 50 * 1024,
        "memory grew from {rss_before} kB to a peak of {hwm} kB"
    );
}
