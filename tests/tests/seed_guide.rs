//! The seed migration guide, run as written (with `silica-cron` for `silica cron`), with the
//! daemon down (one-shot) and up (through the socket): outputs, exit codes, the file on disk.

use silica_cron_tests::{both_ways, Env};

const HISTORY: [&str; 3] = [
    "fc0bfa77ff5a -> 34065a4cc718 (head), add priority field to prompts",
    "5d8b746712b6 -> fc0bfa77ff5a, add new feature",
    "<base> -> 5d8b746712b6, initial_cron_schema",
];
const STEP_1: &str =
    "INFO  [alembic.runtime.migration] Running upgrade  -> 5d8b746712b6, initial_cron_schema";
const STEP_2: &str = "INFO  [alembic.runtime.migration] Running upgrade 5d8b746712b6 -> fc0bfa77ff5a, add new feature";
const STEP_3: &str =
    "INFO  [alembic.runtime.migration] Running upgrade fc0bfa77ff5a -> 34065a4cc718, add priority field to prompts";

fn version(env: &Env) -> String {
    env.sqlite("SELECT version_num FROM cron_alembic_version ORDER BY 1;")
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// With a daemon the database exists at head from its start; bring it to the empty state the
/// guide's Quick Start begins from.
fn start_empty(env: &Env, daemon: bool) {
    if daemon {
        env.cli(&["migrate", "downgrade", "base"]).ok();
    }
}

#[test]
fn quick_start() {
    both_ways(|env, daemon| {
        start_empty(env, daemon);
        let s = env.cli(&["migrate", "status"]);
        s.code(1)
            .stdout_has("⚠️  Cron database needs migration")
            .stdout_has("   Run: silica-cron migrate upgrade");
        if !daemon {
            assert!(
                !env.db().exists(),
                "migrate status must not create the database file"
            );
            assert!(
                std::fs::read_dir(env.path()).unwrap().next().is_none(),
                "status created a file"
            );
        }
        let up = env.cli(&["migrate", "upgrade"]);
        up.ok().stdout_has("Upgrading cron database to head...");
        let steps: Vec<&str> = up
            .stderr
            .lines()
            .filter(|l| l.contains("Running"))
            .collect();
        assert_eq!(steps, [STEP_1, STEP_2, STEP_3], "{up}");
        env.cli(&["migrate", "status"])
            .ok()
            .stdout_has("✅ Cron database is up to date");
        // Verify Your Setup.
        assert!(env.db().is_file());
        let mut tables = env
            .sqlite(".tables")
            .ok()
            .stdout
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>();
        tables.sort();
        // The guide's four tables, plus the ledger of applied revisions' checksums (issue #3).
        assert_eq!(
            tables,
            [
                "cron_alembic_version",
                "job_executions",
                "prompts",
                "scheduled_jobs",
                "silica_cron_revision_ledger"
            ]
        );
        assert_eq!(env.cli(&["migrate", "history"]).ok().lines(), HISTORY);
    });
}

#[test]
fn daily_tasks_and_inspection() {
    both_ways(|env, _daemon| {
        env.cli(&["migrate", "upgrade"]).ok();
        assert_eq!(
            env.cli(&["migrate", "current"]).ok().lines(),
            ["34065a4cc718 (head)"]
        );
        assert_eq!(env.cli(&["migrate", "history"]).ok().lines(), HISTORY);
        assert_eq!(version(env), "34065a4cc718");
        let schema = env.sqlite(".schema prompts").ok().stdout.clone();
        assert!(
            schema.starts_with(
                "CREATE TABLE prompts (\n\tid INTEGER NOT NULL, \n\tname VARCHAR(255) NOT NULL, "
            ),
            "{schema}"
        );
        assert!(
            schema.contains("priority INTEGER NOT NULL DEFAULT 1"),
            "{schema}"
        );
        // A second upgrade at head is a silent no-op.
        let again = env.cli(&["migrate", "upgrade"]);
        again.ok();
        assert!(!again.stderr.contains("Running"), "{again}");
        env.sqlite("INSERT INTO prompts (name, description, prompt_text, model, persona) VALUES ('Daily Summary', 'd', 'p', 'haiku', 'basic_agent');").ok();
        assert_eq!(
            env.sqlite("SELECT name, priority FROM prompts;")
                .ok()
                .stdout
                .trim(),
            "Daily Summary|1"
        );
    });
}

#[test]
fn rebuild_from_scratch() {
    both_ways(|env, _daemon| {
        env.cli(&["migrate", "upgrade"]).ok();
        env.sqlite("INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('x', 'p', 'haiku', 'basic_agent');").ok();
        let r = env.cli(&["migrate", "rebuild"]);
        r.ok()
            .stdout_has(&format!(
                "🗑️  Removed existing database: {}",
                env.db().display()
            ))
            .stdout_has("🔄 Rebuilding database from migrations...")
            .stdout_has("Upgrading cron database to head...")
            .stdout_has("✅ Database rebuilt successfully from migrations");
        let steps: Vec<&str> = r.stderr.lines().filter(|l| l.contains("Running")).collect();
        assert_eq!(steps, [STEP_1, STEP_2, STEP_3], "{r}");
        assert_eq!(
            env.sqlite("SELECT count(*) FROM prompts;")
                .ok()
                .stdout
                .trim(),
            "0"
        );
        env.cli(&["migrate", "status"]).ok();
        assert_eq!(version(env), "34065a4cc718");
    });
}

#[test]
fn rebuild_is_refused_in_production() {
    let env = Env::new().with_var("SILICA_ENVIRONMENT", "production");
    env.cli(&["migrate", "upgrade"]).ok();
    env.sqlite("INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('keep', 'p', 'haiku', 'basic_agent');").ok();
    env.cli(&["migrate", "rebuild"])
        .code(1)
        .stderr_has("refused in production");
    assert_eq!(
        env.sqlite("SELECT name FROM prompts;").ok().stdout.trim(),
        "keep"
    );
}

#[test]
fn rolling_back_and_reapplying() {
    both_ways(|env, _daemon| {
        env.cli(&["migrate", "upgrade"]).ok();
        let d = env.cli(&["migrate", "downgrade", "fc0bfa77ff5a"]);
        d.ok().stdout_has("Downgrading cron database to fc0bfa77ff5a...").stderr_has(
            "INFO  [alembic.runtime.migration] Running downgrade 34065a4cc718 -> fc0bfa77ff5a, add priority field to prompts",
        );
        assert_eq!(version(env), "fc0bfa77ff5a");
        assert!(!env.sqlite(".schema prompts").stdout.contains("priority"));
        env.cli(&["migrate", "upgrade"]).ok();
        env.cli(&["migrate", "downgrade", "-2"]).ok();
        assert_eq!(version(env), "5d8b746712b6");
        env.cli(&["migrate", "downgrade", "base"])
            .ok()
            .stderr_has("Running downgrade 5d8b746712b6 -> , initial_cron_schema");
        assert_eq!(version(env), "");
        let left: Vec<String> = env
            .sqlite(".tables")
            .stdout
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(
            left,
            ["cron_alembic_version", "silica_cron_revision_ledger"],
            "only the version table and the ledger stay"
        );
        assert_eq!(
            env.sqlite("SELECT count(*) FROM silica_cron_revision_ledger;")
                .ok()
                .stdout
                .trim(),
            "0"
        );
        env.cli(&["migrate", "current"]).ok();
        assert_eq!(env.cli(&["migrate", "current"]).stdout, "");
        env.cli(&["migrate", "upgrade"]).ok();
        assert_eq!(version(env), "34065a4cc718");
    });
}

#[test]
fn testing_migrations_step_by_step() {
    both_ways(|env, daemon| {
        start_empty(env, daemon);
        env.cli(&["migrate", "upgrade", "5d8b746712b6"]).ok();
        assert_eq!(version(env), "5d8b746712b6");
        env.cli(&["migrate", "upgrade", "fc0bfa77ff5a"]).ok();
        assert_eq!(version(env), "fc0bfa77ff5a");
        env.cli(&["migrate", "upgrade", "head"]).ok();
        assert_eq!(version(env), "34065a4cc718");
        env.cli(&["migrate", "downgrade", "fc0bfa77ff5a"]).ok();
        env.cli(&["migrate", "downgrade", "5d8b746712b6"]).ok();
        assert_eq!(version(env), "5d8b746712b6");
        env.cli(&["migrate", "upgrade"]).ok();
        env.cli(&["migrate", "downgrade", "-1"]).ok();
        assert_eq!(version(env), "fc0bfa77ff5a");
        env.cli(&["migrate", "upgrade"]).ok();
        assert_eq!(
            env.sqlite("PRAGMA integrity_check;").ok().stdout.trim(),
            "ok"
        );
        assert_eq!(
            env.sqlite("PRAGMA foreign_key_check;").ok().stdout.trim(),
            ""
        );
    });
}

#[test]
fn data_survives_the_priority_migration() {
    both_ways(|env, _daemon| {
        env.cli(&["migrate", "upgrade", "fc0bfa77ff5a"]).ok();
        env.sqlite(
            "INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('a', 'p', 'haiku', 'basic_agent');
             INSERT INTO scheduled_jobs (name, prompt_id, cron_expression, is_active) VALUES ('j', 1, '* * * * *', 1);
             INSERT INTO job_executions (scheduled_job_id, status) VALUES (1, 'completed');",
        )
        .ok();
        env.cli(&["migrate", "upgrade"]).ok();
        assert_eq!(env.sqlite("SELECT p.name, p.priority, j.name, e.status FROM prompts p JOIN scheduled_jobs j ON j.prompt_id = p.id JOIN job_executions e ON e.scheduled_job_id = j.id;").ok().stdout.trim(), "a|1|j|completed");
        env.cli(&["migrate", "downgrade", "-1"]).ok();
        assert_eq!(
            env.sqlite("SELECT count(*) FROM prompts;")
                .ok()
                .stdout
                .trim(),
            "1"
        );
    });
}

#[test]
fn production_upgrade_and_status() {
    let env = Env::new().with_var("SILICA_ENVIRONMENT", "production");
    env.cli(&["migrate", "upgrade"]).ok();
    env.cli(&["migrate", "current"])
        .ok()
        .stdout_has("34065a4cc718 (head)");
    env.cli(&["migrate", "status"])
        .ok()
        .stdout_has("✅ Cron database is up to date");
    env.cli(&["migrate", "downgrade", "-1"])
        .ok()
        .stderr_has("Downgrading a production database");
}

#[test]
fn stamp_only_marks_without_running() {
    both_ways(|env, daemon| {
        start_empty(env, daemon);
        env.cli(&["migrate", "upgrade", "fc0bfa77ff5a"]).ok();
        env.sqlite("ALTER TABLE prompts ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;")
            .ok();
        // The guide's fix for "table/column already exists": record it as applied.
        env.cli(&["migrate", "upgrade", "--stamp-only"])
            .ok()
            .stderr_has("Running stamp_revision fc0bfa77ff5a -> 34065a4cc718");
        assert_eq!(version(env), "34065a4cc718");
        env.cli(&["migrate", "status"]).ok();
    });
}
