//! The database side of migrations: opening the file, the version table, and applying one
//! revision atomically (its statements and its version-table change in one transaction).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::script::Revision;
use super::sqlsplit::Statement;

pub const VERSION_TABLE: &str = "cron_alembic_version";
/// Checksums of applied revisions (issue #3); alembic ignores it.
pub const LEDGER_TABLE: &str = "silica_cron_revision_ledger";
/// Exactly as alembic creates it, so `.schema` matches byte for byte.
pub const VERSION_TABLE_DDL: &str = "CREATE TABLE cron_alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, \n\tCONSTRAINT cron_alembic_version_pkc PRIMARY KEY (version_num)\n)";
const BUSY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Statement(Box<FailedStatement>),
    #[error("{0}")]
    Step(Box<FailedStep>),
    #[error("database {0}: closed, the daemon is stopping")]
    Shut(PathBuf),
    #[error("revision {id} leaves rows that break foreign keys ({detail}); it was rolled back, the database stays at {stays}")]
    ForeignKeys {
        id: String,
        detail: String,
        stays: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("revision {id} failed at {file}, line {line}: {message}\n[SQL: {sql}]\nNothing of revision {id} was applied; the database stays at {stays}.")]
pub struct FailedStatement {
    pub id: String,
    pub file: String,
    pub line: usize,
    pub sql: String,
    pub message: String,
    pub stays: String,
}

/// Where a step failed outside its own statements (those fail as [`FailedStatement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the database for writing.
    Open,
    /// `BEGIN IMMEDIATE`, and turning foreign-key enforcement off before it.
    Begin,
    /// The version table, the ledger, the foreign-key check.
    Record,
    Commit,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}\nNothing of revision {id} was applied; the database stays at {stays}.{}", intro(*.phase, .id, .what, .path), residue(.wal_residue))]
pub struct FailedStep {
    pub phase: Phase,
    pub id: String,
    /// The step: `upgrade 34065a4cc718 -> a1b2c3d4e5f6`.
    pub what: String,
    pub path: PathBuf,
    pub source: rusqlite::Error,
    pub stays: String,
    /// Why the frames of a failed COMMIT could not be cleared from the WAL (see
    /// [`clear_failed_commit`]), if they could not.
    pub wal_residue: Option<String>,
}

fn residue(why: &Option<String>) -> String {
    why.as_ref().map_or(String::new(), |why| {
        format!(" Its write-ahead log still holds the failed commit ({why}): if the daemon dies before the next write, the database may come back at this revision; check with: silica-cron migrate current")
    })
}

fn intro(phase: Phase, id: &str, what: &str, path: &Path) -> String {
    let path = path.display();
    match phase {
        Phase::Open => format!("cannot open {path} for revision {id} ({what})"),
        Phase::Begin => format!("cannot begin revision {id} ({what}) in {path}"),
        Phase::Record => format!("cannot record revision {id} ({what}) in {path}"),
        Phase::Commit => format!("cannot commit revision {id} ({what}) to {path}"),
    }
}

/// One revision applied in one direction: what its failures name.
pub struct Step<'a> {
    pub rev: &'a Revision,
    /// As the step's log line names it: `upgrade 34065a4cc718 -> a1b2c3d4e5f6`.
    pub what: String,
    /// The revisions the database stays at when the step fails.
    pub stays: &'a str,
}

impl<'a> Step<'a> {
    pub fn upgrade(rev: &'a Revision, stays: &'a str) -> Step<'a> {
        Step {
            rev,
            what: format!("upgrade {} -> {}", parents(rev), rev.id),
            stays,
        }
    }

    pub fn downgrade(rev: &'a Revision, stays: &'a str) -> Step<'a> {
        Step {
            rev,
            what: format!("downgrade {} -> {}", rev.id, parents(rev)),
            stays,
        }
    }

    fn failed(&self, phase: Phase, path: &Path, source: rusqlite::Error) -> StoreError {
        StoreError::Step(Box::new(FailedStep {
            phase,
            id: self.rev.id.clone(),
            what: self.what.clone(),
            path: path.to_owned(),
            source,
            stays: self.stays.to_owned(),
            wal_residue: None,
        }))
    }

    /// A failure to open the database for this step, reported as the step's.
    pub fn open_failed(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Open { path, source } | StoreError::Sqlite { path, source } => {
                self.failed(Phase::Open, &path, source)
            }
            other => other,
        }
    }
}

