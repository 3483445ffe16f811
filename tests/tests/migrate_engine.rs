//! The migration engine's edges: branches and merges, bad targets, failing and malformed
//! revisions, offline SQL, JSON. Revision files come from a temp `--migrations-dir`.

use std::path::{Path, PathBuf};

use silica_cron_tests::{run, Env};

/// A migrations dir holding the built-in revisions plus `extra` (file name, text).
fn migrations_dir(env: &Env, extra: &[(&str, String)]) -> PathBuf {
    let dir = env.path().join("migrations/versions");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(silica_cron_tests::original_chain().join("versions")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.join(name), text).unwrap();
    }
    env.path().join("migrations")
}

fn revision(id: &str, parents: &str, message: &str, date: &str, up: &str, down: &str) -> String {
    format!(
        "-- {message}\n--\n-- Revision ID: {id}\n-- Revises: {parents}\n-- Create Date: {date}\n\n-- migrate:upgrade\n{up}\n\n-- migrate:downgrade\n{down}\n"
    )
}

/// 34065a4cc718 branches into b1 (tags table) and b2 (owner column); c3 merges them.
fn branched(env: &Env, with_merge: bool) -> PathBuf {
    let mut extra = vec![
        (
            "20260101_0000_b1b1b1b1b1b1_add_tags.sql",
            revision("b1b1b1b1b1b1", "34065a4cc718", "add tags", "2026-01-01 00:00:00", "CREATE TABLE tags (\n\tid INTEGER NOT NULL, \n\tname VARCHAR(50), \n\tPRIMARY KEY (id)\n);", "DROP TABLE tags;"),
        ),
        (
            "20260101_0001_b2b2b2b2b2b2_add_owner.sql",
            revision("b2b2b2b2b2b2", "34065a4cc718", "add owner", "2026-01-01 00:01:00", "ALTER TABLE prompts ADD COLUMN owner VARCHAR(50);", "ALTER TABLE prompts DROP COLUMN owner;"),
        ),
    ];
    if with_merge {
        extra.push((
            "20260102_0000_c3c3c3c3c3c3_merge_tags_and_owner.sql",
            revision(
                "c3c3c3c3c3c3",
                "b1b1b1b1b1b1, b2b2b2b2b2b2",
                "merge tags and owner",
                "2026-01-02 00:00:00",
                "",
                "",
            ),
        ));
    }
    migrations_dir(env, &extra)
}

fn versions(env: &Env) -> String {
    env.sqlite("SELECT group_concat(version_num, ',') FROM (SELECT version_num FROM cron_alembic_version ORDER BY 1);")
        .ok()
        .stdout
        .trim()
        .to_string()
}

fn with_dir(env: Env, dir: &Path) -> Env {
    env.with_var("SILICA_CRON_MIGRATIONS", dir.to_str().unwrap())
}

#[test]
fn bad_targets_are_clear_errors_that_change_nothing() {
    let env = Env::new();
    env.cli(&["migrate", "upgrade", "fc0bfa77ff5a"]).ok();
    let cases: &[(&[&str], &str)] = &[
        (
            &["migrate", "upgrade", "deadbeef"],
            "Can't locate revision identified by 'deadbeef'",
        ),
        (
            &["migrate", "upgrade", "+5"],
            "Relative revision +5 didn't produce 5 migrations",
        ),
        (
            &["migrate", "downgrade", "-3"],
            "Relative revision -3 didn't produce 3 migrations",
        ),
        (&["migrate", "upgrade", "-1"], "use downgrade -1"),
        (&["migrate", "downgrade", "+1"], "use upgrade +1"),
        (
            &["migrate", "downgrade", "34065a4cc718"],
            "Destination 34065a4cc718 is not a valid downgrade target from current head(s)",
        ),
        (
            &["migrate", "show", "zz"],
            "Can't locate revision identified by 'zz'",
        ),
        (
            &["migrate", "downgrade", "base", "--sql"],
            "downgrade with --sql requires <fromrev>:<torev>",
        ),
    ];
    for (args, msg) in cases {
        let out = env.cli(args);
        out.code(1).stderr_has(msg);
        assert!(out.stderr.contains("FAILED: "), "{out}");
        assert_eq!(
            versions(&env),
            "fc0bfa77ff5a",
            "{args:?} changed the database"
        );
    }
    // Usage errors are exit 2.
    env.cli(&["migrate", "downgrade"]).code(2);
    env.cli(&["migrate", "frobnicate"]).code(2);
}

