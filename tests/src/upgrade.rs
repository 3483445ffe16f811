//! The long upgrade the migration faults attack (scenario 1 of the fault battery): the original
//! chain plus a 4th revision that rebuilds job_executions over many rows, a pristine database
//! at the 3rd, and the checks that a database an attack left is at one revision, never between
//! two (DESIGN §3): schema, rows, version table and ledger.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{run, sibling, Env, Out};

pub const OLD: &str = "34065a4cc718";
pub const NEW: &str = "a1b2c3d4e5f6";
/// Rows of the long upgrade: a debug build takes a few seconds over them.
pub const LONG: u32 = 150_000;

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

pub fn sqlite(db: &Path, sql: &str) -> Out {
    let out = run(Command::new("sqlite3").arg(db).arg(sql));
    assert_eq!(out.code, 0, "sqlite3 {sql:?} failed:\n{out}");
    out
}

/// What every iteration starts from and compares against.
pub struct Fixture {
    pub env: Env,
    pub migrations: String,
    pristine: PathBuf,
    /// Rows of job_executions.
    pub rows: u32,
    pub schema_old: String,
    pub schema_new: String,
    /// count, sum of ids, sum of job ids, total output length: must survive every crash.
    pub fingerprint: String,
    /// How long an uninterrupted upgrade takes, start of process to exit.
    pub full_upgrade: Duration,
}

impl Fixture {
    /// The chain plus the rebuild revision, and a pristine database at OLD with `rows` runs.
    pub fn new(rows: u32) -> Fixture {
        let env = Env::new();
        let versions = env.path().join("migrations/versions");
        std::fs::create_dir_all(&versions).unwrap();
        for e in std::fs::read_dir(crate::original_chain().join("versions")).unwrap() {
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
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
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
            fingerprint.starts_with(&format!("{rows}|")),
            "{fingerprint}"
        );

        let mut fx = Fixture {
            env,
            migrations,
            pristine,
            schema_old,
            schema_new: String::new(),
            rows,
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

    pub fn db(&self) -> PathBuf {
        self.env.db()
    }

    pub fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec!["--migrations-dir", &self.migrations];
        all.extend_from_slice(args);
        self.env.cli(&all)
    }

    /// `silica-cron --migrations-dir DIR migrate upgrade`, not waited for.
    pub fn spawn_upgrade(&self, log: &str) -> Child {
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
    pub fn reset(&self) {
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
    pub fn check_database(&self) -> &'static str {
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

    /// The revision a crash now would leave (kill -9 of everything that has the database
    /// open): a copy of the database and its WAL without the WAL index, which opening the copy
    /// rebuilds from the WAL, replaying every frame up to the last commit mark.
    pub fn revision_after_crash(&self) -> String {
        let dir = self.env.path().join("crash-image");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let copy = dir.join("silica-cron.db");
        std::fs::copy(self.db(), &copy).unwrap();
        match std::fs::copy(sibling(&self.db(), "-wal"), sibling(&copy, "-wal")) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot copy the WAL: {e}"),
        }
        sqlite(&copy, "SELECT version_num FROM cron_alembic_version;")
            .stdout
            .trim()
            .to_string()
    }

    /// After recovery: at NEW, rows intact, and `migrate status` says so.
    pub fn check_finished(&self) {
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
            format!("{}|1|1", self.rows)
        );
    }

    /// Kill instants are drawn from [0, window]: the whole upgrade plus a margin after it.
    pub fn window(&self) -> Duration {
        self.full_upgrade.mul_f64(1.15)
    }
}

pub fn fingerprint(db: &Path) -> String {
    sqlite(
        db,
        "SELECT count(*), sum(id), total(coalesce(scheduled_job_id, 0)), total(length(output)), count(session_id) FROM job_executions;",
    )
    .stdout
    .trim()
    .to_string()
}

/// Waits for a child to exit, at most `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
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
