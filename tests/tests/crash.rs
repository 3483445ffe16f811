//! kill -9 at random instants during a long upgrade (a table rebuild over many rows), one-shot
//! and with a daemon: every time the database must be intact and at a revision, never between
//! two (DESIGN §3), and the next run must finish the job.
//!
//! Iterations per scenario: 20, or `CRASH_ITERATIONS`. The summary lines are printed to stdout
//! (`cargo test -p silica-cron-tests --test crash -- --nocapture` shows them).

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use silica_cron_tests::{run, Env, Out};

const OLD: &str = "34065a4cc718";
const NEW: &str = "a1b2c3d4e5f6";
const ROWS: u32 = 150_000;
const DEFAULT_ITERATIONS: u32 = 20;

/// The 4th revision: rebuilds job_executions with an extra column (move-and-copy, as alembic's
/// batch mode does), and back.
const REBUILD: &str = "-- rebuild job_executions with attempt
--
-- Revision ID: a1b2c3d4e5f6
-- Revises: 34065a4cc718
-- Create Date: 2026-02-01 00:00:00

-- migrate:upgrade
CREATE TABLE job_executions_new (
\tid INTEGER NOT NULL, 
\tscheduled_job_id INTEGER, 
\tsession_id VARCHAR(36), 
\tstarted_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
\tcompleted_at DATETIME, 
\tstatus VARCHAR(50), 
\toutput TEXT, 
\terror_message TEXT, 
\tattempt INTEGER NOT NULL DEFAULT 1, 
\tPRIMARY KEY (id), 
\tFOREIGN KEY(scheduled_job_id) REFERENCES scheduled_jobs (id)
);
INSERT INTO job_executions_new (id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message)
SELECT id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message FROM job_executions;
DROP TABLE job_executions;
ALTER TABLE job_executions_new RENAME TO job_executions;
CREATE INDEX ix_job_executions_id ON job_executions (id);
CREATE INDEX ix_job_executions_session_id ON job_executions (session_id);

-- migrate:downgrade
CREATE TABLE job_executions_old (
\tid INTEGER NOT NULL, 
\tscheduled_job_id INTEGER, 
\tsession_id VARCHAR(36), 
\tstarted_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
\tcompleted_at DATETIME, 
\tstatus VARCHAR(50), 
\toutput TEXT, 
\terror_message TEXT, 
\tPRIMARY KEY (id), 
\tFOREIGN KEY(scheduled_job_id) REFERENCES scheduled_jobs (id)
);
INSERT INTO job_executions_old (id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message)
SELECT id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message FROM job_executions;
DROP TABLE job_executions;
ALTER TABLE job_executions_old RENAME TO job_executions;
CREATE INDEX ix_job_executions_id ON job_executions (id);
CREATE INDEX ix_job_executions_session_id ON job_executions (session_id);
";

/// splitmix64: small, deterministic, good enough to spread kill instants.
struct Rng(u64);

impl Rng {
    fn new(scenario: u64, iteration: u32) -> Rng {
        Rng((scenario << 32) ^ u64::from(iteration) ^ 0x5EED_C0DE_0000_0000)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, max].
    fn delay(&mut self, max: Duration) -> Duration {
        let us = max.as_micros() as u64;
        Duration::from_micros(self.next() % (us + 1))
    }
}

fn iterations() -> u32 {
    std::env::var("CRASH_ITERATIONS")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("CRASH_ITERATIONS={v:?} is not a number"))
        })
        .unwrap_or(DEFAULT_ITERATIONS)
}

