//! The firing engine with the real daemon and real processes (a fake agent script as the
//! configured runner). One real minute boundary is waited for; everything that can share it does.

use std::path::Path;
use std::time::{Duration, Instant};

use silica_cron_tests::client::wait_until;
use silica_cron_tests::jobs::{self, config, env_run_processes, rows, script, wait_for};
use silica_cron_tests::{Daemon, Env};

fn start(env: &Env, cfg: &str) -> Daemon {
    env.start_daemon(&["--config", cfg])
}

#[test]
fn jobs_fire_on_their_minute_and_are_recorded_truthfully() {
    let env = Env::built_in().with_var("NOTIFY_SOCKET", "/run/should-not-leak");
    let agent = script(
        &env,
        "agent.sh",
        r#"case "$1" in
  ok) echo "prompt=$1 session=$2 job=$SILICA_CRON_JOB_NAME model=$SILICA_CRON_MODEL notify=${NOTIFY_SOCKET:-none}"; pwd; echo warn >&2 ;;
  fail) echo failing; exit 3 ;;
  hang) (setsid sh -c 'trap "" TERM; echo $$ > '"$PWD"'/../grandchild.pid; sleep 300' &) ; sleep 300 ;;
  loud) head -c 5000000 /dev/zero | tr '\0' 'x' ;;
