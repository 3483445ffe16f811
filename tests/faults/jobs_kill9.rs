//! Scenario 2: kill -9 of the daemon while jobs run, 20 times (50 with `SILICA_CRON_FAULTS_LONG=1`),
//! at random instants while manual runs are being requested and scheduled runs (a minutely
//! job whose run leaves a `setsid` grandchild, a minutely `catch-up` job) are in flight. After
//! every restart: each run left unfinished is `interrupted` and none of its processes lives,
//! every execution id a client was told and every row seen before the kill is still there, and
//! no (job, scheduled instant) has two rows. The loop goes on past the count until a scheduled
//! run has been interrupted at least once, so a minute boundary is always crossed.

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use silica_cron_tests::client::{finish, wait_until};
use silica_cron_tests::jobs::{config, env_run_processes, rows, script};
use silica_cron_tests::report::Scenario;
use silica_cron_tests::Env;

use crate::common::{cli, iterations, started_id, Rng};

fn ids(env: &Env, sql: &str) -> BTreeSet<i64> {
    rows(env, sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap())
        .collect()
}

fn duplicates(env: &Env) -> String {
    rows(
        env,
        "SELECT scheduled_job_id || '@' || scheduled_for FROM job_executions WHERE scheduled_for IS NOT NULL
         GROUP BY scheduled_job_id, scheduled_for HAVING count(*) > 1;",
    )
}

#[test]
fn kill_9_during_job_runs() {
    let mut sc = Scenario::start("2", "kill -9 of the daemon during job runs");
    let env = Env::built_in();
    let agent = script(
        &env,
        "agent.sh",
        r#"case "$1" in
  tree) (setsid sh -c 'trap "" TERM; sleep 300' &); sleep 300 ;;
  short) echo short; sleep 0.3 ;;
  *) echo "$1"; sleep 300 ;;
esac"#,
    );
    let cfg = config(&env, &agent, "");
    let args = ["--config", cfg.as_str()];
    let mut daemon = Some(env.start_daemon(&args));
    for p in ["tree", "short", "long"] {
        cli(&env, &cfg, &["prompts", "add", p, p]).ok();
    }
    cli(
        &env,
        &cfg,
        &[
            "jobs",
            "add",
            "minutely",
            "--prompt",
            "tree",
            "--cron",
            "* * * * *",
        ],
    )
    .ok();
    cli(
        &env,
        &cfg,
        &[
            "jobs",
            "add",
            "catchup",
            "--prompt",
            "short",
            "--cron",
            "* * * * *",
            "--missed",
            "catch-up",
        ],
    )
    .ok();

    let n = iterations(20, 50);
    sc.tried(format!(
        "{n} kill -9s at random instants (0-1.5 s after 3 manual runs were requested), a restart after each"
    ));
    let mut rng = Rng::new(2);
    let mut told = BTreeSet::new();
    let mut interrupted_total = 0usize;
    let hard_stop = Instant::now() + Duration::from_secs(200);
    let scheduled_interrupted = |env: &Env| -> usize {
        rows(env, "SELECT count(*) FROM job_executions WHERE trigger_kind = 'schedule' AND status = 'interrupted';")
            .parse()
            .unwrap()
    };
    let mut i = 0;
    while i < n || (scheduled_interrupted(&env) == 0 && Instant::now() < hard_stop) {
        let prompts = ["tree", "short", "long"];
        let clients: Vec<Child> = (0..3)
            .map(|k| {
                env.command("silica-cron")
                    .args([
                        "--config",
                        &cfg,
                        "prompts",
                        "run",
                        prompts[(i as usize + k) % 3],
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(rng.delay(Duration::from_millis(1500)));
        daemon.take().unwrap().kill9();
        for c in clients {
            let out = finish(c, Duration::from_secs(30));
            if out.code == 0 {
                told.insert(started_id(&out.stdout).unwrap_or_else(|| panic!("{out}")));
            } else {
                // Refused or cut off: it must say the daemon is gone, never claim a run.
                assert!(started_id(&out.stdout).is_none(), "{out}");
            }
        }
        let before = ids(&env, "SELECT id FROM job_executions;");
        let unfinished = ids(
            &env,
            "SELECT id FROM job_executions WHERE status IN ('pending', 'running');",
        );
        let max_before = before.last().copied().unwrap_or(0);

        let t0 = Instant::now();
        daemon = Some(env.start_daemon(&args));
        let list = unfinished
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        wait_until(
            Duration::from_secs(20),
            "runs left unfinished are marked interrupted",
            || {
                rows(
                    &env,
                    &format!("SELECT count(*) FROM job_executions WHERE id IN ({list}) AND status != 'interrupted';"),
                ) == "0"
            },
        );
        wait_until(
            Duration::from_secs(20),
            "no process of a run of the killed daemon survives",
            || {
                env_run_processes(&env)
                    .iter()
                    .all(|p| p.execution_id().is_some_and(|id| id > max_before))
            },
        );
        sc.recovery(t0.elapsed());
        interrupted_total += unfinished.len();

        let after = ids(&env, "SELECT id FROM job_executions;");
        assert!(
            before.is_subset(&after),
            "iteration {i}: rows lost: {:?}",
            before.difference(&after).collect::<Vec<_>>()
        );
        assert!(
            told.is_subset(&after),
            "iteration {i}: executions a client was told of are missing: {:?}",
            told.difference(&after).collect::<Vec<_>>()
        );
        assert_eq!(duplicates(&env), "", "iteration {i}: an instant ran twice");
        sc.iteration();
        i += 1;
    }
    let scheduled = scheduled_interrupted(&env);
    assert!(
        scheduled > 0,
        "no scheduled run was in flight at any kill in 200 s"
    );

    // A last clean stop: nothing is left running, nothing of any run lives.
    assert_eq!(daemon.take().unwrap().stop(), 0);
    assert_eq!(
        rows(
            &env,
            "SELECT count(*) FROM job_executions WHERE status IN ('pending', 'running');"
        ),
        "0"
    );
    wait_until(
        Duration::from_secs(10),
        "no run process after the stop",
        || env_run_processes(&env).is_empty(),
    );
    assert_eq!(duplicates(&env), "");
    let total = rows(&env, "SELECT count(*) FROM job_executions;");
    sc.held(format!(
        "{interrupted_total} runs left unfinished by kills (scheduled among them: {scheduled}) all marked interrupted, none of their processes alive after restart"
    ));
    sc.held(format!(
        "{} executions clients were told of and all {total} rows kept; no (job, instant) twice",
        told.len()
    ));
    sc.pass();
}