#[test]
fn ambiguous_prefix_lists_candidates() {
    let env = Env::new();
    let dir = branched(&env, true);
    let env = with_dir(env, &dir);
    env.cli(&["migrate", "upgrade", "34065a4cc718"]).ok();
    let out = env.cli(&["migrate", "upgrade", "b"]);
    out.code(1)
        .stderr_has("ambiguous")
        .stderr_has("b1b1b1b1b1b1 (add tags)")
        .stderr_has("b2b2b2b2b2b2 (add owner)");
    assert_eq!(versions(&env), "34065a4cc718");
    // A unique prefix works, even one character.
    env.cli(&["migrate", "upgrade", "b1"]).ok();
    assert_eq!(versions(&env), "b1b1b1b1b1b1");
}

#[test]
fn multiple_heads_need_heads() {
    let env = Env::new();
    let dir = branched(&env, false);
    let env = with_dir(env, &dir);
    let out = env.cli(&["migrate", "upgrade"]);
    out.code(1)
        .stderr_has("Multiple head revisions")
        .stderr_has("b1b1b1b1b1b1, b2b2b2b2b2b2");
    assert!(
        !env.db().exists() || versions(&env).is_empty(),
        "nothing may be applied"
    );
    env.cli(&["migrate", "status"])
        .code(1)
        .stdout_has("upgrade heads");
    env.cli(&["migrate", "upgrade", "heads"]).ok();
    assert_eq!(versions(&env), "b1b1b1b1b1b1,b2b2b2b2b2b2");
    env.cli(&["migrate", "status"]).ok();
    assert_eq!(
        env.cli(&["migrate", "heads"]).ok().lines(),
        ["b1b1b1b1b1b1 (head)", "b2b2b2b2b2b2 (head)"]
    );
    assert_eq!(
        env.cli(&["migrate", "branches"]).ok().lines(),
        [
            "34065a4cc718 (branchpoint)",
            "             -> b1b1b1b1b1b1 (head)",
            "             -> b2b2b2b2b2b2 (head)",
            ""
        ]
    );
    let current = env.cli(&["migrate", "current"]).ok().lines().join("\n");
    assert_eq!(current, "b1b1b1b1b1b1 (head)\nb2b2b2b2b2b2 (head)");
    // -1 with two heads is ambiguous; naming the head works.
    env.cli(&["migrate", "downgrade", "-1"])
        .code(1)
        .stderr_has("Ambiguous walk");
    env.cli(&["migrate", "downgrade", "b2b2b2b2b2b2-1"]).ok();
    assert_eq!(versions(&env), "b1b1b1b1b1b1", "b1 stays, b2 reverted");
    env.cli(&["migrate", "downgrade", "34065a4cc718"]).ok();
    assert_eq!(versions(&env), "34065a4cc718");
}

#[test]
fn merge_points_upgrade_and_downgrade() {
    let env = Env::new();
    let dir = branched(&env, true);
    let env = with_dir(env, &dir);
    let up = env.cli(&["migrate", "upgrade"]);
    up.ok().stderr_has(
        "Running upgrade b1b1b1b1b1b1, b2b2b2b2b2b2 -> c3c3c3c3c3c3, merge tags and owner",
    );
    assert_eq!(versions(&env), "c3c3c3c3c3c3");
    let history = env.cli(&["migrate", "history"]).ok().lines().join("\n");
    assert!(
        history.starts_with(
            "b1b1b1b1b1b1, b2b2b2b2b2b2 -> c3c3c3c3c3c3 (head) (mergepoint), merge tags and owner"
        ),
        "{history}"
    );
    assert!(
        history
            .contains("fc0bfa77ff5a -> 34065a4cc718 (branchpoint), add priority field to prompts"),
        "{history}"
    );
    env.cli(&["migrate", "downgrade", "-1"])
        .code(1)
        .stderr_has("Ambiguous walk");
    let down = env.cli(&["migrate", "downgrade", "b1b1b1b1b1b1"]);
    down.ok().stderr_has(
        "Running downgrade c3c3c3c3c3c3 -> b1b1b1b1b1b1, b2b2b2b2b2b2, merge tags and owner",
    );
    assert_eq!(versions(&env), "b1b1b1b1b1b1,b2b2b2b2b2b2");
    let show = env.cli(&["migrate", "show", "c3"]).ok().lines().join("\n");
    assert!(
        show.contains("Merges: b1b1b1b1b1b1, b2b2b2b2b2b2"),
        "{show}"
    );
    let show = env
        .cli(&["migrate", "show", "34065"])
        .ok()
        .lines()
        .join("\n");
    assert!(
        show.contains("Branches into: b1b1b1b1b1b1, b2b2b2b2b2b2"),
        "{show}"
    );
    env.cli(&["migrate", "downgrade", "base"]).ok();
    assert_eq!(versions(&env), "");
    env.cli(&["migrate", "upgrade", "heads"]).ok();
    assert_eq!(versions(&env), "c3c3c3c3c3c3");
}

