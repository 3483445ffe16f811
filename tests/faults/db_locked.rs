//! Scenario 5: the database locked by another process: a `sqlite3` shell holds `BEGIN EXCLUSIVE`
//! for 10 s across a minute boundary, while a run ends, a minutely job falls due, and clients
//! add prompts, start runs and ask for status. Status is answered (once the lock is gone at the
//! latest: it queues behind the writes waiting for the lock); every write
//! request either succeeds (and is in the database) or fails with a message that says the
//! database is locked (and is not); the run's end and the due instant are recorded once the
//! lock is gone; the daemon keeps serving and firing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use silica_cron_tests::client::{assert_serving, finish};
use silica_cron_tests::jobs::{config, rows, script, wait_for};
use silica_cron_tests::report::Scenario;
use silica_cron_tests::Env;

use crate::common::{cli, second_of_minute, started_id};

const HOLD: Duration = Duration::from_secs(10);

fn spawn_cli(env: &Env, cfg: &str, args: &[&str]) -> Child {
    env.command("silica-cron")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A failed write request must say why in words an operator understands.
#[track_caller]
fn clear_lock_message(out: &silica_cron_tests::Out) {
    let e = out.stderr.to_lowercase();
    assert!(
        e.contains("locked") || e.contains("busy"),
        "a failure that does not name the lock:\n{out}"
    );
}

#[test]
fn an_exclusive_lock_held_by_another_process() {
    let mut sc = Scenario::start("5", "the database locked by another process for 10 s");
    let env = Env::built_in();
    let agent = script(
        &env,
        "agent.sh",
        r#"case "$1" in
  short) sleep 3; echo short-done ;;
  *) echo "$1" ;;
esac"#,
    );
    let cfg = config(&env, &agent, "");
    let mut d = env.start_daemon(&["--config", &cfg]);
    for p in ["short", "tick"] {
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
            "tick",
            "--cron",
            "* * * * *",
        ],
    )
    .ok();
    // The lock goes on at second 54-56, so the next minute's instant falls due under it.
    while !(54..=56).contains(&second_of_minute()) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let before_due: i64 = rows(
        &env,
        "SELECT count(*) FROM job_executions WHERE trigger_kind = 'schedule';",
    )
    .parse()
    .unwrap();
    let short = cli(&env, &cfg, &["prompts", "run", "short"]);
    short.ok();
    let short_id = started_id(&short.stdout).unwrap();

    sc.tried("sqlite3 holding BEGIN EXCLUSIVE for 10 s across a minute boundary; meanwhile a run ends, a minutely job falls due, 3 prompts add, 1 prompts run and 3 status requests");
    let mut shell = Command::new("sqlite3")
        .arg(env.db())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = shell.stdin.take().unwrap();
    input
        .write_all(b".timeout 20000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let locked_at = Instant::now();

    let adds: Vec<(String, Child)> = (0..3)
        .map(|i| {
            let name = format!("during-lock-{i}");
            let c = spawn_cli(&env, &cfg, &["prompts", "add", &name, "text"]);
            (name, c)
        })
        .collect();
    let run = spawn_cli(&env, &cfg, &["prompts", "run", "tick"]);
    let statuses: Vec<(Instant, Child)> = (0..3)
        .map(|_| (Instant::now(), spawn_cli(&env, &cfg, &["status"])))
        .collect();
    std::thread::sleep(HOLD.saturating_sub(locked_at.elapsed()));
    input.write_all(b"COMMIT;\n.quit\n").unwrap();
    drop(input);
    let released_at = Instant::now();
    assert!(shell.wait().unwrap().success());
    sc.iterations(1);

    // Status waits behind the write requests queued on the daemon's connection; each is
    // answered once the lock is gone.
    let mut status_worst = Duration::ZERO;
    for (t, c) in statuses {
        finish(c, Duration::from_secs(60)).ok();
        status_worst = status_worst.max(t.elapsed());
    }
    let mut added = 0;
    let mut refused = 0;
    for (name, c) in adds {
        let out = finish(c, Duration::from_secs(30));
        let present = rows(
            &env,
            &format!("SELECT count(*) FROM prompts WHERE name = '{name}';"),
        );
        if out.code == 0 {
            assert_eq!(present, "1", "{name} reported added but is missing");
            added += 1;
        } else {
            clear_lock_message(&out);
            assert_eq!(present, "0", "{name} reported failed but is there");
            refused += 1;
        }
    }
    let run = finish(run, Duration::from_secs(30));
    let run_note = if run.code == 0 {
        let id = started_id(&run.stdout).unwrap();
        wait_for(
            &env,
            &format!("SELECT status FROM job_executions WHERE id = {id};"),
            "completed",
            Duration::from_secs(20),
        );
        "started and completed"
    } else {
        clear_lock_message(&run);
        "refused naming the lock"
    };

    // The run that ended under the lock, and the instant that fell due under it.
    wait_for(
        &env,
        &format!("SELECT status || '|' || output FROM job_executions WHERE id = {short_id};"),
        "completed|short-done",
        Duration::from_secs(20),
    );
    wait_for(
        &env,
        "SELECT count(*) FROM job_executions WHERE trigger_kind = 'schedule' AND status = 'completed';",
        &(before_due + 1).to_string(),
        Duration::from_secs(30),
    );
    let recovered = released_at.elapsed();
    sc.recovery(recovered);
    assert_eq!(
        rows(&env, "SELECT count(*) FROM (SELECT 1 FROM job_executions WHERE scheduled_for IS NOT NULL GROUP BY scheduled_job_id, scheduled_for HAVING count(*) > 1);"),
        "0"
    );
    assert_serving(&env, &mut d);
    cli(&env, &cfg, &["prompts", "run", "tick", "--wait"]).ok();
    sc.held(format!(
        "status answered (the slowest {:.1} s after it was asked, the lock held {HOLD:?}); prompts add: {added} succeeded and are stored, {refused} refused naming the lock and absent; prompts run: {run_note}",
        status_worst.as_secs_f64()
    ));
    sc.held(format!(
        "the run that ended under the lock recorded completed with its output, the instant due under it fired once; all within {:.1} s of the release; the daemon serves and fires after",
        recovered.as_secs_f64()
    ));
    sc.pass();
}
