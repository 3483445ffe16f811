//! Stopping whole process trees: timeout with a `setsid` grandchild that ignores SIGTERM,
//! leftovers after a normal exit, cancel, and a dropped run future.

mod common;

use std::time::{Duration, Instant};

use common::{alive, processes_with_marker, setup, sh, stat_field};
use runner::{run, Cancel, Live, Status, Workdir};
use tokio::sync::oneshot;

/// A grandchild in its own session (escapes killpg) that ignores SIGTERM and writes
/// "<pid> <sid>" to `file` once running.
fn escaping_grandchild(file: &str) -> String {
    format!(
        "setsid sh -c 'trap \"\" TERM; echo $$ $(cut -d\" \" -f6 /proc/$$/stat) > {file}.tmp; \
         mv {file}.tmp {file}; while :; do sleep 0.1; done' &"
    )
}

fn read_pid_sid(path: &std::path::Path) -> (i32, i32) {
    let s = std::fs::read_to_string(path).unwrap();
    let v: Vec<i32> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[tokio::test]
async fn timeout_kills_tree_including_setsid_grandchild_ignoring_term() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{}\n trap '' TERM; sleep 0.2 & while [ ! -s gc ]; do sleep 0.05; done; echo ready; sleep 30",
        escaping_grandchild("gc")
    );
    let mut spec = sh(&script, "timeout-tree");
    spec.workdir = Workdir::Given(dir.path().into());
    spec.timeout = Duration::from_millis(1500);
    spec.grace = Duration::from_millis(300);
    let marker = spec.marker.clone();
    let t = Instant::now();
    let out = run(spec, Live::default(), Cancel::new()).await;
    let took = t.elapsed();
    assert_eq!(out.status, Status::TimedOut);
    assert_eq!(out.stdout, "ready\n", "{}", out.stderr);
    // TERM was ignored by everyone, so SIGKILL after the grace period was needed.
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    let (gc, sid) = read_pid_sid(&dir.path().join("gc"));
    assert_eq!(gc, sid, "the grandchild leads its own session");
    assert_ne!(
        Some(sid.to_string()),
        stat_field(out.pid.unwrap() as i32, 6)
    );
    assert!(!alive(gc), "setsid grandchild {gc} survived");
    assert!(out.leftovers_killed >= 1);
    assert_eq!(processes_with_marker(&marker), Vec::<i32>::new());
}

#[tokio::test]
async fn leftovers_after_normal_exit_are_killed_and_counted() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    // Three kinds of leftovers: a plain background job (same group, holds stdout), a
    // double-forked one (reparented to us), and a setsid one ignoring SIGTERM.
    let script = format!(
        "sleep 60 & (sleep 61 &) ; {} while [ ! -s gc ]; do sleep 0.05; done; echo done",
        escaping_grandchild("gc")
    );
    let mut spec = sh(&script, "leftovers");
    spec.workdir = Workdir::Given(dir.path().into());
    spec.grace = Duration::from_millis(300);
    let marker = spec.marker.clone();
    let t = Instant::now();
    let out = run(spec, Live::default(), Cancel::new()).await;
    assert_eq!(out.status, Status::Exited(0));
    assert_eq!(out.stdout, "done\n");
    assert!(out.leftovers_killed >= 3, "{}", out.leftovers_killed);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let (gc, _) = read_pid_sid(&dir.path().join("gc"));
    assert!(!alive(gc));
    assert_eq!(processes_with_marker(&marker), Vec::<i32>::new());
}

#[tokio::test]
async fn a_lone_setsid_leftover_after_normal_exit_is_found() {
    setup();
    // Nothing stays in the job's process group, so only the orphan check (the orphan is
    // reparented to this subreaper's main thread) can tell that something is left.
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{} while [ ! -s gc ]; do sleep 0.05; done; echo done",
        escaping_grandchild("gc")
    );
    let mut spec = sh(&script, "lone-setsid");
    spec.workdir = Workdir::Given(dir.path().into());
    spec.grace = Duration::from_millis(300);
    let out = run(spec, Live::default(), Cancel::new()).await;
    assert_eq!(out.status, Status::Exited(0));
    let (gc, _) = read_pid_sid(&dir.path().join("gc"));
    assert!(!alive(gc), "setsid leftover {gc} survived a normal exit");
    assert!(out.leftovers_killed >= 1);
}

#[tokio::test]
async fn no_leftovers_counted_for_a_tidy_job() {
    setup();
    let out = run(
        sh("sleep 0.1 & wait; echo ok", "tidy"),
        Live::default(),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.status, Status::Exited(0));
    assert_eq!(out.leftovers_killed, 0);
}

#[tokio::test]
async fn cancel_kills_the_whole_tree() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "sleep 60 & {} while [ ! -s gc ]; do sleep 0.05; done; echo ready; sleep 60",
        escaping_grandchild("gc")
    );
    let mut spec = sh(&script, "cancel-tree");
    spec.workdir = Workdir::Given(dir.path().into());
    spec.grace = Duration::from_millis(300);
    let marker = spec.marker.clone();
    let cancel = Cancel::new();
    let handle = tokio::spawn(run(spec, Live::default(), cancel.clone()));
    assert!(common::eventually(Duration::from_secs(5), || dir.path().join("gc").exists()).await);
    let (gc, _) = read_pid_sid(&dir.path().join("gc"));
    assert!(alive(gc));
    assert!(processes_with_marker(&marker).len() >= 3);
    cancel.cancel();
    let out = handle.await.unwrap();
    assert_eq!(out.status, Status::Cancelled);
    assert!(!alive(gc));
    assert!(out.leftovers_killed >= 2);
    assert_eq!(processes_with_marker(&marker), Vec::<i32>::new());
}

#[tokio::test]
async fn dropping_the_run_future_kills_the_tree_and_removes_the_workdir() {
    setup();
    let parent = tempfile::tempdir().unwrap();
    let mut spec = sh("sleep 60 & setsid sleep 61 & sleep 62", "drop");
    spec.workdir = Workdir::Fresh {
        parent: parent.path().into(),
    };
    let marker = spec.marker.clone();
    let (tx, rx) = oneshot::channel();
    let live = Live {
        output: None,
        started: Some(tx),
    };
    let mut fut = Box::pin(run(spec, live, Cancel::new()));
    tokio::select! {
        _ = &mut fut => panic!("job finished early"),
        _ = async {
            rx.await.unwrap();
            assert!(common::eventually(Duration::from_secs(5), || {
                processes_with_marker(&marker).len() >= 3
            }).await);
        } => {}
    }
    drop(fut);
    // SIGKILL was sent synchronously in drop; give the kernel a moment to finish them.
    assert!(
        common::eventually(Duration::from_secs(3), || processes_with_marker(&marker)
            .is_empty())
        .await
    );
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn each_process_gets_a_single_sigterm() {
    setup();
    // The handler counts SIGTERMs; the loop keeps the shell responsive to traps.
    let mut spec = sh(
        "n=0; trap 'n=$((n+1)); echo term $n' TERM; echo ready; while :; do sleep 0.05; done",
        "one-term",
    );
    spec.timeout = Duration::from_millis(300);
    spec.grace = Duration::from_millis(600);
    let out = run(spec, Live::default(), Cancel::new()).await;
    assert_eq!(out.status, Status::TimedOut);
    assert!(
        out.stdout.starts_with("ready\nterm 1\n"),
        "{:?}",
        out.stdout
    );
    assert!(!out.stdout.contains("term 2"), "{:?}", out.stdout);
}