#[test]
fn failing_revision_rolls_back_completely_and_names_file_line_statement() {
    let env = Env::new();
    // A CREATE that succeeds, then a statement that fails: alembic leaves the table behind
    // (reference §1 item 2); here nothing of the revision may stay.
    let bad = revision(
        "dddddddddddd",
        "34065a4cc718",
        "half broken",
        "2026-01-03 00:00:00",
        "CREATE TABLE txn_probe (id INTEGER);\nINSERT INTO txn_probe VALUES (1);\nINSERT INTO no_such_table VALUES (1);",
        "DROP TABLE txn_probe;",
    );
    let dir = migrations_dir(&env, &[("20260103_0000_dddddddddddd_half_broken.sql", bad)]);
    let env = with_dir(env, &dir);
    let out = env.cli(&["migrate", "upgrade"]);
    out.code(1)
        .stderr_has("revision dddddddddddd failed at ")
        .stderr_has("20260103_0000_dddddddddddd_half_broken.sql, line 10")
        .stderr_has("no such table: no_such_table")
        .stderr_has("[SQL: INSERT INTO no_such_table VALUES (1)]")
        .stderr_has("the database stays at 34065a4cc718");
    // The revisions before it were each committed; the failing one left nothing.
    assert_eq!(versions(&env), "34065a4cc718");
    assert!(
        !env.sqlite(".tables").stdout.contains("txn_probe"),
        "partial DDL left behind"
    );
    assert_eq!(
        env.sqlite("PRAGMA integrity_check;").ok().stdout.trim(),
        "ok"
    );
    // Fixing the file and re-running works (no manual repair, unlike alembic).
    let fixed = revision(
        "dddddddddddd",
        "34065a4cc718",
        "half broken",
        "2026-01-03 00:00:00",
        "CREATE TABLE txn_probe (id INTEGER);",
        "DROP TABLE txn_probe;",
    );
    std::fs::write(
        dir.join("versions/20260103_0000_dddddddddddd_half_broken.sql"),
        fixed,
    )
    .unwrap();
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(versions(&env), "dddddddddddd");
}

#[test]
fn foreign_key_violations_roll_the_step_back() {
    let env = Env::new();
    let bad = revision("eeeeeeeeeeee", "34065a4cc718", "orphan rows", "2026-01-04 00:00:00", "INSERT INTO scheduled_jobs (name, prompt_id, cron_expression) VALUES ('j', 999, '* * * * *');", "");
    let dir = migrations_dir(&env, &[("20260104_0000_eeeeeeeeeeee_orphan_rows.sql", bad)]);
    let env = with_dir(env, &dir);
    env.cli(&["migrate", "upgrade"])
        .code(1)
        .stderr_has("break foreign keys");
    assert_eq!(versions(&env), "34065a4cc718");
    assert_eq!(
        env.sqlite("SELECT count(*) FROM scheduled_jobs;")
            .ok()
            .stdout
            .trim(),
        "0"
    );
}

