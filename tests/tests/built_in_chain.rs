//! The revisions built into silica-crond (migrations/versions, whatever their head): they apply
//! from empty, go down to base and up again, match schema.sql, and a daemon creates its database
//! at their head. The other test files pin the original chain (tests/fixtures/original-chain).

use silica_cron_tests::{root, Env};

/// The head of migrations/versions, read from the files themselves.
fn built_in_head() -> String {
    let env = Env::built_in();
    let heads = env.cli(&["migrate", "heads"]).ok().stdout.clone();
    let lines: Vec<&str> = heads.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "the built-in revisions must have one head: {heads}"
    );
    let head = lines[0].split_whitespace().next().unwrap().to_string();
    let files: Vec<String> = std::fs::read_dir(root().join("migrations/versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.contains(&head)),
        "{head} not among {files:?}"
    );
    head
}

#[test]
fn built_in_chain_round_trips_and_matches_schema_sql() {
    let head = built_in_head();
    let env = Env::built_in();
    env.cli(&["migrate", "check"])
        .ok()
        .stdout_has("No new upgrade operations detected.");
    env.cli(&["migrate", "upgrade"]).ok();
    env.cli(&["migrate", "current"])
        .ok()
        .stdout_has(&format!("{head} (head)"));
    env.sqlite("INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('p', 't', 'haiku', 'basic_agent');").ok();
    env.cli(&["migrate", "downgrade", "34065a4cc718"]).ok();
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(
        env.sqlite("SELECT name, priority FROM prompts;")
            .ok()
            .stdout
            .trim(),
        "p|1"
    );
    env.cli(&["migrate", "downgrade", "base"]).ok();
    env.cli(&["migrate", "upgrade"]).ok();
    env.cli(&["migrate", "status"]).ok();
    assert_eq!(
        env.sqlite("PRAGMA integrity_check;").ok().stdout.trim(),
        "ok"
    );
}

#[test]
fn daemon_creates_the_database_at_the_built_in_head() {
    let head = built_in_head();
    let env = Env::built_in();
    let _d = env.start_daemon(&[]);
    let status: serde_json::Value =
        serde_json::from_str(&env.cli(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(status["revisions"], serde_json::json!([head]));
    assert_eq!(status["at_head"], true);
    assert_eq!(status["scheduler"], "running");
    env.cli(&["migrate", "status"]).ok();
}

#[test]
fn scheduling_starts_by_itself_once_the_database_is_upgraded() {
    let env = Env::built_in();
    env.cli(&["migrate", "upgrade", "34065a4cc718"]).ok();
    let _d = env.start_daemon(&[]);
    env.cli(&["status"])
        .ok()
        .stdout_has("scheduler:   held: needs migration\n");
    env.cli(&["prompts", "list"])
        .code(1)
        .stderr_has("needs migration");
    env.cli(&["migrate", "upgrade"]).ok();
    env.cli(&["status"])
        .ok()
        .stdout_has("scheduler:   running\n");
    env.cli(&["prompts", "add", "p", "text"]).ok();
}