fn sqlite(db: &Path, sql: &str) -> Out {
    let out = run(Command::new("sqlite3").arg(db).arg(sql));
    assert_eq!(out.code, 0, "sqlite3 {sql:?} failed:\n{out}");
    out
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// What every iteration starts from and compares against.
struct Fixture {
    env: Env,
    migrations: String,
    pristine: PathBuf,
    schema_old: String,
    schema_new: String,
    /// count, sum of ids, sum of job ids, total output length: must survive every crash.
    fingerprint: String,
    /// How long an uninterrupted upgrade takes, start of process to exit.
    full_upgrade: Duration,
}

impl Fixture {
    fn new() -> Fixture {
        let env = Env::new();
        let versions = env.path().join("migrations/versions");
        std::fs::create_dir_all(&versions).unwrap();
        for e in std::fs::read_dir(silica_cron_tests::original_chain().join("versions")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), versions.join(e.file_name())).unwrap();
        }
        std::fs::write(
            versions.join("20260201_0000_a1b2c3d4e5f6_rebuild_job_executions.sql"),
            REBUILD,
        )
        .unwrap();
        let migrations = env.path().join("migrations").display().to_string();

        let pristine = env.path().join("pristine.db");
        let p = pristine.display().to_string();
        env.cli(&[
            "--db",
            &p,
            "--migrations-dir",
            &migrations,
            "migrate",
            "upgrade",
            OLD,
        ])
        .ok();
        sqlite(
            &pristine,
            &format!(
                "INSERT INTO prompts (name, prompt_text, model, persona) VALUES ('p', 'text', 'haiku', 'basic_agent');
                 INSERT INTO scheduled_jobs (name, prompt_id, cron_expression, is_active) VALUES ('j', 1, '* * * * *', 1);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
                 INSERT INTO job_executions (scheduled_job_id, session_id, started_at, completed_at, status, output)
                 SELECT CASE WHEN i % 3 = 0 THEN NULL ELSE 1 END, printf('%08x-0000-4000-8000-%012x', i, i * 7),
                        '2026-01-01 00:00:00', '2026-01-01 00:01:00', 'completed', 'output line ' || i FROM n;"
            ),
        );
        for s in ["-wal", "-shm", "-journal"] {
            assert!(!sibling(&pristine, s).exists(), "pristine{s} left behind");
        }
        let schema_old = sqlite(&pristine, ".schema").stdout;
        let fingerprint = fingerprint(&pristine);
        assert!(
            fingerprint.starts_with(&format!("{ROWS}|")),
            "{fingerprint}"
        );

        let mut fx = Fixture {
            env,
            migrations,
            pristine,
            schema_old,
            schema_new: String::new(),
            fingerprint,
            full_upgrade: Duration::ZERO,
        };
        // Calibration: one uninterrupted upgrade gives the time window and the schema at NEW.
        fx.reset();
        let t0 = Instant::now();
        fx.cli(&["migrate", "upgrade"])
            .ok()
            .stderr_has("Running upgrade 34065a4cc718 -> a1b2c3d4e5f6");
        fx.full_upgrade = t0.elapsed();
        fx.schema_new = sqlite(&fx.db(), ".schema").stdout;
        assert_ne!(fx.schema_new, fx.schema_old);
        assert!(fx.schema_new.contains("attempt INTEGER NOT NULL DEFAULT 1"));
        assert_eq!(fx.check_database(), NEW);
        fx
    }

    fn db(&self) -> PathBuf {
        self.env.db()
    }

    fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec!["--migrations-dir", &self.migrations];
        all.extend_from_slice(args);
        self.env.cli(&all)
    }

    /// `silica-cron --migrations-dir DIR migrate upgrade`, not waited for.
    fn spawn_upgrade(&self, log: &str) -> Child {
        let log = File::create(self.env.path().join(log)).unwrap();
        self.env
            .command("silica-cron")
            .args(["--migrations-dir", &self.migrations, "migrate", "upgrade"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn silica-cron")
    }

    /// Puts the pristine file in place. Only called when every process that had the database
    /// open has exited (killed and reaped, or stopped): a stale -wal must not be replayed onto
    /// the new copy, so it goes first.
    fn reset(&self) {
        let db = self.db();
        for s in ["-wal", "-shm", "-journal"] {
            match std::fs::remove_file(sibling(&db, s)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot remove {s}: {e}"),
            }
        }
        std::fs::copy(&self.pristine, &db).unwrap();
    }

    /// Checks the database a crash left; returns the revision it is at.
    fn check_database(&self) -> &'static str {
        let db = self.db();
        assert_eq!(
            sqlite(&db, "PRAGMA integrity_check;").stdout,
            "ok\n",
            "integrity_check"
        );
        let versions = sqlite(&db, "SELECT version_num FROM cron_alembic_version;").stdout;
        let rev = match versions.as_str() {
            "34065a4cc718\n" => OLD,
            "a1b2c3d4e5f6\n" => NEW,
            other => {
                panic!("the version table must hold exactly one row, {OLD} or {NEW}: {other:?}")
            }
        };
        let schema = sqlite(&db, ".schema").stdout;
        let expected = if rev == NEW {
            &self.schema_new
        } else {
            &self.schema_old
        };
        assert_eq!(&schema, expected, "schema does not match revision {rev}");
        let attempt = sqlite(
            &db,
            "SELECT count(*) FROM pragma_table_info('job_executions') WHERE name = 'attempt';",
        )
        .stdout;
        assert_eq!(
            attempt.trim(),
            if rev == NEW { "1" } else { "0" },
            "job_executions.attempt exists iff at {NEW}"
        );
        assert_eq!(
            fingerprint(&db),
            self.fingerprint,
            "job_executions rows changed"
        );
        // The ledger of applied revisions is written in the same transaction (README).
        let recorded = sqlite(
            &db,
            &format!("SELECT count(*) FROM silica_cron_revision_ledger WHERE revision = '{NEW}';"),
        )
        .stdout;
        assert_eq!(
            recorded.trim(),
            if rev == NEW { "1" } else { "0" },
            "the ledger records {NEW} iff the database is at it"
        );
        assert_eq!(sqlite(&db, "PRAGMA foreign_key_check;").stdout, "");
        rev
    }

    /// After recovery: at NEW, rows intact, and `migrate status` says so.
    fn check_finished(&self) {
        self.cli(&["migrate", "status"])
            .ok()
            .stdout_has("✅ Cron database is up to date");
        let db = self.db();
        assert_eq!(
            sqlite(&db, "SELECT version_num FROM cron_alembic_version;").stdout,
            format!("{NEW}\n")
        );
        assert_eq!(fingerprint(&db), self.fingerprint);
        assert_eq!(
            sqlite(
                &db,
                "SELECT count(*), min(attempt), max(attempt) FROM job_executions;"
            )
            .stdout
            .trim(),
            format!("{ROWS}|1|1")
        );
    }

    /// Kill instants are drawn from [0, window]: the whole upgrade plus a margin after it.
    fn window(&self) -> Duration {
        self.full_upgrade.mul_f64(1.15)
    }
}

