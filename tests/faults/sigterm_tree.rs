//! Scenario 3: SIGTERM while runs are in progress, one of them a process tree whose `setsid` grandchild
//! ignores SIGTERM (it left the run's process group, so `killpg` alone misses it): the daemon
//! exits 0 within its kill grace plus a margin, every run is recorded `interrupted`, and no
//! process of any run is left. Three rounds on the same database (5 with
//! `SILICA_CRON_FAULTS_LONG=1`).

use std::path::Path;
use std::time::{Duration, Instant};

use silica_cron_tests::client::wait_until;
use silica_cron_tests::jobs::{config, env_run_processes, rows, script, wait_for};
use silica_cron_tests::report::Scenario;
use silica_cron_tests::Env;

use crate::common::{cli, iterations};

/// Seconds between SIGTERM and SIGKILL for a run, in this scenario's config.
const GRACE: u64 = 2;

#[test]
fn sigterm_with_running_jobs_and_an_escaped_grandchild() {
    let mut sc = Scenario::start(
        "3",
        "SIGTERM with running jobs, one a tree with a setsid grandchild ignoring TERM",
    );
    let env = Env::built_in();
    let dir = env.path().display().to_string();
    let agent = script(
        &env,
        "agent.sh",
        &format!(
            r#"case "$1" in
  tree) sh -c 'sleep 300 & sleep 300 & wait' &
        (setsid sh -c 'trap "" TERM; echo $$ > {dir}/grandchild-'"$2"'.pid; while :; do sleep 1; done' &)
        sleep 300 ;;
  stubborn) trap '' TERM; echo stubborn; while :; do sleep 1; done ;;
  *) echo plain; sleep 300 ;;
esac"#
        ),
    );
    let cfg = config(&env, &agent, &format!("kill_grace = {GRACE}\n"));
    let rounds = iterations(3, 5);
    sc.tried(format!(
        "{rounds} rounds: 3 runs (a tree with a setsid grandchild ignoring TERM, a run ignoring TERM, a plain sleep), then SIGTERM to the daemon (kill_grace {GRACE} s)"
    ));
    let mut worst_stop = Duration::ZERO;
    for round in 0..rounds {
        let d = env.start_daemon(&["--config", &cfg]);
        if round == 0 {
            for p in ["tree", "stubborn", "plain"] {
                cli(&env, &cfg, &["prompts", "add", p, p]).ok();
            }
        }
        let before: i64 = rows(&env, "SELECT count(*) FROM job_executions;")
            .parse()
            .unwrap();
        let mut sessions = Vec::new();
        for p in ["tree", "stubborn", "plain"] {
            cli(&env, &cfg, &["prompts", "run", p]).ok();
        }
        wait_for(
            &env,
            &format!(
                "SELECT count(*) FROM job_executions WHERE status = 'running' AND id > {before};"
            ),
            "3",
            Duration::from_secs(10),
        );
        let tree_session = rows(
            &env,
            &format!("SELECT session_id FROM job_executions e JOIN prompts p ON p.id = e.prompt_id WHERE p.name = 'tree' AND e.id > {before};"),
        );
        let pid_file = Path::new(&dir).join(format!("grandchild-{tree_session}.pid"));
        wait_until(
            Duration::from_secs(10),
            "the grandchild wrote its pid",
            || std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')),
        );
        let grandchild = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        assert!(Path::new(&format!("/proc/{grandchild}")).exists());
        sessions.push(tree_session);
        let alive = env_run_processes(&env).len();
        assert!(alive >= 6, "round {round}: only {alive} run processes");

        let t = Instant::now();
        let code = {
            let mut d = d;
            d.signal(libc::SIGTERM);
            let code = d.wait(Duration::from_secs(GRACE + 15));
            assert!(
                code.is_some(),
                "round {round}: no stop in {} s:\n{}",
                GRACE + 15,
                d.log()
            );
            code.unwrap()
        };
        let took = t.elapsed();
        worst_stop = worst_stop.max(took);
        assert_eq!(code, 0, "round {round}: exit code");
        // The grace, plus generous room for a loaded 2-core machine.
        assert!(
            took < Duration::from_secs(GRACE + 8),
            "round {round}: stopping took {took:?} with a kill grace of {GRACE} s"
        );
        let left = env_run_processes(&env);
        assert!(left.is_empty(), "round {round}: processes left: {left:?}");
        assert!(
            !Path::new(&format!("/proc/{grandchild}")).exists()
                || std::fs::read_to_string(format!("/proc/{grandchild}/stat")).is_ok_and(|s| s
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))),
            "round {round}: the setsid grandchild {grandchild} survived"
        );
        assert_eq!(
            rows(
                &env,
                &format!("SELECT group_concat(status) FROM job_executions WHERE id > {before};")
            ),
            "interrupted,interrupted,interrupted",
            "round {round}"
        );
        sc.iteration();
    }
    sc.recovery(worst_stop);
    sc.held(format!(
        "every stop exited 0 within {:.1} s (grace {GRACE} s); {} runs recorded interrupted; no process of any run (grandchild included) left",
        worst_stop.as_secs_f64(),
        rounds * 3
    ));
    sc.pass();
}