#[test]
fn malformed_files_name_file_and_line() {
    let env = Env::new();
    let text = "-- broken\n--\n-- Revision ID: NOT-HEX\n-- Revises: 34065a4cc718\n\n-- migrate:upgrade\n\n-- migrate:downgrade\n";
    let dir = migrations_dir(&env, &[("20260105_0000_broken.sql", text.to_string())]);
    let env = with_dir(env, &dir);
    for args in [
        &["migrate", "status"][..],
        &["migrate", "upgrade"],
        &["migrate", "history"],
    ] {
        env.cli(args)
            .code(1)
            .stderr_has("20260105_0000_broken.sql:3: revision id \"NOT-HEX\"");
    }
    assert!(!env.db().exists(), "nothing may be created");
    // A parent nobody defines.
    let env2 = Env::new();
    let orphan = revision(
        "ffffffffffff",
        "aaaaaaaaaaaa",
        "orphan",
        "2026-01-06 00:00:00",
        "",
        "",
    );
    let dir = migrations_dir(&env2, &[("20260106_0000_ffffffffffff_orphan.sql", orphan)]);
    with_dir(env2, &dir)
        .cli(&["migrate", "upgrade"])
        .code(1)
        .stderr_has("revises aaaaaaaaaaaa, which no revision file defines");
}

#[test]
fn offline_sql_matches_the_online_schema() {
    let env = Env::new();
    let sql = env.cli(&["migrate", "upgrade", "head", "--sql"]);
    sql.ok();
    assert!(!env.db().exists(), "--sql must not touch the database");
    assert!(sql.stdout.starts_with("CREATE TABLE cron_alembic_version (\n    version_num VARCHAR(32) NOT NULL, \n    CONSTRAINT cron_alembic_version_pkc PRIMARY KEY (version_num)\n);\n"), "{sql}");
    assert!(sql.stdout.contains("-- Running upgrade  -> 5d8b746712b6\n"));
    assert!(sql.stdout.contains("INSERT INTO cron_alembic_version (version_num) VALUES ('5d8b746712b6') RETURNING version_num;"));
    assert!(sql.stdout.contains("UPDATE cron_alembic_version SET version_num='34065a4cc718' WHERE cron_alembic_version.version_num = 'fc0bfa77ff5a';"));
    // Piped into sqlite3 it builds the same schema as the online path.
    let offline_db = env.path().join("offline.db");
    let piped = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --migrations-dir {} migrate upgrade head --sql | sqlite3 {}",
            silica_cron_tests::bin("silica-cron").display(),
            silica_cron_tests::original_chain().display(),
            offline_db.display()
        ))
        .current_dir(env.path()));
    piped.ok();
    env.cli(&["migrate", "upgrade"]).ok();
    let schema = |db: &Path| {
        run(std::process::Command::new("sqlite3").arg(db).arg(".schema"))
            .ok()
            .stdout
            .clone()
    };
    assert_eq!(schema(&offline_db).replace("    ", "\t"), schema(&env.db()));
    // Ranges.
    let tail = env
        .cli(&["migrate", "upgrade", "fc0bfa77ff5a:head", "--sql"])
        .ok()
        .stdout
        .clone();
    assert!(!tail.contains("CREATE TABLE"), "{tail}");
    assert!(tail.contains("-- Running upgrade fc0bfa77ff5a -> 34065a4cc718"));
    let down = env
        .cli(&["migrate", "downgrade", "34065a4cc718:base", "--sql"])
        .ok()
        .stdout
        .clone();
    assert!(down.contains("DELETE FROM cron_alembic_version WHERE cron_alembic_version.version_num = '5d8b746712b6';"), "{down}");
    let piped = run(std::process::Command::new("sh").arg("-c").arg(format!(
        "{} --migrations-dir {} migrate downgrade 34065a4cc718:base --sql | sqlite3 {}",
        silica_cron_tests::bin("silica-cron").display(),
        silica_cron_tests::original_chain().display(),
        offline_db.display()
    )));
    piped.ok();
    let left = schema(&offline_db);
    assert!(left.starts_with("CREATE TABLE cron_alembic_version (\n    version_num VARCHAR(32) NOT NULL, \n    CONSTRAINT cron_alembic_version_pkc PRIMARY KEY (version_num)\n);\nCREATE TABLE silica_cron_revision_ledger ("), "{left}");
    assert!(!left.contains("prompts"), "{left}");
}