fn fingerprint(db: &Path) -> String {
    sqlite(
        db,
        "SELECT count(*), sum(id), total(coalesce(scheduled_job_id, 0)), total(length(output)), count(session_id) FROM job_executions;",
    )
    .stdout
    .trim()
    .to_string()
}

#[derive(Default)]
struct Tally {
    at_old: u32,
    at_new: u32,
    finished_before_kill: u32,
    worst_recovery: Duration,
}

impl Tally {
    fn add(&mut self, rev: &str, recovery: Duration) {
        if rev == NEW {
            self.at_new += 1;
        } else {
            self.at_old += 1;
        }
        self.worst_recovery = self.worst_recovery.max(recovery);
    }

    fn summary(&self, scenario: &str, n: u32, fx: &Fixture, finished: &str) -> String {
        format!(
            "crash {scenario}: {n} iterations (kill within {:?}, full upgrade {:?}); ended at {OLD}: {}, at {NEW}: {}; {finished}: {}; worst recovery {:?}",
            fx.window(),
            fx.full_upgrade,
            self.at_old,
            self.at_new,
            self.finished_before_kill,
            self.worst_recovery
        )
    }
}

/// Waits for a child to exit, at most `limit`.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One-shot: `silica-cron migrate upgrade` execs silica-crond (no daemon runs), which is killed.
#[test]
fn kill_one_shot_upgrade_at_random_instants() {
    let fx = Fixture::new();
    // The revision's downgrade is its inverse. A renamed table's stored DDL names it quoted,
    // which the sqlite3 shell prints as `CREATE TABLE IF NOT EXISTS "t"`: compare without that.
    fx.cli(&["migrate", "downgrade", "-1"]).ok();
    let unquoted = |s: &str| {
        s.replace("CREATE TABLE IF NOT EXISTS ", "CREATE TABLE ")
            .replace('"', "")
    };
    assert_eq!(
        unquoted(&sqlite(&fx.db(), ".schema").stdout),
        unquoted(&fx.schema_old)
    );
    assert_eq!(fingerprint(&fx.db()), fx.fingerprint);

    let n = iterations();
    let mut tally = Tally::default();
    for i in 0..n {
        fx.reset();
        let delay = Rng::new(1, i).delay(fx.window());
        let mut child = fx.spawn_upgrade("one-shot.log");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        let status = wait_bounded(&mut child, Duration::from_secs(10), "killed silica-crond");
        if status.signal() != Some(libc::SIGKILL) {
            assert_eq!(
                status.code(),
                Some(0),
                "iteration {i}: the upgrade failed by itself:\n{}",
                std::fs::read_to_string(fx.env.path().join("one-shot.log")).unwrap_or_default()
            );
            tally.finished_before_kill += 1;
        }
        let rev = fx.check_database();
        let t0 = Instant::now();
        fx.cli(&["migrate", "upgrade"]).ok();
        let recovery = t0.elapsed();
        fx.check_finished();
        tally.add(rev, recovery);
    }
    println!(
        "{}",
        tally.summary("one-shot", n, &fx, "finished before the kill")
    );
    assert_eq!(tally.at_old + tally.at_new, n);
}