fn parents(rev: &Revision) -> String {
    if rev.parents.is_empty() {
        "base".into()
    } else {
        rev.parents.join(", ")
    }
}

/// A change of the version table's rows that goes with one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionOp {
    Insert(String),
    Update { from: String, to: String },
    Delete(String),
}

impl VersionOp {
    /// The statement as alembic prints it in offline mode.
    pub fn offline_sql(&self) -> String {
        match self {
            VersionOp::Insert(v) => format!("INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{v}') RETURNING version_num"),
            VersionOp::Update { from, to } => format!(
                "UPDATE {VERSION_TABLE} SET version_num='{to}' WHERE {VERSION_TABLE}.version_num = '{from}'"
            ),
            VersionOp::Delete(v) => format!("DELETE FROM {VERSION_TABLE} WHERE {VERSION_TABLE}.version_num = '{v}'"),
        }
    }

    fn run(&self, conn: &Connection) -> rusqlite::Result<()> {
        match self {
            VersionOp::Insert(v) => conn.execute(
                &format!("INSERT INTO {VERSION_TABLE} (version_num) VALUES (?1)"),
                [v],
            ),
            VersionOp::Update { from, to } => conn.execute(
                &format!("UPDATE {VERSION_TABLE} SET version_num = ?1 WHERE version_num = ?2"),
                [to, from],
            ),
            VersionOp::Delete(v) => conn.execute(
                &format!("DELETE FROM {VERSION_TABLE} WHERE version_num = ?1"),
                [v],
            ),
        }
        .map(drop)
    }
}

/// What a step records in the ledger of applied revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerOp {
    Record { revision: String, checksum: String },
    Forget(String),
}

pub const LEDGER_DDL: &str = "CREATE TABLE silica_cron_revision_ledger (\n\trevision VARCHAR(32) NOT NULL, \n\tchecksum VARCHAR(64) NOT NULL, \n\tapplied_at DATETIME NOT NULL, \n\tduration_ms INTEGER NOT NULL, \n\tPRIMARY KEY (revision)\n)";

fn record(
    conn: &Connection,
    revision: &str,
    checksum: &str,
    duration_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO {LEDGER_TABLE} (revision, checksum, applied_at, duration_ms) VALUES (?1, ?2, strftime('%Y-%m-%d %H:%M:%f', 'now'), ?3)"),
        rusqlite::params![revision, checksum, duration_ms],
    )
    .map(drop)
}

