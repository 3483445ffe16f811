//! Pause/resume, backups and restores with the real daemon and client (issue #5, items 6 and 7).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use silica_cron_tests::jobs::{self, script, wait_for};
use silica_cron_tests::{run, Env, Out};

fn config(env: &Env, extra: &str) -> String {
    let agent = script(
        env,
        "agent.sh",
        r#"case "$1" in slow) sleep 30 ;; *) echo "ran $1" ;; esac"#,
    );
    let p = env.path().join("config.toml");
    std::fs::write(
        &p,
        format!("runner = [\"{agent}\", \"{{prompt}}\"]\nkill_grace = 1\n{extra}"),
    )
    .unwrap();
    p.display().to_string()
}

/// `sqlite3 FILE SQL`, trimmed stdout (asserting success).
fn sql(file: &Path, q: &str) -> String {
    let out = run(std::process::Command::new("sqlite3").arg(file).arg(q));
    out.ok();
    out.stdout.trim().to_string()
}

fn secs_into_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60
}

/// Sleeps until `secs` past the next minute boundary.
fn sleep_past_next_minute(secs: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let next = (now.as_secs() / 60 + 1) * 60 + secs;
    std::thread::sleep(Duration::from_secs(next) - now);
}

fn scheduler_line(out: &Out) -> String {
    out.stdout
        .lines()
        .find(|l| l.starts_with("scheduler:"))
        .unwrap_or_default()
        .to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn pause_holds_firing_across_a_restart_and_resume_follows_the_missed_run_policy() {
    let env = Env::built_in();
    let cfg = config(&env, "");
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    // Not within a few seconds of a boundary, so the jobs exist before their first instant.
    if secs_into_minute() > 50 {
        sleep_past_next_minute(1);
    }
    let d = env.start_daemon(&["--config", &cfg]);
    cli(&["prompts", "add", "p", "hello"]).ok();
    for (name, missed) in [("skipper", "skip"), ("catcher", "catch-up")] {
        cli(&[
            "jobs",
            "add",
            name,
            "--prompt",
            "p",
            "--cron",
            "* * * * *",
            "--missed",
            missed,
        ])
        .ok();
    }
    cli(&["pause"]).ok().stdout_has("paused");
    assert_eq!(scheduler_line(&cli(&["status"])), "scheduler:   paused");
    let json = cli(&["status", "--json"]);
    assert!(json.stdout.contains("\"scheduler\": \"paused\""), "{json}");

    // Kept across a restart.
    d.stop();
    let d = env.start_daemon(&["--config", &cfg]);
    assert_eq!(scheduler_line(&cli(&["status"])), "scheduler:   paused");
    assert!(d.log().contains("the scheduler is paused"), "{}", d.log());

    // A manual run still works while paused (a person asked for it).
    cli(&["jobs", "run", "skipper", "--wait"])
        .ok()
        .stdout_has("ran hello");

    sleep_past_next_minute(3);
    assert_eq!(
        env.sqlite("SELECT count(*) FROM job_executions WHERE trigger_kind != 'manual';")
            .stdout
            .trim(),
        "0",
        "nothing fires while paused"
    );

    cli(&["resume"]).ok().stdout_has("resumed");
    assert_eq!(scheduler_line(&cli(&["status"])), "scheduler:   running");
    assert!(!env.path().join("silica-cron.db.paused").exists());
    // The instant missed while paused: `catch-up` runs once now, `skip` does not.
    wait_for(
        &env,
        "SELECT group_concat(j.name || ':' || e.trigger_kind) FROM job_executions e JOIN scheduled_jobs j ON j.id = e.scheduled_job_id WHERE e.trigger_kind != 'manual';",
        "catcher:catch-up",
        Duration::from_secs(10),
    );
    // And firing on schedule is back.
    sleep_past_next_minute(3);
    wait_for(
        &env,
        "SELECT count(*) FROM job_executions e JOIN scheduled_jobs j ON j.id = e.scheduled_job_id WHERE j.name = 'skipper' AND e.trigger_kind = 'schedule';",
        "1",
        Duration::from_secs(10),
    );
    drop(d);
}

#[test]
fn pause_and_resume_work_without_a_daemon_and_the_next_daemon_obeys() {
    let env = Env::built_in();
    let cfg = config(&env, "");
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    let marker = env.path().join("silica-cron.db.paused");

    // No daemon: the one-shot writes the marker, and says a second pause changes nothing.
    cli(&["pause"])
        .ok()
        .stdout_has("Scheduler paused")
        .stdout_has("not running");
    assert!(marker.exists());
    cli(&["pause"]).ok().stdout_has("already paused");

    // The next daemon starts paused, and a resume through it ends the pause.
    let d = env.start_daemon(&["--config", &cfg]);
    let status = cli(&["status"]);
    assert_eq!(scheduler_line(&status), "scheduler:   paused");
    status.stdout_has("jobs:        not read while the scheduler is paused");
    assert!(d.log().contains("the scheduler is paused"), "{}", d.log());
    cli(&["resume"]).ok().stdout_has("Scheduler resumed");
    assert!(!marker.exists());
    cli(&["pause"]).ok();
    assert_eq!(d.stop(), 0);

    // No daemon again: resume removes the marker the daemon wrote; twice changes nothing.
    assert!(marker.exists());
    cli(&["resume"])
        .ok()
        .stdout_has("Scheduler resumed")
        .stdout_has("not running");
    assert!(!marker.exists());
    cli(&["resume"]).ok().stdout_has("was not paused");
    let d = env.start_daemon(&["--config", &cfg]);
    assert_eq!(scheduler_line(&cli(&["status"])), "scheduler:   running");
    drop(d);

    // A marker that cannot be written (a directory where its temp file goes; root is refused
    // too) or removed (a directory in its place): the path is named, exit 1, nothing changed.
    let tmp = env.path().join("silica-cron.db.paused.tmp");
    std::fs::create_dir_all(tmp.join("in-the-way")).unwrap();
    cli(&["pause"])
        .code(1)
        .stderr_has("silica-cron: pause: cannot write the pause marker")
        .stderr_has(&marker.display().to_string());
    assert!(!marker.exists());
    assert!(tmp.join("in-the-way").exists());
    std::fs::create_dir_all(marker.join("in-the-way")).unwrap();
    cli(&["resume"])
        .code(1)
        .stderr_has("silica-cron: resume: cannot remove the pause marker")
        .stderr_has(&marker.display().to_string());
    assert!(marker.join("in-the-way").exists());
}

/// Prompts added and runs recorded in a loop by another thread while backups are taken.
#[test]
fn a_backup_under_write_load_is_consistent_and_restores_into_the_running_daemon() {
    let env = Env::built_in();
    let cfg = config(&env, "");
    let d = env.start_daemon(&["--config", &cfg]);
    let pid = d.pid();
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    cli(&["prompts", "add", "seed", "seed"]).ok();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, env_path, cfg) = (stop.clone(), env.path().to_owned(), cfg.clone());
        let bin = silica_cron_tests::bin("silica-cron");
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("load-{n}");
                for args in [
                    vec!["prompts", "add", name.as_str(), "text"],
                    vec!["prompts", "run", "seed"],
                ] {
                    let out = run(std::process::Command::new(&bin)
                        .current_dir(&env_path)
                        .arg("--config")
                        .arg(&cfg)
                        .args(&args));
                    assert_eq!(out.code, 0, "{out}");
                }
                n += 1;
            }
            n
        })
    };
    let live_rev = sql(&env.db(), "SELECT version_num FROM cron_alembic_version;");
    let mut backups: Vec<PathBuf> = Vec::new();
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        let path = env.path().join(format!("b{i}.db"));
        cli(&["backup", path.to_str().unwrap()])
            .ok()
            .stdout_has("Backed up the database to")
            .stdout_has(path.to_str().unwrap());
        backups.push(path);
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(
        written > 3,
        "the load ran during the backups ({written} rounds)"
    );
    for b in &backups {
        assert_eq!(sql(b, "PRAGMA integrity_check;"), "ok", "{}", b.display());
        assert_eq!(
            sql(b, "SELECT version_num FROM cron_alembic_version;"),
            live_rev
        );
        // No temp file left beside it.
        assert!(files_in(env.path()).iter().all(|f| !f.contains(".tmp-")));
    }
    // Manual runs are still finishing: wait, so the restore has no run in progress.
    wait_for(
        &env,
        "SELECT count(*) FROM job_executions WHERE status IN ('pending', 'running');",
        "0",
        Duration::from_secs(20),
    );
    let backup = &backups[1];
    let prompts_in_backup = sql(backup, "SELECT count(*) FROM prompts;");
    let runs_in_backup = sql(backup, "SELECT count(*) FROM job_executions;");
    cli(&["prompts", "add", "after-backup", "text"]).ok();

    // Over an existing file: refused, naming it, unless --force.
    cli(&["backup", backups[0].to_str().unwrap()])
        .code(1)
        .stderr_has(&format!(
            "{} already exists; use --force",
            backups[0].display()
        ));
    cli(&["backup", "--force", backups[0].to_str().unwrap()]).ok();

    let out = cli(&["restore", backup.to_str().unwrap()]);
    out.ok()
        .stderr_has("integrity ok")
        .stderr_has("Backed up the current database to")
        .stdout_has("Restored");
    let status = cli(&["status"]);
    status.ok().stdout_has(&format!("(pid {pid})"));
    assert_eq!(scheduler_line(&status), "scheduler:   running");
    assert_eq!(
        sql(&env.db(), "SELECT count(*) FROM prompts;"),
        prompts_in_backup
    );
    assert_eq!(
        sql(&env.db(), "SELECT count(*) FROM job_executions;"),
        runs_in_backup
    );
    cli(&["prompts", "show", "after-backup"]).code(1);
    // The database that was replaced is kept as an automatic backup, with the late prompt.
    let dir = env.path().join("backups");
    let auto: Vec<String> = files_in(&dir)
        .into_iter()
        .filter(|f| f.ends_with("-auto-restore.db"))
        .collect();
    assert_eq!(auto.len(), 1, "{auto:?}");
    assert_eq!(
        sql(
            &dir.join(&auto[0]),
            "SELECT count(*) FROM prompts WHERE name = 'after-backup';"
        ),
        "1"
    );
    // The daemon goes on with the restored file: writes land in it and survive a restart.
    cli(&["prompts", "add", "after-restore", "text"]).ok();
    assert!(files_in(env.path())
        .iter()
        .all(|f| !f.ends_with(".restore")));
    d.stop();
    assert_eq!(sql(&env.db(), "PRAGMA integrity_check;"), "ok");
    assert_eq!(
        sql(
            &env.db(),
            "SELECT count(*) FROM prompts WHERE name IN ('after-restore', 'after-backup');"
        ),
        "1"
    );
}