/// Daemon: the upgrade is requested through the socket and the daemon is killed; the next
/// daemon start handles the stale socket and the lock file, and finishes the upgrade.
#[test]
fn kill_daemon_during_upgrade_at_random_instants() {
    let fx = Fixture::new();
    let daemon_args = ["--migrations-dir", fx.migrations.as_str()];
    let lock = sibling(&fx.db(), ".lock");
    let n = iterations();
    let mut tally = Tally::default();
    let mut client_succeeded = 0;
    for i in 0..n {
        fx.reset();
        let d = fx.env.start_daemon(&daemon_args);
        let delay = Rng::new(2, i).delay(fx.window());
        let mut client = fx.spawn_upgrade("client.log");
        std::thread::sleep(delay);
        d.kill9();
        assert!(fx.env.socket().exists(), "kill -9 leaves the socket file");
        // The client sees the connection drop (or, if it connects only after the kill, falls
        // back to a one-shot run that finishes the upgrade): wait for it either way, so that
        // nothing has the database open during the checks.
        let status = wait_bounded(&mut client, Duration::from_secs(30), "silica-cron client");
        if status.success() {
            client_succeeded += 1;
        }
        let rev = fx.check_database();

        let t0 = Instant::now();
        let d2 = fx.env.start_daemon(&daemon_args);
        fx.cli(&["migrate", "upgrade"]).ok();
        let recovery = t0.elapsed();
        assert!(
            d2.log()
                .contains("removing stale socket file left by a previous run"),
            "{}",
            d2.log()
        );
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap().trim(),
            format!("{} daemon", d2.pid()),
            "the new daemon holds the lock"
        );
        fx.check_finished();
        fx.cli(&["status"])
            .ok()
            .stdout_has("schema:      up to date");
        assert_eq!(d2.stop(), 0, "daemon did not stop cleanly");
        tally.add(rev, recovery);
    }
    tally.finished_before_kill = client_succeeded;
    println!("{}", tally.summary("daemon", n, &fx, "client exited 0"));
    assert_eq!(tally.at_old + tally.at_new, n);
}

#[test]
fn rng_is_deterministic_and_spread() {
    let max = Duration::from_millis(500);
    let a: Vec<_> = (0..50).map(|i| Rng::new(1, i).delay(max)).collect();
    let b: Vec<_> = (0..50).map(|i| Rng::new(1, i).delay(max)).collect();
    assert_eq!(a, b);
    assert!(a.iter().all(|d| *d <= max));
    assert!(a.iter().any(|d| *d < max / 4) && a.iter().any(|d| *d > max * 3 / 4));
}
