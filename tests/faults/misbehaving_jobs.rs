//! Scenario 7: Jobs that misbehave, all at once: one prints 1 GiB, one closes its stdout early and goes
//! on, one forks a tree of 100 processes and exits, one reads stdin, one never exits, one
//! never exits and ignores SIGTERM, one dies by a signal. Each is recorded truthfully (status,
//! exit code, message, output capped and the cut marked), no process of any run outlives it,
//! and the daemon's peak memory stays flat.

use std::time::{Duration, Instant};

use silica_cron_tests::jobs::{config, env_run_processes, rows, script, status_kb, wait_for};
use silica_cron_tests::report::Scenario;
use silica_cron_tests::Env;

use crate::common::{cli, started_id};

const CAP: usize = 65_536;

/// (job name, prompt text the agent dispatches on, job timeout)
const JOBS: [(&str, &str, Option<&str>); 7] = [
    ("gigabyte", "gigabyte", None),
    ("closes-stdout", "closes-stdout", None),
    ("fork-tree", "fork-tree", None),
    ("reads-stdin", "reads-stdin", None),
    ("never-exits", "never-exits", Some("2")),
    ("ignores-term", "ignores-term", Some("2")),
    ("by-signal", "by-signal", None),
];

#[test]
fn misbehaving_jobs_are_recorded_truthfully() {
    let mut sc = Scenario::start("7", "jobs that misbehave");
    let env = Env::built_in();
    let agent = script(
        &env,
        "agent.sh",
        r#"case "$1" in
  gigabyte) head -c 1073741824 /dev/zero | tr '\0' y; echo done >&2 ;;
  closes-stdout) echo before; exec >&-; sleep 2; echo after-close >&2; exit 5 ;;
  fork-tree) for i in 1 2 3 4 5 6 7 8 9 10; do
               sh -c 'for j in 1 2 3 4 5 6 7 8 9; do sleep 300 & done; wait' &
             done
             echo forked; sleep 3; exit 0 ;;
  reads-stdin) read line; echo "read exit $?"; cat; echo eof ;;
  never-exits) echo forever; sleep 300 ;;
  ignores-term) trap '' TERM; echo stubborn; while :; do sleep 1; done ;;
  by-signal) echo dying; kill -SEGV $$ ;;
esac"#,
    );
    let cfg = config(&env, &agent, &format!("output_cap = {CAP}\n"));
    let d = env.start_daemon(&["--config", &cfg]);
    for (job, prompt, timeout) in JOBS {
        cli(&env, &cfg, &["prompts", "add", prompt, prompt]).ok();
        let mut args = vec![
            "jobs",
            "add",
            job,
            "--prompt",
            prompt,
            "--cron",
            "0 3 * * *",
        ];
        if let Some(t) = timeout {
            args.extend(["--timeout", t]);
        }
        cli(&env, &cfg, &args).ok();
    }
    let before = status_kb(d.pid(), "VmHWM:");
    let t0 = Instant::now();
    sc.tried("7 runs at once: 1 GiB on stdout (cap 64 KiB), stdout closed early then exit 5, 100 sleeping processes left behind, reading stdin, never exiting (timeout 2 s), never exiting with TERM ignored (timeout 2 s, grace 1 s), SIGSEGV");
    let mut ids = Vec::new();
    for (job, _, _) in JOBS {
        let out = cli(&env, &cfg, &["jobs", "run", job]);
        out.ok();
        ids.push((job, started_id(&out.stdout).expect("an execution id")));
    }
    sc.iterations(JOBS.len() as u64);

    // The tree: 100 sleeping processes (and their 10 shells) counted while the run lasts.
    let tree = ids.iter().find(|(j, _)| *j == "fork-tree").unwrap().1;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut most = 0;
    while Instant::now() < deadline && most < 100 {
        let n = env_run_processes(&env)
            .iter()
            .filter(|p| p.execution_id() == Some(tree) && p.cmdline.starts_with("sleep 300"))
            .count();
        most = most.max(n);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        most >= 90,
        "only {most} of the tree's sleeping processes seen"
    );

    wait_for(
        &env,
        "SELECT count(*) FROM job_executions WHERE completed_at IS NULL;",
        "0",
        Duration::from_secs(120),
    );
    let all_done = t0.elapsed();
    let row = |job: &str, col: &str| {
        rows(&env, &format!("SELECT {col} FROM job_executions e JOIN scheduled_jobs j ON j.id = e.scheduled_job_id WHERE j.name = '{job}';"))
    };

    assert_eq!(
        row("gigabyte", "status || '|' || exit_code || '|' || output_truncated || '|' || substr(output, 1, 3) || '|' || error_message"),
        "completed|0|1|yyy|done"
    );
    let kept: usize = row("gigabyte", "length(output)").parse().unwrap();
    assert!(kept > CAP && kept < CAP + 100, "kept {kept} bytes");
    assert!(row("gigabyte", "output")
        .contains("[silica-cron: output truncated, 1073676288 bytes dropped]"));

    assert_eq!(
        row(
            "closes-stdout",
            "status || '|' || exit_code || '|' || output"
        ),
        "failed|5|before"
    );
    assert!(row("closes-stdout", "error_message").contains("exited with code 5"));
    let lasted: f64 = row(
        "closes-stdout",
        "(julianday(completed_at) - julianday(started_at)) * 86400",
    )
    .parse()
    .unwrap();
    assert!(
        lasted >= 1.5,
        "ended at its stdout's close, not its exit ({lasted} s)"
    );

    assert_eq!(
        row("fork-tree", "status || '|' || exit_code || '|' || output"),
        "completed|0|forked"
    );

    assert_eq!(
        row("reads-stdin", "status || '|' || output"),
        "completed|read exit 1\neof"
    );

    assert_eq!(
        row("never-exits", "status || '|' || output"),
        "timed_out|forever"
    );
    assert!(row("never-exits", "error_message").contains("timed out after 2 s"));
    assert_eq!(
        row("ignores-term", "status || '|' || output"),
        "timed_out|stubborn"
    );

    assert_eq!(row("by-signal", "status || '|' || output"), "failed|dying");
    assert!(
        row("by-signal", "error_message").contains("killed by signal 11"),
        "{}",
        row("by-signal", "error_message")
    );

    // Nothing of any run outlives it (the tree's 100 included).
    let left = env_run_processes(&env);
    assert!(left.is_empty(), "{left:?}");
    let peak = status_kb(d.pid(), "VmHWM:");
    assert!(
        peak < before + 16 * 1024,
        "daemon peak RSS {peak} KiB against {before} KiB before the runs"
    );
    sc.held("1 GiB: completed, 64 KiB kept, the cut marked with the bytes dropped; stdout closed: failed, exit 5, ended at exit not at EOF; tree: completed, 100 left-behind processes killed; stdin: EOF at once; never-exits and TERM-ignoring: timed_out; SIGSEGV: failed 'killed by signal 11'");
    sc.held(format!(
        "no run process left; daemon peak RSS {before} -> {peak} KiB; all ended and recorded {:.1} s after the first start",
        all_done.as_secs_f64()
    ));
    sc.pass();
}