#[test]
fn restore_refuses_bad_files_and_runs_in_progress_and_changes_nothing() {
    let env = Env::built_in();
    let cfg = config(&env, "");
    let d = env.start_daemon(&["--config", &cfg]);
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    cli(&["prompts", "add", "keep", "text"]).ok();
    let good = env.path().join("good.db");
    cli(&["backup", good.to_str().unwrap()]).ok();
    cli(&["prompts", "add", "later", "text"]).ok();

    let text = env.path().join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, but long enough to have a header ".repeat(20),
    )
    .unwrap();
    let corrupt = env.path().join("corrupt.db");
    let mut bytes = std::fs::read(&good).unwrap();
    // Garbage over every page after the first: the schema is still read, the b-trees are not.
    for b in bytes.iter_mut().skip(4096) {
        *b = 0x5a;
    }
    std::fs::write(&corrupt, bytes).unwrap();
    let unknown = env.path().join("unknown.db");
    std::fs::copy(&good, &unknown).unwrap();
    sql(
        &unknown,
        "UPDATE cron_alembic_version SET version_num = 'ffffffffffff';",
    );
    let foreign = env.path().join("foreign.db");
    sql(&foreign, "CREATE TABLE t (x); INSERT INTO t VALUES (1);");
    let missing = env.path().join("missing.db");

    for (file, says) in [
        (&text, "is not a SQLite database".to_string()),
        (&corrupt, "fails PRAGMA integrity_check".to_string()),
        (
            &unknown,
            "is at revision ffffffffffff, which no revision file".to_string(),
        ),
        (&foreign, "not a silica-cron database".to_string()),
        (&missing, "cannot read".to_string()),
    ] {
        let out = cli(&["restore", file.to_str().unwrap()]);
        out.code(1)
            .stderr_has(&format!("{}", file.display()))
            .stderr_has(&says);
        if file != &missing {
            out.stderr_has("nothing was changed");
        }
    }
    // Nothing changed: the live data, no automatic backup, no temp copy, the scheduler runs.
    cli(&["prompts", "show", "later"]).ok();
    assert!(!env.path().join("backups").exists());
    assert!(!env.path().join("silica-cron.db.restore").exists());
    assert_eq!(scheduler_line(&cli(&["status"])), "scheduler:   running");

    // A run in progress: refused unless --force, which interrupts it first.
    cli(&["prompts", "add", "slow", "slow"]).ok();
    let started = cli(&["prompts", "run", "slow"]);
    started.ok();
    wait_for(
        &env,
        "SELECT status FROM job_executions ORDER BY id DESC LIMIT 1;",
        "running",
        Duration::from_secs(10),
    );
    cli(&["restore", good.to_str().unwrap()])
        .code(1)
        .stderr_has("run(s) in progress")
        .stderr_has("--force");
    cli(&["prompts", "show", "later"]).ok();
    assert_eq!(scheduler_line(&cli(&["status"])), "scheduler:   running");
    cli(&["restore", "--force", good.to_str().unwrap()])
        .ok()
        .stderr_has("Interrupting 1 run(s)");
    cli(&["prompts", "show", "later"]).code(1);
    cli(&["prompts", "show", "keep"]).ok();
    // The replaced database has the interrupted run on record.
    let dir = env.path().join("backups");
    let auto = files_in(&dir);
    assert_eq!(auto.len(), 1, "{auto:?}");
    assert_eq!(
        sql(
            &dir.join(&auto[0]),
            "SELECT status FROM job_executions ORDER BY id DESC LIMIT 1;"
        ),
        "interrupted"
    );
    drop(d);
}

