//! `silica-cron prompts|jobs|executions` against a real daemon on the built-in revisions.

use std::io::Write;
use std::process::Stdio;

use silica_cron_tests::Env;

fn json(out: &silica_cron_tests::Out) -> serde_json::Value {
    serde_json::from_str(&out.ok().stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn prompts_jobs_and_executions_through_the_daemon() {
    let env = Env::built_in();
    let _d = env.start_daemon(&[]);

    // Prompt text as an argument, from a file, and from stdin.
    env.cli(&[
        "prompts",
        "add",
        "Daily Summary",
        "Summarise today",
        "--priority",
        "2",
        "--description",
        "daily",
    ])
    .ok();
    std::fs::write(env.path().join("p.txt"), "from a file\n").unwrap();
    env.cli(&[
        "prompts", "add", "filed", "--file", "p.txt", "--model", "sonnet",
    ])
    .ok();
    let mut child = env
        .command("silica-cron")
        .args(["prompts", "add", "piped"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let prompts = json(&env.cli(&["prompts", "list", "--json"]));
    let names: Vec<&str> = prompts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Daily Summary", "filed", "piped"],
        "highest priority first, then by name"
    );
    assert_eq!(
        prompts[1]["prompt_text"], "from a file",
        "stored without surrounding whitespace"
    );
    assert_eq!(prompts[1]["model"], "sonnet");
    assert_eq!(prompts[2]["prompt_text"], "from stdin");
    assert_eq!(prompts[2]["persona"], "basic_agent");
    assert_eq!(
        env.sqlite("SELECT priority FROM prompts WHERE name = 'piped';")
            .ok()
            .stdout
            .trim(),
        "1"
    );

    // Bad input: named, exit 1, nothing written.
    env.cli(&["prompts", "add", "Daily Summary", "again"])
        .code(1)
        .stderr_has("a prompt named 'Daily Summary' exists already");
    env.cli(&["prompts", "add", "x", "y", "--priority", "4"])
        .code(1)
        .stderr_has("priority 4 is out of range");
    env.cli(&["prompts", "show", "nope"])
        .code(1)
        .stderr_has("no prompt named 'nope'");
    env.cli(&["jobs", "add", "j", "--prompt", "nope", "--cron", "@daily"])
        .code(1)
        .stderr_has("no prompt named 'nope'");
    env.cli(&[
        "jobs",
        "add",
        "j",
        "--prompt",
        "piped",
        "--cron",
        "0 0 30 2 *",
    ])
    .code(1)
    .stderr_has("can never fire");
    env.cli(&[
        "jobs",
        "add",
        "j",
        "--prompt",
        "piped",
        "--cron",
        "61 * * * *",
    ])
    .code(1)
    .stderr_has("minute: 61 is out of range");
    env.cli(&[
        "jobs",
        "add",
        "j",
        "--prompt",
        "piped",
        "--cron",
        "@daily",
        "--tz",
        "Mars/Base",
    ])
    .code(1)
    .stderr_has("unknown time zone 'Mars/Base'");
    env.cli(&[
        "jobs",
        "add",
        "j",
        "--prompt",
        "piped",
        "--cron",
        "@daily",
        "--overlap",
        "sometimes",
    ])
    .code(1)
    .stderr_has("overlap policy 'sometimes' is not one of: skip, allow, replace");
    env.cli(&[
        "jobs",
        "add",
        "j",
        "--prompt",
        "piped",
        "--cron",
        "@daily",
        "--timeout=-5",
    ])
    .code(1)
    .stderr_has("must be a positive number");
    assert_eq!(
        env.sqlite("SELECT count(*) FROM scheduled_jobs;")
            .ok()
            .stdout
            .trim(),
        "0"
    );

    // Jobs.
    let job = json(&env.cli(&[
        "jobs",
        "add",
        "daily",
        "--prompt",
        "Daily Summary",
        "--cron",
        "30 9 * * 1-5",
        "--tz",
        "America/New_York",
        "--timeout",
        "60",
        "--missed",
        "catch-up",
        "--json",
    ]));
    assert_eq!(job["timezone"], "America/New_York");
    assert_eq!(job["timeout_seconds"], 60);
    assert_eq!(job["missed_policy"], "catch-up");
    assert_eq!(job["overlap_policy"], "skip");
    let next = job["next_fire"].as_str().unwrap();
    assert!(
        next.ends_with("-05:00") || next.ends_with("-04:00"),
        "{next}"
    );
    assert!(next.contains("T09:30:00"), "{next}");
    let instants: Vec<String> = serde_json::from_value(json(
        &env.cli(&["jobs", "next", "daily", "-n", "10", "--json"]),
    ))
    .unwrap();
    assert_eq!(instants.len(), 10);
    assert!(
        instants
            .windows(2)
            .all(|w| w[0] < w[1] || w[0][..10] != w[1][..10]),
        "{instants:?}"
    );
    env.cli(&["jobs", "list"])
        .ok()
        .stdout_has("daily")
        .stdout_has("America/New_York")
        .stdout_has(next);
    let edited = json(&env.cli(&[
        "jobs", "edit", "daily", "--cron", "@hourly", "--tz", "", "--json",
    ]));
    assert_eq!(edited["cron_expression"], "@hourly");
    assert_eq!(edited["timezone"], serde_json::Value::Null);
    assert_eq!(
        json(&env.cli(&["jobs", "disable", "daily", "--json"]))["is_active"],
        false
    );
    assert_eq!(
        json(&env.cli(&["jobs", "show", "daily", "--json"]))["next_fire"],
        serde_json::Value::Null
    );
    assert_eq!(
        json(&env.cli(&["jobs", "enable", "1", "--json"]))["is_active"],
        true,
        "by id too"
    );
    assert_eq!(
        json(&env.cli(&["prompts", "show", "Daily Summary", "--json"]))["jobs"],
        serde_json::json!(["daily"])
    );

    // Executions (rows written as the scheduler will write them).
    env.sqlite(
        "INSERT INTO job_executions (scheduled_job_id, status, trigger_kind, scheduled_for, started_at, completed_at, exit_code, output, session_id)
           VALUES (1, 'completed', 'schedule', '2026-01-05 14:30:00', '2026-01-05 14:30:00', '2026-01-05 14:30:01.250', 0, 'done', 'sess-1');
         INSERT INTO job_executions (scheduled_job_id, status, trigger_kind, started_at, completed_at, exit_code, error_message)
           VALUES (1, 'failed', 'manual', '2026-01-06 10:00:00', '2026-01-06 10:00:03', 2, 'exit 2');
         INSERT INTO job_executions (prompt_id, status, trigger_kind, started_at) VALUES (3, 'running', 'manual', '2026-01-07 10:00:00');",
    )
    .ok();
    let all = json(&env.cli(&["executions", "list", "--json"]));
    let ids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2, 1], "newest first");
    assert_eq!(
        all[0]["prompt"], "piped",
        "a manual run without a job names its prompt"
    );
    assert_eq!(
        json(&env.cli(&[
            "executions",
            "list",
            "--job",
            "daily",
            "--status",
            "failed",
            "--json"
        ]))
        .as_array()
        .unwrap()
        .len(),
        1
    );
    assert_eq!(
        json(&env.cli(&["executions", "list", "--prompt", "Daily Summary", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        json(&env.cli(&["executions", "list", "--limit", "1", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let one = json(&env.cli(&["executions", "show", "1", "--json"]));
    assert_eq!(one["duration_ms"], 1250);
    assert_eq!(one["output"], "done");
    assert_eq!(one["session_id"], "sess-1");
    env.cli(&["executions", "show", "99"])
        .code(1)
        .stderr_has("no execution with id 99");

    // Removal says what depends on it; --force cascades.
    env.cli(&["jobs", "rm", "daily"])
        .code(1)
        .stderr_has("has 2 execution(s) of history");
    env.cli(&["prompts", "rm", "Daily Summary"])
        .code(1)
        .stderr_has("used by 1 job(s) (daily)");
    env.cli(&["prompts", "rm", "Daily Summary", "--force"])
        .ok()
        .stdout_has("removed prompt Daily Summary, with job daily, 2 execution(s)");
    assert_eq!(
        env.sqlite("SELECT count(*) FROM scheduled_jobs; SELECT count(*) FROM job_executions;")
            .ok()
            .stdout,
        "0\n1\n"
    );
    assert_eq!(env.sqlite("PRAGMA foreign_key_check;").ok().stdout, "");
}

#[test]
fn records_need_the_scheduler_schema_and_a_daemon() {
    // The original chain stops before the revision that shapes the tables for jobs.
    let env = Env::new();
    let _d = env.start_daemon(&[]);
    env.cli(&["prompts", "list"])
        .code(1)
        .stderr_has("prompts and jobs need revision 57249ff23536 or later");
    // No daemon: say so, exit 3.
    let none = Env::built_in();
    none.cli(&["jobs", "list"])
        .code(3)
        .stderr_has("silica-crond is not running");
}
