//! Subreaper behaviour: orphans reparent to this process and are reaped by `reap_orphans`,
//! which never takes the exit status of a child someone else waits for.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{setup, sh, stat_field};
use runner::{reap_orphans, run, spawn_tracked, Cancel, Live, Status};

fn zombie_children() -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let s = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if stat_field(pid, 3).as_deref() == Some("Z") {
                out.push(pid);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_keep_their_statuses_while_orphans_are_reaped() {
    setup();
    assert!(runner::is_subreaper());
    let stop = Arc::new(AtomicBool::new(false));
    let reaper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += reap_orphans();
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    let mut handles = Vec::new();
    for i in 0..24 {
        // Each job leaves a short-lived orphan behind and exits with its own code.
        let spec = sh(&format!("(sleep 0.0{} &); exit {i}", i % 10), "reap");
        handles.push(tokio::spawn(run(spec, Live::default(), Cancel::new())));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.await.unwrap();
        assert_eq!(
            out.status,
            Status::Exited(i as i32),
            "job {i}: {}",
            out.stderr
        );
    }
    stop.store(true, Ordering::Relaxed);
    reaper.join().unwrap();
    reap_orphans();
    assert_eq!(zombie_children(), Vec::<i32>::new());
}

#[tokio::test]
async fn orphans_reparent_here_and_get_reaped_without_stealing_tracked_children() {
    setup();
    let (mut child, tracked) = spawn_tracked(
        || {
            Command::new("/bin/sh")
                .args(["-c", "sleep 0.3 & echo $!; exit 7"])
                .stdout(Stdio::piped())
                .spawn()
        },
        |c| Some(c.id()),
    )
    .unwrap();
    let tracked = tracked.unwrap();
    assert_eq!(tracked.pid(), child.id());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let orphan: i32 = line.trim().parse().unwrap();
    // Let the shell exit and become a zombie; reaping must leave it alone.
    assert!(
        common::eventually(Duration::from_secs(3), || {
            reap_orphans();
            stat_field(child.id() as i32, 3).as_deref() == Some("Z")
        })
        .await
    );
    for _ in 0..10 {
        reap_orphans();
    }
    let status = child.wait().expect("exit status not stolen");
    assert_eq!(status.code(), Some(7));
    drop(tracked);
    // The orphaned sleep now belongs to us...
    assert_eq!(
        stat_field(orphan, 4),
        Some(std::process::id().to_string()),
        "orphan was not reparented to the subreaper"
    );
    // ...and once it exits, reap_orphans collects it.
    assert!(
        common::eventually(Duration::from_secs(3), || {
            reap_orphans();
            !std::path::Path::new(&format!("/proc/{orphan}")).exists()
        })
        .await
    );
}