#[test]
fn unknown_revision_in_database() {
    let env = Env::new();
    env.cli(&["migrate", "upgrade"]).ok();
    env.sqlite("UPDATE cron_alembic_version SET version_num = 'ffffffffffff';")
        .ok();
    env.cli(&["migrate", "status"])
        .code(1)
        .stdout_has("ffffffffffff, which no revision file defines");
    for args in [
        &["migrate", "current"][..],
        &["migrate", "upgrade"],
        &["migrate", "downgrade", "-1"],
        &["migrate", "stamp", "head"],
    ] {
        env.cli(args)
            .code(1)
            .stderr_has("ffffffffffff, which no revision file defines")
            .stderr_has("stamp --purge");
    }
    env.cli(&["migrate", "stamp", "--purge", "head"])
        .ok()
        .stderr_has("Running stamp_revision ffffffffffff -> 34065a4cc718");
    env.cli(&["migrate", "status"]).ok();
}

#[test]
fn history_ranges_verbose_and_json() {
    let env = Env::new();
    env.cli(&["migrate", "upgrade", "fc0bfa77ff5a"]).ok();
    assert_eq!(
        env.cli(&["migrate", "history", "-r", "fc0bfa77ff5a:"])
            .ok()
            .lines(),
        [
            "fc0bfa77ff5a -> 34065a4cc718 (head), add priority field to prompts",
            "5d8b746712b6 -> fc0bfa77ff5a, add new feature"
        ]
    );
    assert_eq!(
        env.cli(&["migrate", "history", "-r", ":5d8b"]).ok().lines(),
        ["<base> -> 5d8b746712b6, initial_cron_schema"]
    );
    let ind = env
        .cli(&["migrate", "history", "--indicate-current"])
        .ok()
        .lines()
        .join("\n");
    assert!(
        ind.contains("5d8b746712b6 -> fc0bfa77ff5a (current), add new feature"),
        "{ind}"
    );
    let v = env.cli(&["migrate", "show", "34"]).ok().stdout.clone();
    assert!(
        v.starts_with("Rev: 34065a4cc718 (head)\nParent: fc0bfa77ff5a\nPath: "),
        "{v}"
    );
    assert!(v.contains("\n\n    add priority field to prompts\n    \n    Revision ID: 34065a4cc718\n    Revises: fc0bfa77ff5a\n    Create Date: 2025-08-17 08:24:55.246092\n"), "{v}");
    let cv = env
        .cli(&["migrate", "current", "--verbose"])
        .ok()
        .stdout
        .clone();
    assert!(
        cv.starts_with(&format!(
            "Current revision(s) for sqlite:///{}:\nRev: fc0bfa77ff5a\n",
            env.db().display()
        )),
        "{cv}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&env.cli(&["--json", "migrate", "status"]).code(1).stdout).unwrap();
    assert_eq!(status["up_to_date"], false);
    assert_eq!(status["current"][0], "fc0bfa77ff5a");
    let hist: serde_json::Value =
        serde_json::from_str(&env.cli(&["migrate", "history", "--json"]).ok().stdout).unwrap();
    assert_eq!(hist[0]["revision"], "34065a4cc718");
    assert_eq!(hist[2]["parents"].as_array().unwrap().len(), 0);
    let cur: serde_json::Value =
        serde_json::from_str(&env.cli(&["migrate", "current", "--json"]).ok().stdout).unwrap();
    assert_eq!(cur["current"][0]["revision"], "fc0bfa77ff5a");
}

#[test]
fn database_urls_and_bad_urls() {
    let env = Env::new().with_var("CRON_DATABASE_URL", "sqlite:///sub.db");
    env.cli(&["migrate", "upgrade"]).ok();
    assert!(env.path().join("sub.db").exists());
    let env = Env::new().with_var("DATABASE_URL", "postgresql://user@host/db");
    env.cli(&["migrate", "status"])
        .code(1)
        .stderr_has("DATABASE_URL")
        .stderr_has("not a SQLite URL");
}

#[test]
fn concurrent_one_shot_migrations_wait_for_each_other() {
    let env = Env::new();
    let children: Vec<_> = (0..6)
        .map(|_| {
            env.command("silica-cron")
                .args(["migrate", "upgrade"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut steps = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        steps += stderr.matches("Running upgrade").count();
    }
    assert_eq!(steps, 3, "each revision applied exactly once");
    assert_eq!(versions(&env), "34065a4cc718");
}
