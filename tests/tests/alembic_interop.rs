//! Interop with the original tool: real alembic (tests/alembic_env, the original chain) and the
//! real binaries on the same SQLite files, in both directions, with schemas, PRAGMAs and offline
//! SQL compared. The one difference on purpose in the revisions (DESIGN §5): our 34065a4cc718
//! adds `priority INTEGER NOT NULL DEFAULT 1` where the original adds `priority INTEGER NOT NULL`.
//! Besides, our databases (and offline SQL) carry our own bookkeeping table, the ledger of
//! applied revisions (README "Ledger of applied revisions"); it is set aside, exactly that table,
//! before comparing, and checked to be there.

use std::path::{Path, PathBuf};
use std::process::Command;

use silica_cron_tests::{run, run_alembic, Env, Out};

const HEAD: &str = "34065a4cc718";
const MIDDLE: &str = "fc0bfa77ff5a";
const BASE_REV: &str = "5d8b746712b6";

/// The documented difference, as it appears in `.schema` (ours, then the original's).
const OUR_PRIORITY: &str = " priority INTEGER NOT NULL DEFAULT 1, \n";
const ORIGINAL_PRIORITY: &str = " priority INTEGER NOT NULL, \n";
/// The same difference in `PRAGMA table_xinfo` (see `pragma_dump`): dflt_value '1' vs NULL.
const OUR_PRIORITY_XINFO: &str = "xinfo|prompts|8|priority|INTEGER|1|'1'|0|0\n";
const ORIGINAL_PRIORITY_XINFO: &str = "xinfo|prompts|8|priority|INTEGER|1|NULL|0|0\n";
/// Our ledger of applied revisions, which alembic knows nothing of.
const LEDGER: &str = "silica_cron_revision_ledger";

fn sqlite(db: &Path, sql: &str) -> Out {
    let out = run(Command::new("sqlite3").arg(db).arg(sql));
    assert_eq!(out.code, 0, "sqlite3 {sql:?} failed:\n{out}");
    out
}

fn schema(db: &Path) -> String {
    sqlite(db, ".schema").stdout
}

fn versions(db: &Path) -> String {
    let has_table = sqlite(
        db,
        "SELECT count(*) FROM sqlite_master WHERE name = 'cron_alembic_version';",
    );
    if has_table.stdout.trim() == "0" {
        return "<no version table>".into();
    }
    sqlite(
        db,
        "SELECT group_concat(version_num, ',') FROM (SELECT version_num FROM cron_alembic_version ORDER BY 1);",
    )
    .stdout
    .trim()
    .to_string()
}