#[test]
fn automatic_backups_before_rebuild_keep_the_newest_n_and_never_touch_manual_ones() {
    let env = Env::built_in();
    let cfg = config(&env, "backup_dir = \"bk\"\nkeep_automatic_backups = 2\n");
    let dir = env.path().join("bk");
    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    // Without a daemon, backup and restore run one-shot.
    cli(&["migrate", "upgrade"]).ok();
    let manual = cli(&["backup"]);
    manual
        .ok()
        .stdout_has(&format!("{}/silica-cron-", dir.display()));
    assert_eq!(files_in(&dir).len(), 1);

    let _d = env.start_daemon(&["--config", &cfg]);
    for i in 0..3 {
        cli(&["prompts", "add", &format!("before-rebuild-{i}"), "text"]).ok();
        cli(&["migrate", "rebuild"])
            .ok()
            .stderr_has("Backed up the database to");
    }
    let files = files_in(&dir);
    let auto: Vec<&String> = files
        .iter()
        .filter(|f| f.ends_with("-auto-rebuild.db"))
        .collect();
    assert_eq!(auto.len(), 2, "{files:?}");
    assert_eq!(files.len(), 3, "the manual backup stays: {files:?}");
    // The newest automatic one holds what the last rebuild deleted.
    assert_eq!(
        sql(&dir.join(auto[1]), "SELECT name FROM prompts;"),
        "before-rebuild-2"
    );
    assert_eq!(sql(&dir.join(auto[1]), "PRAGMA integrity_check;"), "ok");
}

