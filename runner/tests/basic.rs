//! Exit statuses, spawn failures, environment, stdin, workdir, output and live streaming,
//! with real processes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{setup, sh};
use runner::{run, Cancel, Live, Spec, Status, Stream, Workdir};
use tokio::sync::{broadcast, oneshot};

async fn run_plain(spec: Spec) -> runner::Outcome {
    run(spec, Live::default(), Cancel::new()).await
}

#[tokio::test]
async fn exit_codes_are_recorded_and_fresh_workdir_removed() {
    setup();
    for code in [0, 3] {
        let out = run_plain(sh(&format!("echo hi; exit {code}"), "exit")).await;
        assert_eq!(out.status, Status::Exited(code));
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "");
        assert!(!out.truncated);
        assert_eq!(out.leftovers_killed, 0);
        assert!(out.pid.is_some());
        assert!(out.finished >= out.started);
        let wd = out.workdir.expect("workdir");
        assert!(!wd.exists(), "{} left behind", wd.display());
        assert!(out.cleanup_error.is_none());
    }
    assert!(Status::Exited(0).is_success());
}

#[tokio::test]
async fn missing_command_is_a_spawn_failure_naming_the_path() {
    setup();
    let parent = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(
        vec!["/nonexistent/silica-agent".into()],
        common::marker("enoent"),
    );
    spec.workdir = Workdir::Fresh {
        parent: parent.path().into(),
    };
    let out = run_plain(spec).await;
    match &out.status {
        Status::SpawnFailed(msg) => {
            assert!(msg.contains("/nonexistent/silica-agent"), "{msg}");
            assert!(msg.contains("No such file"), "{msg}");
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
    assert_eq!(out.pid, None);
    // The fresh workdir was removed even though nothing ran.
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn non_executable_file_is_a_spawn_failure() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/bin/sh\necho nope\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let spec = Spec::new(vec![script.display().to_string()], common::marker("eacces"));
    let out = run_plain(spec).await;
    match &out.status {
        Status::SpawnFailed(msg) => assert!(msg.contains("ermission denied"), "{msg}"),
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_specs_are_spawn_failures() {
    setup();
    let out = run_plain(Spec::new(vec![], "m")).await;
    assert!(matches!(out.status, Status::SpawnFailed(_)));
    let out = run_plain(Spec::new(vec!["/bin/true".into()], "")).await;
    assert!(matches!(out.status, Status::SpawnFailed(_)));
    let mut spec = sh("true", "nodir");
    spec.workdir = Workdir::Fresh {
        parent: "/nonexistent/parent".into(),
    };
    let out = run_plain(spec).await;
    match out.status {
        Status::SpawnFailed(msg) => assert!(msg.contains("/nonexistent/parent"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn environment_is_exactly_the_given_one_minus_service_plumbing() {
    setup();
    let mut spec = Spec::new(vec!["/usr/bin/env".into()], common::marker("env"));
    spec.env = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("HOME".into(), "/nonexistent-home".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("SILICA_CRON_JOB_NAME".into(), "nightly report".into()),
        ("NOTIFY_SOCKET".into(), "/run/systemd/notify".into()),
        ("WATCHDOG_USEC".into(), "30000000".into()),
        ("WATCHDOG_PID".into(), "1".into()),
        ("SILICA_CRON_EXECUTION_ID".into(), "forged".into()),
    ];
    let marker = spec.marker.clone();
    let out = run_plain(spec).await;
    assert_eq!(out.status, Status::Exited(0), "{}", out.stderr);
    let mut got: Vec<&str> = out.stdout.lines().collect();
    got.sort();
    let marker_line = format!("SILICA_CRON_EXECUTION_ID={marker}");
    let mut want = vec![
        "HOME=/nonexistent-home",
        "LANG=C.UTF-8",
        "PATH=/usr/bin:/bin",
        "SILICA_CRON_JOB_NAME=nightly report",
        marker_line.as_str(),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_bare_program_name_is_looked_up_in_the_jobs_path() {
    setup();
    let bin = tempfile::tempdir().unwrap();
    let tool = bin.path().join("silica-test-tool");
    std::fs::write(&tool, "#!/bin/sh\necho found \"$0\"\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = Spec::new(vec!["silica-test-tool".into()], common::marker("path"));
    spec.env = vec![(
        "PATH".into(),
        format!("/nonexistent:{}:/usr/bin:/bin", bin.path().display()),
    )];
    let out = run_plain(spec).await;
    assert_eq!(out.status, Status::Exited(0), "{}", out.stderr);
    assert_eq!(out.stdout, format!("found {}\n", tool.display()));

    // Not on that PATH: a spawn failure naming the program.
    let mut spec = Spec::new(vec!["silica-test-tool".into()], common::marker("nopath"));
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    match run_plain(spec).await.status {
        Status::SpawnFailed(msg) => {
            assert!(msg.contains("silica-test-tool"), "{msg}");
            assert!(msg.contains("No such file"), "{msg}");
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn signals_the_daemon_ignores_or_blocks_are_default_in_the_job() {
    setup();
    // As if the daemon had been started under nohup with SIGUSR1 ignored, and some thread
    // blocks SIGUSR2.
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // Shell builtins only: a shell waiting for a child blocks every signal for a moment, which
    // a forked grep could catch.
    let out = run_plain(sh(
        "while read -r name value; do case $name in SigIgn:|SigBlk:) echo \"$name $value\";; esac; done < /proc/$$/status",
        "sigs",
    ))
    .await;
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_DFL) };
    let mask = |name: &str| {
        let line = out.stdout.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let bit = |sig: i32| 1u64 << (sig - 1);
    assert_eq!(mask("SigIgn:") & bit(libc::SIGUSR1), 0, "{}", out.stdout);
    assert_eq!(mask("SigBlk:"), 0, "{}", out.stdout);
}

#[tokio::test]
async fn stdin_is_empty() {
    setup();
    let t = Instant::now();
    let out = run_plain(sh("cat; echo rc=$?", "stdin")).await;
    assert_eq!(out.status, Status::Exited(0));
    assert_eq!(out.stdout, "rc=0\n");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn child_has_its_own_process_group() {
    setup();
    let out = run_plain(sh("cut -d' ' -f5 /proc/$$/stat; echo $$", "pgrp")).await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(lines[0], lines[1], "pgrp should equal the job's pid");
    assert_eq!(lines[1], out.pid.unwrap().to_string());
}

#[tokio::test]
async fn fresh_workdir_is_private_and_removed_even_when_locked_down() {
    setup();
    // As root, permission bits would not bite: make them bite for the runner's cleanup.
    common::drop_dac_caps_on_this_thread();
    let parent = tempfile::tempdir().unwrap();
    let mut spec = sh(
        "stat -c %a .; pwd; mkdir -p a/b/c/d && echo x > a/b/c/d/f && echo y > a/g && \
         chmod 000 a/b/c/d/f a/b/c/d a/g && chmod 500 a/b && chmod 100 a/b/c && ln -s / a/root",
        "wd",
    );
    spec.workdir = Workdir::Fresh {
        parent: parent.path().into(),
    };
    let out = run_plain(spec).await;
    assert_eq!(out.status, Status::Exited(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "700");
    let wd = out.workdir.unwrap();
    assert_eq!(lines[1], wd.display().to_string());
    assert!(wd.starts_with(parent.path()));
    assert!(!wd.exists());
    assert!(out.cleanup_error.is_none(), "{:?}", out.cleanup_error);
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn given_workdir_is_kept() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("echo kept > out.txt", "given");
    spec.workdir = Workdir::Given(dir.path().into());
    let out = run_plain(spec).await;
    assert_eq!(out.status, Status::Exited(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "kept\n"
    );
}

#[tokio::test]
async fn owned_workdir_made_by_the_caller_is_removed() {
    setup();
    let parent = tempfile::tempdir().unwrap();
    let wd = runner::make_fresh_dir(parent.path(), "owned").unwrap();
    let mut spec = sh("touch a b c", "owned");
    spec.workdir = Workdir::Owned(wd.clone());
    let out = run_plain(spec).await;
    assert_eq!(out.status, Status::Exited(0));
    assert!(!wd.exists());
}

#[tokio::test]
async fn killed_by_a_signal() {
    setup();
    let out = run_plain(sh("echo x; kill -9 $$", "sig")).await;
    assert_eq!(out.status, Status::Signaled(9));
    assert_eq!(out.stdout, "x\n");
}

#[tokio::test]
async fn job_that_closes_stdout_early_keeps_running() {
    setup();
    let out = run_plain(sh(
        "echo before; exec 1>&-; sleep 0.3; echo after >&2; exit 4",
        "close",
    ))
    .await;
    assert_eq!(out.status, Status::Exited(4));
    assert_eq!(out.stdout, "before\n");
    assert_eq!(out.stderr, "after\n");
}

#[tokio::test]
async fn output_over_the_cap_is_cut_and_marked() {
    setup();
    // 1000 lines of 11 bytes on stdout, a short line on stderr.
    let mut spec = sh(
        "i=0; while [ $i -lt 1000 ]; do echo 0123456789; i=$((i+1)); done; echo short >&2",
        "cap",
    );
    spec.output_cap = 100;
    let out = run_plain(spec).await;
    assert_eq!(out.status, Status::Exited(0));
    assert!(out.truncated);
    assert_eq!(out.dropped_bytes, 11_000 - 100);
    let expected_head = "0123456789\n".repeat(10);
    assert_eq!(
        out.stdout,
        format!(
            "{}\n[silica-cron: output truncated, 10900 bytes dropped]\n",
            &expected_head[..100]
        )
    );
    assert_eq!(out.stderr, "short\n");
}

#[tokio::test]
async fn nofile_soft_limit_is_applied() {
    setup();
    let mut spec = sh("ulimit -n", "nofile");
    spec.nofile = Some(256);
    let out = run_plain(spec).await;
    assert_eq!(out.stdout.trim(), "256");
}

#[tokio::test]
async fn descriptors_without_cloexec_do_not_leak() {
    setup();
    // dup() gives a descriptor without FD_CLOEXEC, as a careless library might.
    let fd = unsafe { libc::dup(2) };
    assert!(fd > 2);
    let out = run_plain(sh(
        &format!("if [ -e /proc/$$/fd/{fd} ]; then echo leaked; else echo clean; fi"),
        "fds",
    ))
    .await;
    unsafe { libc::close(fd) };
    assert_eq!(out.stdout, "clean\n");
}

#[tokio::test]
async fn pid_is_reported_at_start_and_output_is_streamed_live() {
    setup();
    let (tx, mut rx) = broadcast::channel(1024);
    let (pid_tx, pid_rx) = oneshot::channel();
    let live = Live {
        output: Some(tx),
        started: Some(pid_tx),
    };
    let spec = sh("echo $$; echo oops >&2; sleep 0.2; echo late", "live");
    let handle = tokio::spawn(run(spec, live, Cancel::new()));
    let started = pid_rx.await.expect("started");
    // Live output arrives while the job still runs.
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!handle.is_finished());
    let out = handle.await.unwrap();
    assert_eq!(out.pid, Some(started.pid));
    assert_eq!(Some(started.workdir), out.workdir);
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let mut push = |c: runner::Chunk| match c.stream {
        Stream::Stdout => o.extend_from_slice(&c.data),
        Stream::Stderr => e.extend_from_slice(&c.data),
    };
    push(first);
    while let Ok(c) = rx.try_recv() {
        push(c);
    }
    assert_eq!(
        String::from_utf8(o).unwrap(),
        format!("{}\nlate\n", started.pid)
    );
    assert_eq!(String::from_utf8(e).unwrap(), "oops\n");
    assert_eq!(out.stdout, format!("{}\nlate\n", started.pid));
}

#[tokio::test]
async fn cancel_stops_the_job() {
    setup();
    let cancel = Cancel::new();
    let (pid_tx, pid_rx) = oneshot::channel();
    let live = Live {
        output: None,
        started: Some(pid_tx),
    };
    let spec = sh("echo started; sleep 30", "cancel");
    let t = Instant::now();
    let handle = tokio::spawn(run(spec, live, cancel.clone()));
    pid_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    let out = handle.await.unwrap();
    assert_eq!(out.status, Status::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(out.stdout, "started\n");
    assert!(!out.workdir.unwrap().exists());
}

#[tokio::test]
async fn cancelled_before_start_runs_nothing() {
    setup();
    let cancel = Cancel::new();
    cancel.cancel();
    assert!(cancel.is_cancelled());
    let out = run(sh("echo no", "precancel"), Live::default(), cancel).await;
    assert_eq!(out.status, Status::Cancelled);
    assert_eq!(out.pid, None);
}

#[tokio::test]
async fn simple_timeout() {
    setup();
    let mut spec = sh("echo a; sleep 30", "timeout");
    spec.timeout = Duration::from_millis(300);
    let t = Instant::now();
    let out = run_plain(spec).await;
    assert_eq!(out.status, Status::TimedOut);
    assert_eq!(out.stdout, "a\n");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn removes_locked_tree_without_following_symlinks() {
    common::drop_dac_caps_on_this_thread();
    let base = std::env::temp_dir();
    let outside = runner::make_fresh_dir(&base, "outside").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o500)).unwrap();
    let d = runner::make_fresh_dir(&base, "unit").unwrap();
    assert_eq!(
        std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
        0o700
    );
    std::fs::create_dir_all(d.join("a/b/c")).unwrap();
    std::fs::write(d.join("a/b/c/f"), b"x").unwrap();
    std::fs::set_permissions(d.join("a/b/c/f"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("a/link")).unwrap();
    std::fs::set_permissions(d.join("a/b/c"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(d.join("a/b"), std::fs::Permissions::from_mode(0o500)).unwrap();
    // A plain recursive removal cannot do it...
    assert!(std::fs::remove_dir_all(&d).is_err());
    // ...this one can.
    runner::remove_tree(&d).unwrap();
    assert!(!d.exists());
    // The symlink's target kept its mode.
    assert_eq!(
        std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
        0o500
    );
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    runner::remove_tree(&outside).unwrap();
    runner::remove_tree(&outside).unwrap(); // already gone: fine
}