esac"#,
    );
    let cfg = config(&env, &agent, "output_cap = 100000\n");
    let d = start(&env, &cfg);
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    for (name, timeout) in [
        ("ok", None),
        ("fail", None),
        ("hang", Some("2")),
        ("loud", None),
    ] {
        cli(&["prompts", "add", name, name]).ok();
        let mut args = vec!["jobs", "add", name, "--prompt", name, "--cron", "* * * * *"];
        if let Some(t) = timeout {
            args.extend(["--timeout", t]);
        }
        cli(&args).ok();
    }
    // The next minute boundary, plus the 2 s timeout and 1 s grace of `hang`.
    wait_for(
        &env,
        "SELECT count(*) FROM job_executions WHERE completed_at IS NOT NULL;",
        "4",
        Duration::from_secs(75),
    );

    let row = |job: &str, col: &str| {
        rows(&env, &format!("SELECT {col} FROM job_executions e JOIN scheduled_jobs j ON j.id = e.scheduled_job_id WHERE j.name = '{job}';"))
    };
    assert_eq!(row("ok", "status"), "completed");
    assert_eq!(row("ok", "exit_code"), "0");
    let out = row("ok", "output");
    let session = row("ok", "session_id");
    assert_eq!(session.len(), 36, "a UUID session id");
    assert!(
        out.contains(&format!(
            "prompt=ok session={session} job=ok model=haiku notify=none"
        )),
        "{out}"
    );
    assert_eq!(row("ok", "error_message"), "warn");
    assert_eq!(row("ok", "trigger_kind"), "schedule");
    let scheduled = row("ok", "scheduled_for");
    assert!(scheduled.ends_with(":00"), "{scheduled}");
    assert!(
        row("ok", "started_at") >= scheduled,
        "started after its instant"
    );
    let workdir = out.lines().nth(1).unwrap().to_string();
    assert!(
        !Path::new(&workdir).exists(),
        "the fresh workdir {workdir} is removed after the run"
    );

    assert_eq!(row("fail", "status"), "failed");
    assert_eq!(row("fail", "exit_code"), "3");
    assert!(row("fail", "error_message").contains("exited with code 3"));

    assert_eq!(row("hang", "status"), "timed_out");
    assert!(row("hang", "error_message").contains("timed out after 2 s"));
    let gc = std::fs::read_to_string(Path::new(&env.path()).join("grandchild.pid")).ok();
    if let Some(pid) = gc {
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the setsid grandchild {pid} survived"
        );
    }

    assert_eq!(row("loud", "status"), "completed");
    assert_eq!(row("loud", "output_truncated"), "1");
    let kept: usize = row("loud", "length(output)").parse().unwrap();
    assert!(kept <= 100_200, "output capped: {kept}");
    assert!(row("loud", "output").contains("[silica-cron: output truncated"));

    // Each (job, minute) once.
    assert_eq!(rows(&env, "SELECT count(*) FROM (SELECT scheduled_job_id, scheduled_for FROM job_executions GROUP BY 1, 2 HAVING count(*) > 1);"), "0");
    let json: serde_json::Value = serde_json::from_str(
        &cli(&["executions", "list", "--job", "ok", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(json[0]["status"], "completed");
    drop(d);
    assert!(
        env_run_processes(&env).is_empty(),
        "{:?}",
        env_run_processes(&env)
    );
}

#[test]
fn manual_runs_print_their_id_or_stream_their_output() {
    let env = Env::built_in();
    let agent = script(&env, "agent.sh", "echo \"line one $1\"; echo \"to stderr\" >&2; echo 'line two'; [ \"$1\" = bad ] && exit 4; exit 0");
    let cfg = config(&env, &agent, "");
    let _d = start(&env, &cfg);
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    cli(&["prompts", "add", "good", "good"]).ok();
    cli(&["prompts", "add", "bad", "bad"]).ok();
    cli(&[
        "jobs",
        "add",
        "nightly",
        "--prompt",
        "bad",
        "--cron",
        "0 3 * * *",
    ])
    .ok();

    // Without --wait: the id at once; the run goes on in the daemon.
    let started = cli(&["prompts", "run", "good"]);
    started.ok().stdout_has("started execution 1");
    wait_for(
        &env,
        "SELECT status FROM job_executions WHERE id = 1;",
        "completed",
        Duration::from_secs(10),
    );
    assert_eq!(rows(&env, "SELECT coalesce(scheduled_job_id, 'none'), trigger_kind, coalesce(scheduled_for, 'none') FROM job_executions WHERE id = 1;"), "none|manual|none", "a manual run of a prompt has no job, as in the original");

    // --wait follows the output and exits with the run's result.
    let waited = cli(&["prompts", "run", "good", "--wait"]);
    waited
        .ok()
        .stdout_has("started execution 2")
        .stdout_has("line one good\nline two")
        .stderr_has("to stderr");
    let failed = cli(&["jobs", "run", "nightly", "--wait"]);
    failed
        .code(1)
        .stdout_has("line one bad")
        .stderr_has("execution 3 failed: ");
    assert_eq!(rows(&env, "SELECT j.name, e.status, e.exit_code FROM job_executions e JOIN scheduled_jobs j ON j.id = e.scheduled_job_id WHERE e.id = 3;"), "nightly|failed|4");
    cli(&["jobs", "run", "nope"])
        .code(1)
        .stderr_has("no job named 'nope'");
}

#[test]
fn a_job_written_by_another_process_fires_without_a_restart() {
    let env = Env::built_in();
    let agent = script(&env, "agent.sh", "echo external");
    let cfg = config(&env, &agent, "");
    // No jobs: the scheduler has no deadline and sleeps until something changes.
    let _d = start(&env, &cfg);
    // Not within 5 s of a minute boundary, so it is planned before its first instant.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second >= 55 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
    env.sqlite(
        "INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('ext', 'ext', 'haiku', 'basic_agent');
         INSERT INTO scheduled_jobs (name, prompt_id, cron_expression, is_active) VALUES ('external', 1, '* * * * *', 1);",
    )
    .ok();
    wait_for(
        &env,
        "SELECT status || '|' || output FROM job_executions;",
        "completed|external",
        Duration::from_secs(70),
    );
}

#[test]
fn history_retention_prunes_after_a_run_and_never_touches_running_rows() {
    let env = Env::built_in();
    let agent = script(&env, "agent.sh", "echo done");
    let cfg = config(
        &env,
        &agent,
        "keep_executions_per_job = 3\nkeep_executions_days = 30\n",
    );
    let _d = start(&env, &cfg);
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    cli(&["prompts", "add", "p", "p"]).ok();
    cli(&["jobs", "add", "j", "--prompt", "p", "--cron", "0 3 * * *"]).ok();
    cli(&["jobs", "add", "k", "--prompt", "p", "--cron", "0 4 * * *"]).ok();
    // History: 10 recent finished runs of j, 2 of k, one of j from 100 days ago, one running.
    env.sqlite(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
           INSERT INTO job_executions (scheduled_job_id, prompt_id, status, scheduled_for, started_at, completed_at)
           SELECT 1, 1, 'completed', datetime('now', '-' || i || ' hours'), datetime('now', '-' || i || ' hours'), datetime('now', '-' || i || ' hours') FROM n;
         INSERT INTO job_executions (scheduled_job_id, prompt_id, status, started_at, completed_at) VALUES (2, 1, 'completed', datetime('now', '-1 hours'), datetime('now', '-1 hours'));
         INSERT INTO job_executions (scheduled_job_id, prompt_id, status, started_at, completed_at) VALUES (2, 1, 'failed', datetime('now', '-100 days'), datetime('now', '-100 days'));
         INSERT INTO job_executions (scheduled_job_id, prompt_id, status, started_at) VALUES (1, 1, 'running', datetime('now', '-200 days'));",
    )
    .ok();
    cli(&["jobs", "run", "j", "--wait"]).ok();
    // j: the 3 newest finished (the manual run among them) plus the running one; k: the old one is gone.
    wait_for(
        &env,
        "SELECT count(*) FROM job_executions WHERE scheduled_job_id = 1 AND status != 'running';",
        "3",
        Duration::from_secs(10),
    );
    assert_eq!(
        rows(
            &env,
            "SELECT count(*) FROM job_executions WHERE status = 'running';"
        ),
        "1",
        "a running row is never pruned"
    );
    assert_eq!(rows(&env, "SELECT count(*) FROM job_executions WHERE trigger_kind = 'manual' AND status = 'completed';"), "1", "the newest run is kept");
    assert_eq!(rows(&env, "SELECT min(started_at) > datetime('now', '-4 hours') FROM job_executions WHERE scheduled_job_id = 1 AND status != 'running';"), "1", "the oldest of j went first");
}

#[test]
fn sigterm_while_a_client_follows_a_manual_run_stops_promptly() {
    let env = Env::built_in();
    // The marker is written after the output: the row turns `running` before the process
    // exists, so waiting for the row alone lets SIGTERM land before the agent has printed.
    let marker = env.path().join("begun");
    let agent = script(
        &env,
        "agent.sh",
        &format!(
            "trap '' TERM; echo begun; touch {}; sleep 300",
            marker.display()
        ),
    );
    let cfg = config(&env, &agent, "");
    let d = start(&env, &cfg);
    env.cli(&["--config", &cfg, "prompts", "add", "slow", "slow"])
        .ok();
    let follower = env
        .command("silica-cron")
        .args(["--config", &cfg, "prompts", "run", "slow", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &env,
        "SELECT status FROM job_executions;",
        "running",
        Duration::from_secs(10),
    );
    wait_until(Duration::from_secs(10), "the agent printed", || {
        marker.exists()
    });
    let t = Instant::now();
    assert_eq!(d.stop(), 0);
    // kill_grace is 1 s in these tests: TERM is ignored, KILL follows.
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stopping took {:?}",
        t.elapsed()
    );
    let out = follower.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the follower is told the run did not complete"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("begun"));
    assert_eq!(
        rows(&env, "SELECT status FROM job_executions;"),
        "interrupted"
    );
    assert!(
        env_run_processes(&env).is_empty(),
        "{:?}",
        env_run_processes(&env)
    );
}

#[test]
fn a_manual_run_that_cannot_start_is_recorded_failed_not_left_pending() {
    let env = Env::built_in();
    let agent = script(&env, "agent.sh", "echo ran");
    let cfg = config(&env, &agent, "");
    let d = start(&env, &cfg);
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    cli(&["prompts", "add", "p", "x"]).ok();
    // The run's row is inserted, then marked running in a second write; another process makes
    // that second write fail, as a disk filling between the two would.
    env.sqlite(
        "CREATE TRIGGER refuse_start BEFORE UPDATE OF status ON job_executions WHEN NEW.status = 'running'
         BEGIN SELECT RAISE(ABORT, 'injected: the start cannot be written'); END;",
    )
    .ok();
    let want = "failed|could not start: injected: the start cannot be written";
    cli(&["prompts", "run", "p", "--wait"])
        .code(1)
        .stderr_has("execution 1 failed: could not start: injected: the start cannot be written");
    assert_eq!(
        rows(
            &env,
            "SELECT status || '|' || error_message FROM job_executions WHERE id = 1;"
        ),
        want,
        "the follower is answered once the failure is recorded"
    );
    cli(&["prompts", "run", "p"])
        .ok()
        .stdout_has("started execution 2");
    wait_for(
        &env,
        "SELECT status || '|' || error_message FROM job_executions WHERE id = 2;",
        want,
        Duration::from_secs(10),
    );
    assert!(
        d.log()
            .contains("cannot start the execution; recording it failed"),
        "{}",
        d.log()
    );
    // Once the cause is gone, runs start again.
    env.sqlite("DROP TRIGGER refuse_start;").ok();
    cli(&["prompts", "run", "p", "--wait"])
        .ok()
        .stdout_has("ran");
}