/// (revision, checksum) of every revision the ledger knows; empty without a ledger.
pub fn ledger(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    if !table_exists(conn, LEDGER_TABLE)? {
        return Ok(vec![]);
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT revision, checksum FROM {LEDGER_TABLE} ORDER BY revision"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

impl LedgerOp {
    /// The statement for offline SQL (`--sql`).
    pub fn offline_sql(&self) -> String {
        match self {
            LedgerOp::Record { revision, checksum } => format!(
                "INSERT OR REPLACE INTO {LEDGER_TABLE} (revision, checksum, applied_at, duration_ms) VALUES ('{revision}', '{checksum}', strftime('%Y-%m-%d %H:%M:%f', 'now'), 0)"
            ),
            LedgerOp::Forget(revision) => format!("DELETE FROM {LEDGER_TABLE} WHERE revision = '{revision}'"),
        }
    }
}

/// The database file, opened lazily: read commands on a missing file must not create it.
pub struct Db {
    path: PathBuf,
    conn: Option<Connection>,
    writable: bool,
    /// Closed for good: nothing may reopen the file (see [`Db::shut`]).
    shut: bool,
    /// Connections opened so far: `data_version` values of different connections don't compare.
    opened: u64,
    /// Run on each writing connection once it is set up (the daemon's checkpoint policy).
    on_writer: Option<fn(&Connection)>,
}

/// Where the database stood for one connection (see [`Db::data_version`]); equal values mean
/// nobody else committed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataVersion {
    connection: u64,
    value: i64,
}

impl Db {
    pub fn new(path: &Path) -> Db {
        Db {
            path: path.to_owned(),
            conn: None,
            writable: false,
            shut: false,
            opened: 0,
            on_writer: None,
        }
    }

    /// `setup` runs on every writing connection opened from now on.
    pub fn with_writer_setup(mut self, setup: fn(&Connection)) -> Db {
        self.on_writer = Some(setup);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.conn.is_some() || self.path.exists()
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// A connection to an existing file, or None when there is no file.
    pub fn reader(&mut self) -> Result<Option<&Connection>, StoreError> {
        if self.shut {
            return Err(StoreError::Shut(self.path.clone()));
        }
        if self.conn.is_none() {
            if !self.path.exists() {
                return Ok(None);
            }
            let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
                .map_err(|source| StoreError::Open {
                path: self.path.clone(),
                source,
            })?;
            conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
                .map_err(self.err())?;
            self.conn = Some(conn);
            self.opened += 1;
        }
        Ok(self.conn.as_ref())
    }

    /// A connection set up for writing, creating the file if needed.
    pub fn writer(&mut self) -> Result<&mut Connection, StoreError> {
        if self.shut {
            return Err(StoreError::Shut(self.path.clone()));
        }
        if self.conn.is_some() && !self.writable {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            )
            .map_err(|source| StoreError::Open {
                path: self.path.clone(),
                source,
            })?;
            conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
                .map_err(self.err())?;
            // WAL lets the sqlite3 shell and other readers work while the daemon writes.
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
                .map_err(self.err())?;
            conn.execute_batch("PRAGMA foreign_keys=ON")
                .map_err(self.err())?;
            if let Some(setup) = self.on_writer {
                setup(&conn);
            }
            self.conn = Some(conn);
            self.opened += 1;
            self.writable = true;
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    pub fn close(&mut self) {
        self.conn = None;
        self.writable = false;
    }

    /// Closes for good, at the daemon's exit: a request still running past the drain timeout
    /// must not reopen the file (and leave a WAL behind) once it is closed.
    pub fn shut(&mut self) {
        self.close();
        self.shut = true;
    }

    /// SQLite's `data_version`: changes when another connection commits, so cached answers
    /// about the database can be reused until someone else writes. It is kept with the
    /// connection's number, because a reopened connection (after a rebuild, or a reader turned
    /// writer) starts counting again and could repeat a value seen before.
    pub fn data_version(&mut self) -> Option<DataVersion> {
        let conn = self.reader().ok()??;
        let value = conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .ok()?;
        Some(DataVersion {
            connection: self.opened,
            value,
        })
    }

    /// Rows of the version table; empty when the file or the table does not exist.
    pub fn versions(&mut self) -> Result<Vec<String>, StoreError> {
        let path = self.path.clone();
        let Some(conn) = self.reader()? else {
            return Ok(vec![]);
        };
        read_versions(conn).map_err(|source| StoreError::Sqlite { path, source })
    }
}

pub fn read_versions(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [VERSION_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(vec![]);
    }
    let mut stmt = conn.prepare(&format!("SELECT version_num FROM {VERSION_TABLE}"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Runs `statements` and `ops` in one `BEGIN IMMEDIATE` transaction; on any failure nothing of
/// it stays, and the error names the step. Foreign-key enforcement is off during the step (a
/// table rebuild must not cascade into other tables) and `foreign_key_check` must be clean
/// before the commit.
pub fn apply_step(
    conn: &mut Connection,
    path: &Path,
    step: &Step<'_>,
    statements: &[Statement],
    ops: &[VersionOp],
    ledger: &LedgerOp,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let rev = step.rev;
    let failed = |phase| move |source| step.failed(phase, path, source);
    conn.execute_batch("PRAGMA foreign_keys=OFF")
        .map_err(failed(Phase::Begin))?;
    let result = (|| {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(Phase::Begin))?;
        ensure_version_table(&tx).map_err(failed(Phase::Record))?;
        for s in statements {
            tx.execute_batch(&s.sql).map_err(|e| {
                StoreError::Statement(Box::new(FailedStatement {
                    id: rev.id.clone(),
                    file: rev.path.clone(),
                    line: s.line,
                    sql: s.sql.clone(),
                    message: e.to_string(),
                    stays: step.stays.to_owned(),
                }))
            })?;
        }
        for op in ops {
            op.run(&tx).map_err(failed(Phase::Record))?;
        }
        match ledger {
            LedgerOp::Record { revision, checksum } => {
                let ms = started.elapsed().as_millis() as i64;
                record(&tx, revision, checksum, ms).map_err(failed(Phase::Record))?
            }
            LedgerOp::Forget(revision) => {
                tx.execute(
                    &format!("DELETE FROM {LEDGER_TABLE} WHERE revision = ?1"),
                    [revision],
                )
                .map_err(failed(Phase::Record))?;
            }
        }
        let violations = foreign_key_violations(&tx).map_err(failed(Phase::Record))?;
        if !violations.is_empty() {
            return Err(StoreError::ForeignKeys {
                id: rev.id.clone(),
                detail: violations.join("; "),
                stays: step.stays.to_owned(),
            });
        }
        tx.commit().map_err(failed(Phase::Commit))
    })();
    // Restore enforcement whatever happened (the transaction is gone either way). Not the
    // step's failure: it may have been committed.
    let restore = conn
        .execute_batch("PRAGMA foreign_keys=ON")
        .map_err(|source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        });
    let result = match result {
        Err(StoreError::Step(mut f)) if f.phase == Phase::Commit => {
            f.wal_residue = clear_failed_commit(conn).err();
            Err(StoreError::Step(f))
        }
        other => other,
    };
    result.and(restore)
}

/// A COMMIT that failed after writing its frames (the WAL's fsync failed) leaves them in the
/// WAL with a valid commit mark. Connections ignore them, but rebuilding the WAL index after a
/// crash replays them: the revision reported as not applied would then be. A TRUNCATE
/// checkpoint copies what was committed into the database and empties the WAL.
fn clear_failed_commit(conn: &Connection) -> Result<(), String> {
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if busy != 0 {
        return Err("another connection is reading it".into());
    }
    Ok(())
}

/// Replaces every version row by `targets` in one transaction (stamp).
/// `records` re-records the ledger: (revision, checksum) of everything the targets include.
pub fn stamp(
    conn: &mut Connection,
    path: &Path,
    targets: &[String],
    records: &[(String, String)],
) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    ensure_version_table(&tx).map_err(sqlite)?;
    tx.execute(&format!("DELETE FROM {VERSION_TABLE}"), [])
        .map_err(sqlite)?;
    for t in targets {
        VersionOp::Insert(t.clone()).run(&tx).map_err(sqlite)?;
    }
    tx.execute(&format!("DELETE FROM {LEDGER_TABLE}"), [])
        .map_err(sqlite)?;
    for (revision, checksum) in records {
        record(&tx, revision, checksum, 0).map_err(sqlite)?;
    }
    tx.commit().map_err(sqlite)
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
}

/// The version table (alembic's layout) and the ledger, created with the first step.
fn ensure_version_table(conn: &Connection) -> rusqlite::Result<()> {
    if !table_exists(conn, VERSION_TABLE)? {
        conn.execute_batch(VERSION_TABLE_DDL)?;
    }
    if !table_exists(conn, LEDGER_TABLE)? {
        conn.execute_batch(LEDGER_DDL)?;
    }
    Ok(())
}

fn foreign_key_violations(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let rows = stmt.query_map([], |r| {
        let table: String = r.get(0)?;
        let rowid: Option<i64> = r.get(1)?;
        let parent: String = r.get(2)?;
        Ok(format!(
            "{table} row {} references a missing {parent} row",
            rowid.unwrap_or(-1)
        ))
    })?;
    let mut out: Vec<String> = rows.collect::<Result<_, _>>()?;
    out.truncate(5);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "-- add t\n--\n-- Revision ID: aaaaaaaaaaaa\n-- Revises: bbbbbbbbbbbb\n-- Create Date: 2026-01-01 00:00:00\n\n-- migrate:upgrade\nCREATE TABLE t (x);\n\n-- migrate:downgrade\nDROP TABLE t;\n";

    #[test]
    fn a_step_that_cannot_begin_names_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let rev = super::super::script::parse("f.sql", REV).unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let mut conn = Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        let step = Step::upgrade(&rev, "bbbbbbbbbbbb");
        let e = apply_step(
            &mut conn,
            &path,
            &step,
            &rev.upgrade,
            &[],
            &LedgerOp::Forget(rev.id.clone()),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot begin revision aaaaaaaaaaaa (upgrade bbbbbbbbbbbb -> aaaaaaaaaaaa) in {}: database is locked\nNothing of revision aaaaaaaaaaaa was applied; the database stays at bbbbbbbbbbbb.",
                path.display()
            )
        );
        let down = Step::downgrade(&rev, "aaaaaaaaaaaa");
        let missing = dir.path().join("no/such/dir.db");
        let open = Db::new(&missing).writer().map(drop).unwrap_err();
        assert_eq!(
            down.open_failed(open).to_string(),
            format!(
                "cannot open {0} for revision aaaaaaaaaaaa (downgrade aaaaaaaaaaaa -> bbbbbbbbbbbb): unable to open database file: {0}\nNothing of revision aaaaaaaaaaaa was applied; the database stays at aaaaaaaaaaaa.",
                missing.display()
            )
        );
    }
}
