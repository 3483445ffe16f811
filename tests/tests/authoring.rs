//! Schema authoring (issue #3): the seed guide's "Schema Changes" and "Collaboration Workflows"
//! with `migrate create`, `check`, `merge`, on databases holding rows, and the checksum ledger.

use std::path::{Path, PathBuf};

use silica_cron_tests::{Env, Out};

/// A checkout-like migrations dir: schema.sql and the revisions whose file names start with one of
/// `keep` (all when empty).
fn checkout(env: &Env, keep: &[&str]) -> PathBuf {
    let dir = env.path().join("migrations");
    std::fs::create_dir_all(dir.join("versions")).unwrap();
    std::fs::copy(
        silica_cron_tests::original_chain().join("schema.sql"),
        dir.join("schema.sql"),
    )
    .unwrap();
    for e in std::fs::read_dir(silica_cron_tests::original_chain().join("versions")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if keep.is_empty() || keep.iter().any(|k| name.contains(k)) {
            std::fs::copy(e.path(), dir.join("versions").join(&name)).unwrap();
        }
    }
    dir
}

fn edit_schema(dir: &Path, f: impl FnOnce(String) -> String) {
    let p = dir.join("schema.sql");
    let s = std::fs::read_to_string(&p).unwrap();
    let new = f(s.clone());
    assert_ne!(new, s, "the edit must change schema.sql");
    std::fs::write(p, new).unwrap();
}

fn generated(out: &Out) -> PathBuf {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Generating "))
        .unwrap_or_else(|| panic!("no Generating line:\n{out}"));
    PathBuf::from(
        line.trim_start_matches("Generating ")
            .trim_end_matches(" ...  done"),
    )
}

fn populate(env: &Env) {
    env.sqlite(
        "INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('Daily Summary', 'Summarise', 'haiku', 'basic_agent');
         INSERT INTO scheduled_jobs (name, prompt_id, cron_expression, is_active) VALUES ('daily', 1, '0 9 * * *', 1);
         INSERT INTO job_executions (scheduled_job_id, session_id, status, output) VALUES (1, 's-1', 'completed', 'ok');",
    )
    .ok();
}