#[test]
fn production_start_backs_up_before_upgrading_and_restore_works_without_a_daemon() {
    let env = Env::built_in();
    let old = env.path().join("old.db");
    env.cli(&[
        "--db",
        old.to_str().unwrap(),
        "migrate",
        "upgrade",
        "34065a4cc718",
    ])
    .ok();
    sql(&old, "INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('from-old', 't', 'haiku', 'basic_agent');");
    std::fs::copy(&old, env.db()).unwrap();

    // One-shot restore (no daemon) of an older revision, in development: kept as it is.
    let out = env.cli(&["restore", old.to_str().unwrap()]);
    out.ok().stderr_has("behind head").stdout_has("Restored");
    assert_eq!(
        sql(&env.db(), "SELECT version_num FROM cron_alembic_version;"),
        "34065a4cc718"
    );

    let prod = Env::built_in().with_var("SILICA_ENVIRONMENT", "production");
    std::fs::copy(&old, prod.db()).unwrap();
    let d = prod.start_daemon(&[]);
    let dir = prod.path().join("backups");
    let files = files_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("-auto-upgrade.db"), "{files:?}");
    assert_eq!(
        sql(
            &dir.join(&files[0]),
            "SELECT version_num FROM cron_alembic_version;"
        ),
        "34065a4cc718"
    );
    // A production restore of a backup behind head upgrades the copy before the swap.
    prod.cli(&["restore", old.to_str().unwrap()])
        .ok()
        .stdout_has("Restored");
    let status = prod.cli(&["status"]);
    assert_eq!(scheduler_line(&status), "scheduler:   running");
    assert_eq!(sql(&prod.db(), "SELECT name FROM prompts;"), "from-old");
    drop(d);
}