#[track_caller]
fn alembic_ok(db: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Out {
    let out = run_alembic(db, args, extra_env);
    assert_eq!(out.code, 0, "alembic {args:?} failed:\n{out}");
    out
}

/// Rows of the three tables, every column the original models have (priority aside).
fn data(db: &Path) -> String {
    sqlite(
        db,
        "SELECT 'p', id, name, description, prompt_text, model, persona, created_at, updated_at FROM prompts ORDER BY id;
         SELECT 'j', id, name, prompt_id, cron_expression, is_active, created_at, updated_at FROM scheduled_jobs ORDER BY id;
         SELECT 'e', id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message FROM job_executions ORDER BY id;",
    )
    .stdout
}

/// A few rows in every table, as the original daemon would have written them.
fn populate(db: &Path) {
    sqlite(
        db,
        "INSERT INTO prompts (name, description, prompt_text, model, persona) VALUES
           ('Daily Summary', 'summarise the day', 'Summarise what happened today.', 'haiku', 'basic_agent'),
           ('Weekly Report', NULL, 'Write the weekly report.', 'sonnet', 'deep_research_agent');
         INSERT INTO scheduled_jobs (name, prompt_id, cron_expression, is_active) VALUES
           ('daily', 1, '0 9 * * *', 1),
           ('weekly', 2, '0 17 * * 5', 0);
         INSERT INTO job_executions (scheduled_job_id, session_id, started_at, completed_at, status, output, error_message) VALUES
           (1, '0b7f3a56-1111-4a6c-9a57-3f1e5c2d8e01', '2025-08-18 09:00:00', '2025-08-18 09:01:10', 'completed', 'done', NULL),
           (2, '0b7f3a56-2222-4a6c-9a57-3f1e5c2d8e02', '2025-08-22 17:00:00', '2025-08-22 17:05:00', 'failed', '', 'exit 1'),
           (NULL, '0b7f3a56-3333-4a6c-9a57-3f1e5c2d8e03', '2025-08-23 10:00:00', NULL, 'running', NULL, NULL);",
    );
}

/// A database made by real alembic at fc0bfa77ff5a, holding rows.
fn alembic_populated_db(db: &Path) {
    alembic_ok(db, &["upgrade", MIDDLE], &[]);
    assert_eq!(versions(db), MIDDLE);
    populate(db);
}

fn priorities(db: &Path) -> String {
    sqlite(db, "SELECT group_concat(priority, ',') FROM prompts;")
        .stdout
        .trim()
        .to_string()
}

/// alembic's `.schema` and ours are identical apart from the one documented clause; `ours` is
/// rewritten to the original's clause (exactly one occurrence, nothing else is touched).
#[track_caller]
fn without_documented_difference(ours: &str) -> String {
    assert_eq!(
        ours.matches(OUR_PRIORITY).count(),
        1,
        "our head schema must add priority with DEFAULT 1 exactly once:\n{ours}"
    );
    ours.replacen(OUR_PRIORITY, ORIGINAL_PRIORITY, 1)
}

/// SQL text without the ledger's `CREATE TABLE` (present exactly once, asserted); works for
/// `.schema` (tab indent) and offline SQL (4-space indent) alike.
#[track_caller]
fn without_ledger_ddl(sql: &str) -> String {
    let start = format!("CREATE TABLE {LEDGER} (\n");
    assert_eq!(
        sql.matches(&start).count(),
        1,
        "our ledger table must be created exactly once:\n{sql}"
    );
    let i = sql.find(&start).unwrap();
    let len = sql[i..]
        .find("\n);\n")
        .expect("end of the ledger's CREATE TABLE")
        + 4;
    format!("{}{}", &sql[..i], &sql[i + len..])
}

/// `.schema` of a database we made, without the ledger table.
fn our_schema(db: &Path) -> String {
    without_ledger_ddl(&schema(db))
}

/// PRAGMA dump of a database we made, without the ledger table's rows (and its autoindex).
#[track_caller]
fn our_pragma_dump(db: &Path) -> String {
    let dump = pragma_dump(db);
    let ledger_lines = dump.lines().filter(|l| l.contains(LEDGER)).count();
    assert!(ledger_lines >= 5, "ledger table missing from\n{dump}");
    dump.lines()
        .filter(|l| !l.contains(LEDGER))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Tables other than the ledger, sorted.
fn tables(db: &Path) -> String {
    sqlite(
        db,
        &format!("SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type = 'table' AND name <> '{LEDGER}' ORDER BY name);"),
    )
    .stdout
    .trim()
    .to_string()
}

/// Whitespace runs collapsed to one space and identifier quotes removed.
fn normalised(sql: &str) -> String {
    sql.replace(['"', '`'], "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// table_xinfo, index_list, index_xinfo and foreign_key_list of every table and index.
fn pragma_dump(db: &Path) -> String {
    sqlite(
        db,
        r#"SELECT 'xinfo', m.name, p.cid, p.name, p.type, p."notnull", quote(p.dflt_value), p.pk, p.hidden
             FROM sqlite_master m, pragma_table_xinfo(m.name) p WHERE m.type = 'table' ORDER BY m.name, p.cid;
           SELECT 'index_list', m.name, p.seq, p.name, p."unique", p.origin, p.partial
             FROM sqlite_master m, pragma_index_list(m.name) p WHERE m.type = 'table' ORDER BY m.name, p.seq;
           SELECT 'index_xinfo', m.name, m.tbl_name, p.seqno, p.cid, p.name, p."desc", p.coll, p."key"
             FROM sqlite_master m, pragma_index_xinfo(m.name) p WHERE m.type = 'index' ORDER BY m.name, p.seqno;
           SELECT 'fk', m.name, p.id, p.seq, p."table", p."from", p."to", p.on_update, p.on_delete, p."match"
             FROM sqlite_master m, pragma_foreign_key_list(m.name) p WHERE m.type = 'table' ORDER BY m.name, p.id, p.seq;
           SELECT 'object', type, name, tbl_name FROM sqlite_master ORDER BY type, name;"#,
    )
    .stdout
}

/// Takes over a populated alembic database at fc0bfa77ff5a, then hands it back to alembic.
fn take_over_alembic_database(daemon: bool) {
    let env = Env::new();
    let db = env.db();
    alembic_populated_db(&db);
    let before = data(&db);
    assert!(before.lines().count() == 7, "{before}");

    let d = daemon.then(|| env.start_daemon(&[]));
    env.cli(&["migrate", "status"])
        .code(1)
        .stdout_has("needs migration");
    let up = env.cli(&["migrate", "upgrade"]);
    up.ok()
        .stdout_has("Upgrading cron database to head...")
        .stderr_has("Running upgrade fc0bfa77ff5a -> 34065a4cc718, add priority field to prompts");
    assert!(
        !up.stderr.contains("initial_cron_schema"),
        "only the missing step runs:\n{up}"
    );
    if let Some(d) = &d {
        assert!(
            d.log().contains("migration command done"),
            "the upgrade must have gone through the daemon:\n{}",
            d.log()
        );
    }
    assert_eq!(versions(&db), HEAD);
    assert_eq!(data(&db), before, "rows changed by the upgrade");
    assert_eq!(
        priorities(&db),
        "1,1",
        "existing prompts read back priority 1"
    );
    assert_eq!(sqlite(&db, "PRAGMA integrity_check;").stdout.trim(), "ok");
    assert_eq!(sqlite(&db, "PRAGMA foreign_key_check;").stdout, "");
    env.cli(&["migrate", "status"])
        .ok()
        .stdout_has("✅ Cron database is up to date");

    // Real alembic reads our result (while the daemon, if any, holds the database open).
    let cur = alembic_ok(&db, &["current"], &[]);
    assert_eq!(cur.stdout, format!("{HEAD} (head)\n"), "{cur}");

    // And moves it down and up again.
    alembic_ok(&db, &["downgrade", MIDDLE], &[]);
    assert_eq!(versions(&db), MIDDLE);
    assert!(
        !schema(&db).contains("priority"),
        "alembic's downgrade drops the column"
    );
    assert_eq!(data(&db), before);
    assert_eq!(
        env.cli(&["migrate", "current"]).ok().stdout,
        format!("{MIDDLE}\n")
    );
    alembic_ok(
        &db,
        &["upgrade", "head"],
        &[("ALEMBIC_PRIORITY_SERVER_DEFAULT", "1")],
    );
    assert_eq!(versions(&db), HEAD);
    assert!(
        schema(&db).contains(" priority INTEGER DEFAULT '1' NOT NULL, \n"),
        "{}",
        schema(&db)
    );
    assert_eq!(priorities(&db), "1,1");
    assert_eq!(data(&db), before);
    assert_eq!(
        env.cli(&["migrate", "current"]).ok().stdout,
        format!("{HEAD} (head)\n")
    );
    env.cli(&["migrate", "status"]).ok();
    // Our downgrade works on alembic's variant of the column too.
    env.cli(&["migrate", "downgrade", "-1"]).ok();
    assert_eq!(versions(&db), MIDDLE);
    assert_eq!(data(&db), before);
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(priorities(&db), "1,1");
    if let Some(d) = d {
        assert_eq!(d.stop(), 0, "daemon did not stop cleanly");
    }
    assert_eq!(sqlite(&db, "PRAGMA integrity_check;").stdout.trim(), "ok");
}

#[test]
fn alembic_database_taken_over_one_shot() {
    take_over_alembic_database(false);
}

#[test]
fn alembic_database_taken_over_by_running_daemon() {
    take_over_alembic_database(true);
}

#[test]
fn our_database_is_read_downgraded_and_upgraded_by_alembic() {
    let env = Env::new();
    let db = env.db();
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(versions(&db), HEAD);

    let cur = alembic_ok(&db, &["current"], &[]);
    assert_eq!(cur.stdout, format!("{HEAD} (head)\n"), "{cur}");

    let down = alembic_ok(&db, &["downgrade", "base"], &[]);
    assert!(
        down.stderr
            .contains("Running downgrade 5d8b746712b6 -> , initial_cron_schema"),
        "{down}"
    );
    assert_eq!(versions(&db), "", "alembic leaves the version table, empty");
    assert_eq!(tables(&db), "cron_alembic_version");
    assert_eq!(env.cli(&["migrate", "current"]).ok().stdout, "");
    env.cli(&["migrate", "status"]).code(1);

    alembic_ok(&db, &["upgrade", "head"], &[]);
    assert_eq!(versions(&db), HEAD);
    assert_eq!(
        env.cli(&["migrate", "current"]).ok().stdout,
        format!("{HEAD} (head)\n")
    );
    env.cli(&["migrate", "status"])
        .ok()
        .stdout_has("✅ Cron database is up to date");
    // Ours takes it down and up again from there.
    env.cli(&["migrate", "downgrade", "base"]).ok();
    assert_eq!(versions(&db), "");
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(versions(&db), HEAD);
    let cur = alembic_ok(&db, &["current"], &[]);
    assert_eq!(cur.stdout, format!("{HEAD} (head)\n"), "{cur}");
}

#[test]
fn alembic_check_sees_no_drift_in_a_database_we_made() {
    // Control: a database alembic made itself is in sync with the original models (+ priority).
    let env = Env::new();
    let theirs = env.path().join("alembic.db");
    alembic_ok(&theirs, &["upgrade", "head"], &[]);
    alembic_ok(&theirs, &["check"], &[]).stdout_has("No new upgrade operations detected.");

    env.cli(&["migrate", "upgrade"]).ok();
    // alembic's autogenerate reflects every table, so it lists silica-cron's revision ledger (and
    // nothing else) as a table to remove. The README documents this and the one-line
    // `include_name` filter for the original's env.py; with it, alembic sees no drift.
    let check = run_alembic(&env.db(), &["check"], &[]);
    assert_eq!(check.code, 255, "{check}");
    assert!(check.stdout.contains("New upgrade operations detected: [('remove_table', Table('silica_cron_revision_ledger'"), "{check}");
    assert_eq!(
        check.stdout.matches("('remove_").count() + check.stdout.matches("('add_").count(),
        1,
        "only the ledger may differ:\n{check}"
    );
    let filtered = run_alembic(
        &env.db(),
        &["check"],
        &[("ALEMBIC_IGNORE_SILICA_LEDGER", "1")],
    );
    assert_eq!(filtered.code, 0, "{filtered}");
    filtered.stdout_has("No new upgrade operations detected.");
}

/// Fresh databases brought to `rev` by alembic and by us.
fn both_at(env: &Env, rev: &str) -> (PathBuf, PathBuf) {
    let theirs = env.path().join(format!("alembic-{rev}.db"));
    let ours = env.path().join(format!("ours-{rev}.db"));
    alembic_ok(&theirs, &["upgrade", rev], &[]);
    env.cli(&["--db", ours.to_str().unwrap(), "migrate", "upgrade", rev])
        .ok();
    (theirs, ours)
}

#[test]
fn schemas_match_alembic_at_every_revision() {
    let env = Env::new();
    for rev in [BASE_REV, MIDDLE] {
        let (theirs, ours) = both_at(&env, rev);
        assert_eq!(versions(&theirs), rev);
        assert_eq!(versions(&ours), rev);
        assert_eq!(
            our_schema(&ours),
            schema(&theirs),
            ".schema at {rev} must be byte-identical"
        );
        assert_eq!(
            our_pragma_dump(&ours),
            pragma_dump(&theirs),
            "PRAGMAs at {rev}"
        );
    }

    let (theirs, ours) = both_at(&env, "head");
    assert_eq!(versions(&theirs), HEAD);
    assert_eq!(versions(&ours), HEAD);
    let (s_theirs, s_ours) = (schema(&theirs), our_schema(&ours));
    assert_eq!(s_theirs.matches(ORIGINAL_PRIORITY).count(), 1, "{s_theirs}");
    let adjusted = without_documented_difference(&s_ours);
    assert_eq!(
        normalised(&adjusted),
        normalised(&s_theirs),
        ".schema at head, whitespace and quoting normalised"
    );
    assert_eq!(
        adjusted, s_theirs,
        ".schema at head is byte-identical apart from the documented DEFAULT 1"
    );

    let (p_theirs, p_ours) = (pragma_dump(&theirs), our_pragma_dump(&ours));
    // The dump really covers columns, indexes and foreign keys.
    for line in [
        "xinfo|job_executions|3|started_at|DATETIME|0|'CURRENT_TIMESTAMP'|0|0",
        "index_list|prompts|0|ix_prompts_name|0|c|0",
        "index_list|cron_alembic_version|0|sqlite_autoindex_cron_alembic_version_1|1|pk|0",
        "index_xinfo|ix_job_executions_session_id|job_executions|0|2|session_id|0|BINARY|1",
        "fk|job_executions|0|0|scheduled_jobs|scheduled_job_id|id|NO ACTION|NO ACTION|NONE",
        "fk|scheduled_jobs|0|0|prompts|prompt_id|id|NO ACTION|NO ACTION|NONE",
    ] {
        assert!(
            p_theirs.lines().any(|l| l == line),
            "{line} not in\n{p_theirs}"
        );
    }
    assert_eq!(p_ours.matches(OUR_PRIORITY_XINFO).count(), 1, "{p_ours}");
    assert_eq!(
        p_theirs.matches(ORIGINAL_PRIORITY_XINFO).count(),
        1,
        "{p_theirs}"
    );
    assert_eq!(
        p_ours.replacen(OUR_PRIORITY_XINFO, ORIGINAL_PRIORITY_XINFO, 1),
        p_theirs,
        "PRAGMAs at head, apart from priority's default"
    );

    // Each tool's downgrade from head lands on the same schema as the other's.
    alembic_ok(&theirs, &["downgrade", MIDDLE], &[]);
    env.cli(&[
        "--db",
        ours.to_str().unwrap(),
        "migrate",
        "downgrade",
        MIDDLE,
    ])
    .ok();
    let fresh_theirs = env.path().join(format!("alembic-{MIDDLE}.db"));
    assert_eq!(schema(&theirs), schema(&fresh_theirs));
    assert_eq!(
        our_schema(&ours),
        schema(&theirs),
        "after downgrade to {MIDDLE}"
    );
    assert_eq!(our_pragma_dump(&ours), pragma_dump(&theirs));
    alembic_ok(&theirs, &["downgrade", "base"], &[]);
    env.cli(&[
        "--db",
        ours.to_str().unwrap(),
        "migrate",
        "downgrade",
        "base",
    ])
    .ok();
    assert_eq!(
        our_schema(&ours),
        schema(&theirs),
        "after downgrade to base"
    );
    assert_eq!(
        sqlite(&ours, &format!("SELECT count(*) FROM {LEDGER};")).stdout,
        "0\n",
        "our downgrade to base forgets every revision"
    );
    assert_eq!(
        schema(&theirs),
        "CREATE TABLE cron_alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, \n\tCONSTRAINT cron_alembic_version_pkc PRIMARY KEY (version_num)\n);\n"
    );
}

/// Statement lines of offline SQL: our per-revision BEGIN;/COMMIT; (on purpose: piping into
/// sqlite3 is then as atomic as the online path), blank lines and SQL comments removed.
fn offline_statements(sql: &str) -> Vec<String> {
    sql.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with("--") && *l != "BEGIN;" && *l != "COMMIT;")
        .map(String::from)
        .collect()
}

/// Whole statements (joined lines, split at `;` line ends), normalised.
fn statements(lines: &[String]) -> Vec<String> {
    lines
        .join("\n")
        .split(";\n")
        .map(|s| normalised(s.trim_end_matches(';')))
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn offline_sql_matches_alembic() {
    let env = Env::new();
    let db = env.path().join("never-created.db");
    let theirs = alembic_ok(&db, &["upgrade", "head", "--sql"], &[]);
    let ours = env.cli(&[
        "--db",
        db.to_str().unwrap(),
        "migrate",
        "upgrade",
        "head",
        "--sql",
    ]);
    ours.ok();
    assert!(!db.exists(), "--sql must not create the database");

    // The step comments are the same, in the same order.
    let comments = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("-- Running"))
            .map(String::from)
            .collect()
    };
    assert_eq!(comments(&ours.stdout), comments(&theirs.stdout));
    assert_eq!(comments(&ours.stdout).len(), 3);
    // Ours wraps each revision in BEGIN/COMMIT, and only that.
    assert_eq!(ours.stdout.matches("\nBEGIN;\n").count(), 3, "{ours}");
    assert_eq!(ours.stdout.matches("\nCOMMIT;\n").count(), 3, "{ours}");
    assert!(!theirs.stdout.contains("BEGIN;"), "{theirs}");

    // Our ledger's CREATE and one INSERT OR REPLACE per revision are set aside, and only those.
    let ledger_record = format!("INSERT OR REPLACE INTO {LEDGER} ");
    let ours_sql: String = without_ledger_ddl(&ours.stdout)
        .lines()
        .filter(|l| !l.starts_with(&ledger_record))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        ours.stdout.matches(&ledger_record).count(),
        3,
        "one ledger record per revision:\n{ours}"
    );
    assert!(!ours_sql.contains(LEDGER), "{ours_sql}");
    let ours_lines = offline_statements(&ours_sql);
    let theirs_lines = offline_statements(&theirs.stdout);
    let our_alter = "ALTER TABLE prompts ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;";
    let their_alter = "ALTER TABLE prompts ADD COLUMN priority INTEGER NOT NULL;";
    assert_eq!(
        ours_lines.iter().filter(|l| *l == our_alter).count(),
        1,
        "{ours}"
    );
    assert_eq!(
        theirs_lines.iter().filter(|l| *l == their_alter).count(),
        1,
        "{theirs}"
    );
    let adjusted: Vec<String> = ours_lines
        .iter()
        .map(|l| {
            if l == our_alter {
                their_alter.to_string()
            } else {
                l.clone()
            }
        })
        .collect();
    // Line for line identical once the documented difference is set aside.
    assert_eq!(adjusted, theirs_lines);

    // And, as whole normalised statements: every CREATE and version-table statement.
    let (s_ours, s_theirs) = (statements(&adjusted), statements(&theirs_lines));
    assert_eq!(s_ours, s_theirs);
    let kinds = |ss: &[String], prefix: &str| ss.iter().filter(|s| s.starts_with(prefix)).count();
    assert_eq!(kinds(&s_theirs, "CREATE TABLE "), 4, "{s_theirs:#?}");
    assert_eq!(kinds(&s_theirs, "CREATE INDEX "), 6, "{s_theirs:#?}");
    assert_eq!(
        kinds(&s_theirs, "INSERT INTO cron_alembic_version "),
        1,
        "{s_theirs:#?}"
    );
    assert_eq!(
        kinds(&s_theirs, "UPDATE cron_alembic_version "),
        2,
        "{s_theirs:#?}"
    );

    // Both scripts, piped into sqlite3, build the same database (modulo priority's default).
    let pipe = |script: &str, name: &str| -> PathBuf {
        let p = env.path().join(name);
        let f = env.path().join(format!("{name}.sql"));
        std::fs::write(&f, script).unwrap();
        let out = run(Command::new("sqlite3")
            .arg(&p)
            .arg(format!(".read {}", f.display())));
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(out.stderr, "", "{out}");
        p
    };
    let a = pipe(&theirs.stdout, "theirs-offline.db");
    let b = pipe(&ours.stdout, "ours-offline.db");
    assert_eq!(versions(&a), HEAD);
    assert_eq!(versions(&b), HEAD);
    assert_eq!(without_documented_difference(&our_schema(&b)), schema(&a));
}

#[test]
fn original_tool_fails_on_populated_database_and_ours_then_succeeds() {
    let env = Env::new();
    let db = env.db();
    alembic_populated_db(&db);
    let schema_before = schema(&db);
    let data_before = data(&db);

    let failed = run_alembic(&db, &["upgrade", "head"], &[]);
    failed
        .code(1)
        .stderr_has("Cannot add a NOT NULL column")
        .stderr_has("[SQL: ALTER TABLE prompts ADD COLUMN priority INTEGER NOT NULL]");
    assert_eq!(
        versions(&db),
        MIDDLE,
        "alembic's failure leaves the version"
    );
    assert_eq!(schema(&db), schema_before, "and the schema");
    assert_eq!(data(&db), data_before);

    let up = env.cli(&["migrate", "upgrade"]);
    up.ok()
        .stderr_has("Running upgrade fc0bfa77ff5a -> 34065a4cc718, add priority field to prompts");
    assert_eq!(versions(&db), HEAD);
    assert_eq!(priorities(&db), "1,1");
    assert_eq!(data(&db), data_before);
    let cur = alembic_ok(&db, &["current"], &[]);
    assert_eq!(cur.stdout, format!("{HEAD} (head)\n"), "{cur}");
    // New rows written the original's way (no priority given) still get the default.
    sqlite(
        &db,
        "INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('later', 't', 'haiku', 'basic_agent');",
    );
    assert_eq!(priorities(&db), "1,1,1");
}