fn rows(env: &Env) -> String {
    env.sqlite("SELECT p.name, j.name, e.status, e.output FROM prompts p JOIN scheduled_jobs j ON j.prompt_id = p.id JOIN job_executions e ON e.scheduled_job_id = j.id;")
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// The schema's statements, byte for byte, in a stable order (a rebuilt table moves to the
/// end of sqlite_master; its text must not change).
fn schema_set(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env
        .sqlite(".schema")
        .ok()
        .stdout
        .split(";\n")
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// create -> upgrade -> downgrade -> upgrade on a populated database, data checked each time.
fn cycle(env: &Env, message: &str, detected: &str) -> PathBuf {
    let before = rows(env);
    assert!(!before.is_empty());
    env.cli(&["migrate", "check"]).code(1).stdout_has(detected);
    let out = env.cli(&["migrate", "create", message]);
    out.ok()
        .stderr_has(&format!("INFO  [alembic.autogenerate.compare] {detected}"))
        .stdout_has("✅ Migration created successfully")
        .stdout_has("   Review the generated migration file before applying");
    let file = generated(&out);
    assert!(file.is_file(), "{}", file.display());
    env.cli(&["migrate", "check"])
        .ok()
        .stdout_has("No new upgrade operations detected.");
    let schema_before = schema_set(env);
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(rows(env), before, "upgrade lost data");
    assert_eq!(env.sqlite("PRAGMA foreign_key_check;").ok().stdout, "");
    env.cli(&["migrate", "downgrade", "-1"]).ok();
    assert_eq!(rows(env), before, "downgrade lost data");
    assert_eq!(
        schema_set(env),
        schema_before,
        "downgrade did not restore the schema"
    );
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(rows(env), before);
    assert_eq!(
        env.sqlite("PRAGMA integrity_check;").ok().stdout.trim(),
        "ok"
    );
    file
}

#[test]
fn seed_guide_schema_changes_on_a_populated_database() {
    let env = Env::new();
    // The chain before the priority revision, and a schema.sql that declares priority.
    let dir = checkout(&env, &["5d8b746712b6", "fc0bfa77ff5a"]);
    let env = env.with_var("SILICA_CRON_MIGRATIONS", dir.to_str().unwrap());
    env.cli(&["migrate", "upgrade"]).ok();
    populate(&env);

    // Adding a new column (the guide's priority field, with its model default).
    let file = cycle(
        &env,
        "add priority field to prompts",
        "Detected added column 'prompts.priority'",
    );
    assert!(file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with("_add_priority_field_to_prompts.sql"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("-- Revises: fc0bfa77ff5a\n"), "{text}");
    assert!(
        text.contains("ALTER TABLE prompts ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE prompts DROP COLUMN priority;"),
        "{text}"
    );
    assert_eq!(
        env.sqlite("SELECT priority FROM prompts;")
            .ok()
            .stdout
            .trim(),
        "1"
    );

    // Modifying an existing column: status VARCHAR(50) -> VARCHAR(100), a table rebuild.
    edit_schema(&dir, |s| {
        s.replace("\tstatus VARCHAR(50), ", "\tstatus VARCHAR(100), ")
    });
    let file = cycle(
        &env,
        "increase status column length",
        "Detected type change from VARCHAR(50) to VARCHAR(100) on 'job_executions.status'",
    );
    assert!(std::fs::read_to_string(file)
        .unwrap()
        .contains("ALTER TABLE job_executions RENAME TO _silica_old_job_executions"));
    let schema = env.sqlite(".schema job_executions").ok().stdout.clone();
    assert!(
        schema.starts_with("CREATE TABLE job_executions (\n\tid INTEGER NOT NULL, "),
        "the declared text is kept: {schema}"
    );
    assert!(schema.contains("status VARCHAR(100)"));

    // Adding a new table.
    edit_schema(&dir, |s| {
        s + "\nCREATE TABLE job_templates (\n\tid INTEGER NOT NULL, \n\tname VARCHAR(255) NOT NULL, \n\tdescription TEXT, \n\tdefault_cron VARCHAR(100) NOT NULL, \n\tcreated_at DATETIME DEFAULT (CURRENT_TIMESTAMP), \n\tPRIMARY KEY (id), \n\tUNIQUE (name)\n);\nCREATE INDEX ix_job_templates_id ON job_templates (id);\n"
    });
    cycle(
        &env,
        "add job templates table",
        "Detected added table 'job_templates'",
    );
    env.sqlite("INSERT INTO job_templates (name, default_cron) VALUES ('t', '* * * * *');")
        .ok();

    // Adding a relationship: prompts.template_id -> job_templates.id.
    edit_schema(&dir, |s| {
        s.replace("\tpriority INTEGER NOT NULL DEFAULT 1, ", "\tpriority INTEGER NOT NULL DEFAULT 1, \n\ttemplate_id INTEGER, ").replacen(
            "\tPRIMARY KEY (id)\n);\nCREATE INDEX ix_prompts_id",
            "\tPRIMARY KEY (id), \n\tFOREIGN KEY(template_id) REFERENCES job_templates (id)\n);\nCREATE INDEX ix_prompts_id",
            1,
        )
    });
    cycle(
        &env,
        "add template relationship to prompts",
        "Detected added foreign key (template_id)(id) on table prompts",
    );
    env.sqlite("UPDATE prompts SET template_id = 1;").ok();
    assert_eq!(
        env.sqlite("PRAGMA foreign_key_list(prompts);")
            .ok()
            .stdout
            .trim(),
        "0|0|job_templates|template_id|id|NO ACTION|NO ACTION|NONE"
    );
    // Rebuilding from scratch replays the whole chain.
    env.cli(&["migrate", "rebuild"]).ok();
    env.cli(&["migrate", "check"]).ok();
    assert_eq!(env.cli(&["migrate", "history"]).ok().lines().len(), 6);
}

#[test]
fn not_null_without_default_is_refused_at_create_time() {
    let env = Env::new();
    let dir = checkout(&env, &[]);
    let env = env.with_var("SILICA_CRON_MIGRATIONS", dir.to_str().unwrap());
    edit_schema(&dir, |s| {
        s.replace(
            "\tpersona VARCHAR(50) NOT NULL, ",
            "\tpersona VARCHAR(50) NOT NULL, \n\towner VARCHAR(50) NOT NULL, ",
        )
    });
    let out = env.cli(&["migrate", "create", "add owner"]);
    out.code(1)
        .stderr_has("'prompts.owner' is NOT NULL with no default")
        .stderr_has("Give it a default");
    assert_eq!(
        std::fs::read_dir(dir.join("versions")).unwrap().count(),
        3,
        "no file may be written"
    );
}

#[test]
fn no_change_writes_an_empty_revision_and_empty_flag() {
    let env = Env::new();
    let dir = checkout(&env, &[]);
    let env = env.with_var("SILICA_CRON_MIGRATIONS", dir.to_str().unwrap());
    let out = env.cli(&["migrate", "create", "nothing here"]);
    out.ok().stderr_has("No changes in schema detected.");
    let text = std::fs::read_to_string(generated(&out)).unwrap();
    assert!(
        text.contains("-- migrate:upgrade\n\n-- migrate:downgrade\n"),
        "{text}"
    );
    let out = env.cli(&["migrate", "create", "--empty", "hand written"]);
    out.ok();
    let text = std::fs::read_to_string(generated(&out)).unwrap();
    assert!(text.contains("-- Revises: "), "{text}");
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(env.cli(&["migrate", "history"]).ok().lines().len(), 5);
    // Without a directory there is nowhere to write.
    let bare = Env::built_in();
    bare.cli(&["migrate", "create", "x"])
        .code(1)
        .stderr_has("--migrations-dir");
}

#[test]
fn branches_merge_and_rebuild() {
    let env = Env::new();
    let dir = checkout(&env, &[]);
    let env = env.with_var("SILICA_CRON_MIGRATIONS", dir.to_str().unwrap());
    env.cli(&["migrate", "upgrade"]).ok();
    populate(&env);
    // Two developers branch from the same parent: simulate by writing one revision, moving it
    // aside, writing another from the same head, then putting both back.
    edit_schema(&dir, |s| {
        s.replace(
            "\tdescription TEXT, \n\tprompt_text",
            "\tdescription TEXT, \n\ttags VARCHAR(200), \n\tprompt_text",
        )
    });
    let a = generated(env.cli(&["migrate", "create", "add tags"]).ok());
    let aside = env.path().join("aside.sql");
    std::fs::rename(&a, &aside).unwrap();
    edit_schema(&dir, |s| {
        s.replace("\ttags VARCHAR(200), \n", "\towner VARCHAR(50), \n")
    });
    let b = generated(env.cli(&["migrate", "create", "add owner"]).ok());
    std::fs::rename(&aside, &a).unwrap();
    edit_schema(&dir, |s| {
        s.replace(
            "\towner VARCHAR(50), \n",
            "\ttags VARCHAR(200), \n\towner VARCHAR(50), \n",
        )
    });

    let id = |p: &Path| p.file_name().unwrap().to_str().unwrap()[14..26].to_string();
    let (ida, idb) = (id(&a), id(&b));
    let heads = env.cli(&["migrate", "heads"]).ok().stdout.clone();
    assert!(heads.contains(&ida) && heads.contains(&idb), "{heads}");
    env.cli(&["migrate", "create", "more"])
        .code(1)
        .stderr_has("Multiple heads are present")
        .stderr_has(&ida)
        .stderr_has(&idb);
    let branches = env.cli(&["migrate", "branches"]).ok().stdout.clone();
    assert!(
        branches.starts_with("34065a4cc718 (branchpoint)\n"),
        "{branches}"
    );
    env.cli(&["migrate", "upgrade"])
        .code(1)
        .stderr_has("Multiple head revisions");

    let m = env.cli(&["migrate", "merge", "-m", "merge tags and owner", "heads"]);
    let merge = generated(m.ok());
    let text = std::fs::read_to_string(&merge).unwrap();
    let (first, second) = if ida < idb {
        (&ida, &idb)
    } else {
        (&idb, &ida)
    };
    assert!(
        text.contains(&format!("-- Revises: {first}, {second}"))
            || text.contains(&format!("-- Revises: {second}, {first}")),
        "{text}"
    );
    let history = env.cli(&["migrate", "history"]).ok().stdout.clone();
    assert!(
        history
            .lines()
            .next()
            .unwrap()
            .contains("(head) (mergepoint), merge tags and owner"),
        "{history}"
    );
    env.cli(&["migrate", "upgrade"]).ok();
    env.cli(&["migrate", "check"]).ok();
    assert_eq!(
        env.sqlite(
            "SELECT count(*) FROM pragma_table_info('prompts') WHERE name IN ('tags', 'owner');"
        )
        .ok()
        .stdout
        .trim(),
        "2"
    );
    assert!(!rows(&env).is_empty());
    env.cli(&["migrate", "rebuild"]).ok();
    env.cli(&["migrate", "status"]).ok();
    env.cli(&["migrate", "check"]).ok();
}

#[test]
fn changed_revision_files_are_noticed() {
    let env = Env::new();
    let dir = checkout(&env, &[]);
    let env = env.with_var("SILICA_CRON_MIGRATIONS", dir.to_str().unwrap());
    env.cli(&["migrate", "upgrade"]).ok();
    assert_eq!(
        env.sqlite("SELECT count(*) FROM silica_cron_revision_ledger WHERE length(checksum) = 64;")
            .ok()
            .stdout
            .trim(),
        "3"
    );
    let file = dir.join("versions/20250817_0824_34065a4cc718_add_priority_field_to_prompts.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    // Line endings and trailing whitespace do not count.
    std::fs::write(&file, text.replace('\n', "  \r\n")).unwrap();
    let s = env.cli(&["migrate", "status"]);
    s.ok();
    assert!(!s.stderr.contains("changed since it was applied"), "{s}");
    // A real edit does.
    std::fs::write(&file, text.replace("DEFAULT 1;", "DEFAULT 2;")).unwrap();
    env.cli(&["migrate", "status"])
        .ok()
        .stderr_has("revision 34065a4cc718")
        .stderr_has("changed since it was applied");
    env.cli(&["migrate", "upgrade"])
        .ok()
        .stderr_has("changed since it was applied");
    let prod = |args: &[&str]| {
        let mut c = env.command("silica-cron");
        c.args(args).env("SILICA_ENVIRONMENT", "production");
        silica_cron_tests::run(&mut c)
    };
    prod(&["migrate", "upgrade"])
        .code(1)
        .stderr_has("refused in production");
    // Recording the change clears it.
    env.cli(&["migrate", "stamp", "current"]).ok();
    let s = env.cli(&["migrate", "status"]);
    assert!(!s.stderr.contains("changed since"), "{s}");
    prod(&["migrate", "upgrade"]).ok();
}
