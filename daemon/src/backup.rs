//! Backups and restores of the database file.
//!
//! A backup is `VACUUM INTO` a temp file beside the target, on a connection of its own: one
//! read transaction, so the copy is a consistent snapshot while the daemon keeps writing (WAL:
//! the reader and the writer do not block each other). The temp file is checked, synced, then
//! published under its final name by a hard link (which fails if the name exists) or, with
//! `--force`, a rename; a crash never leaves half a backup under the final name.
//!
//! A restore copies the backup beside the database, checks the copy (integrity, a revision
//! this daemon knows), and swaps it in with a rename once the old database's WAL is empty and
//! gone, so the old WAL can never be applied to the new file.

use std::io;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use schedule::jiff::Timestamp;

use crate::migrate::graph::Graph;
use crate::migrate::store::{read_versions, Db, VERSION_TABLE};

const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("database {0} does not exist; there is nothing to back up")]
    NoDatabase(PathBuf),
    #[error("{0} already exists; use --force to overwrite it")]
    Exists(PathBuf),
    #[error("{0} is the database itself")]
    SameFile(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path} is not a SQLite database ({detail}); nothing was changed")]
    NotDatabase { path: PathBuf, detail: String },
    #[error("{path} fails PRAGMA integrity_check ({detail}); nothing was changed")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} has no {VERSION_TABLE} table: it is not a silica-cron database; nothing was changed")]
    NoVersionTable { path: PathBuf },
    #[error("{path} is at revision {ids}, which no revision file of this silica-crond defines (made by a newer silica-cron?); nothing was changed")]
    UnknownRevision { path: PathBuf, ids: String },
    #[error("{path} has a write-ahead log beside it ({wal}): it is a live or uncleanly closed database, and copying the file alone would lose what the log holds. Make a backup of it with `silica-cron backup` (or sqlite3 .backup) and restore that; nothing was changed")]
    HasWal { path: PathBuf, wal: PathBuf },
    #[error("another process is reading {0} and the write-ahead log could not be emptied; close it (a sqlite3 shell?) and retry; nothing was changed")]
    Busy(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn sqlite_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// A backup that was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub revisions: Vec<String>,
    pub bytes: u64,
}

impl Written {
    pub fn describe(&self) -> String {
        let rev = if self.revisions.is_empty() {
            "no revision".to_string()
        } else {
            format!("revision {}", self.revisions.join(", "))
        };
        format!(
            "{} ({rev}, {} bytes, integrity ok)",
            self.path.display(),
            self.bytes
        )
    }
}

/// What `backup` prints: one line, or one JSON document with `--json`.
pub fn report(w: &Written, json: bool) -> String {
    if json {
        serde_json::json!({
            "path": w.path,
            "revisions": w.revisions,
            "bytes": w.bytes,
            "integrity": "ok",
        })
        .to_string()
    } else {
        format!("💾 Backed up the database to {}", w.describe())
    }
}

/// Where automatic backups go and how many are kept.
#[derive(Debug, Clone)]
pub struct Policy {
    pub db: PathBuf,
    pub dir: PathBuf,
    pub keep: usize,
}

impl Policy {
    pub fn from_settings(settings: &proto::paths::Settings) -> Policy {
        Policy {
            db: settings.db.clone(),
            dir: settings.backup_dir(),
            keep: settings.file.automatic_backups_kept(),
        }
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

fn stem(db: &Path) -> String {
    db.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "silica-cron".into())
}

/// UTC, to the millisecond, so names sort by time: `20261124T141848.123Z`.
fn stamp() -> String {
    let now = Timestamp::now();
    format!(
        "{}.{:03}Z",
        now.strftime("%Y%m%dT%H%M%S"),
        now.subsec_millisecond()
    )
}

/// The file a backup without PATH gets: `<dir>/<db stem>-<UTC time>.db`.
pub fn default_path(policy: &Policy) -> PathBuf {
    policy
        .dir
        .join(format!("{}-{}.db", stem(&policy.db), stamp()))
}

/// `<dir>/<db stem>-<UTC time>-auto-<why>.db`; only names of this shape are ever pruned.
fn automatic_path(policy: &Policy, why: &str) -> PathBuf {
    policy
        .dir
        .join(format!("{}-{}-auto-{why}.db", stem(&policy.db), stamp()))
}

fn is_automatic(name: &str, stem: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".db"))
    else {
        return false;
    };
    // 20261124T141848.123Z-auto-why: the time first, so another database's stem that merely
    // starts with ours ("silica-cron-test") never matches.
    let (time, why) = match rest.split_once("-auto-") {
        Some(p) => p,
        None => return false,
    };
    time.len() == 20
        && time.as_bytes()[8] == b'T'
        && time.ends_with('Z')
        && time.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && !why.is_empty()
        && why.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// Writes a consistent copy of `db` to `dest`. Refuses an existing `dest` unless `force`.
pub fn backup_to(db: &Path, dest: &Path, force: bool) -> Result<Written, BackupError> {
    if !db.exists() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    if same_file(db, dest) {
        return Err(BackupError::SameFile(dest.to_owned()));
    }
    if !force && dest.exists() {
        return Err(BackupError::Exists(dest.to_owned()));
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let guard = TempFiles(Some(tmp.clone()));
    guard.clear()?;
    {
        let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(sqlite_err(db))?;
        src.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_err(db))?;
        let tmp_text = tmp.to_str().ok_or_else(|| BackupError::Io {
            what: "cannot write a backup to a path that is not UTF-8:",
            path: dest.to_owned(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        src.execute("VACUUM INTO ?1", [tmp_text]).map_err(|e| {
            if let rusqlite::Error::SqliteFailure(f, _) = &e {
                if f.code == rusqlite::ErrorCode::CannotOpen {
                    return BackupError::Io {
                        what: "cannot write the backup",
                        path: dest.to_owned(),
                        source: io::Error::other(e.to_string()),
                    };
                }
            }
            BackupError::Sqlite {
                path: db.to_owned(),
                source: e,
            }
        })?;
    }
    // Checked like a restore would check it, and left in rollback-journal mode so that reading
    // it (sqlite3 backup.db) leaves no -wal or -shm files beside it.
    let revisions = check(&tmp, dest, None)?.revisions;
    sync_file(&tmp)?;
    publish(&tmp, dest, force)?;
    guard.disarm();
    let bytes = std::fs::metadata(dest)
        .map_err(io_err("cannot read", dest))?
        .len();
    Ok(Written {
        path: dest.to_owned(),
        revisions,
        bytes,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn sync_file(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("cannot sync", path))
}

fn sync_dir(path: &Path) {
    // A failure here loses only durability of the rename across a power cut, not consistency.
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|f| f.sync_all());
    }
}

/// Moves the finished temp file under its final name: a hard link refuses an existing name
/// atomically (no check-then-rename race); `force` renames over it.
fn publish(tmp: &Path, dest: &Path, force: bool) -> Result<(), BackupError> {
    if force {
        std::fs::rename(tmp, dest).map_err(io_err("cannot move the backup into place at", dest))?;
    } else {
        match std::fs::hard_link(tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(dest.to_owned()))
            }
            Err(e) => return Err(io_err("cannot move the backup into place at", dest)(e)),
        }
        let _ = std::fs::remove_file(tmp);
    }
    sync_dir(dest);
    Ok(())
}

/// A temp database and its -wal/-shm/-journal, removed on drop unless disarmed.
struct TempFiles(Option<PathBuf>);

impl TempFiles {
    fn clear(&self) -> Result<(), BackupError> {
        if let Some(p) = &self.0 {
            for f in [
                p.clone(),
                sibling(p, "-wal"),
                sibling(p, "-shm"),
                sibling(p, "-journal"),
            ] {
                match std::fs::remove_file(&f) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("cannot remove", &f)(e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
    fn disarm(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        let _ = self.clear();
    }
}

/// What a checked database file holds.
#[derive(Debug, Clone)]
pub struct Checked {
    pub revisions: Vec<String>,
    /// Every revision known and the set equals the heads (None when no graph was given).
    pub at_head: Option<bool>,
}

/// PRAGMA integrity_check, the version table, and (with a graph) that every revision is
/// known. `shown` is the path named in errors (the file the operator gave, not our copy).
/// Leaves the file in rollback-journal mode, closed, with no -wal or -shm beside it.
fn check(path: &Path, shown: &Path, graph: Option<&Graph>) -> Result<Checked, BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite_err(shown))?;
    let not_db = |e: rusqlite::Error| match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            BackupError::NotDatabase {
                path: shown.to_owned(),
                detail: e.to_string(),
            }
        }
        _ => BackupError::Corrupt {
            path: shown.to_owned(),
            detail: e.to_string(),
        },
    };
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(not_db)?;
    if rows != ["ok"] {
        let mut detail: Vec<String> = rows.into_iter().take(3).collect();
        if detail.len() == 3 {
            detail.push("…".into());
        }
        return Err(BackupError::Corrupt {
            path: shown.to_owned(),
            detail: detail.join("; "),
        });
    }
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [VERSION_TABLE],
            |r| r.get(0),
        )
        .map_err(sqlite_err(shown))?;
    if !has_table {
        return Err(BackupError::NoVersionTable {
            path: shown.to_owned(),
        });
    }
    let mut revisions = read_versions(&conn).map_err(sqlite_err(shown))?;
    revisions.sort();
    let at_head = match graph {
        None => None,
        Some(g) => {
            let unknown: Vec<&str> = revisions
                .iter()
                .filter(|r| g.lookup(r).is_none())
                .map(|s| s.as_str())
                .collect();
            if !unknown.is_empty() {
                return Err(BackupError::UnknownRevision {
                    path: shown.to_owned(),
                    ids: unknown.join(", "),
                });
            }
            let mut heads: Vec<String> = g.heads().iter().map(|&i| g.id(i).to_string()).collect();
            heads.sort();
            Some(heads == revisions)
        }
    };
    conn.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))
        .map_err(sqlite_err(shown))?;
    conn.close().map_err(|(_, e)| sqlite_err(shown)(e))?;
    Ok(Checked { revisions, at_head })
}

/// An automatic backup (`why`: rebuild, upgrade, downgrade, restore), then the oldest
/// automatic ones beyond `keep` are deleted. None when there is no database to back up.
pub fn automatic(policy: &Policy, why: &str) -> Result<Option<Written>, BackupError> {
    if !policy.db.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(&policy.dir).map_err(io_err("cannot create", &policy.dir))?;
    let written = backup_to(&policy.db, &automatic_path(policy, why), false)?;
    prune(policy);
    Ok(Some(written))
}

/// Deletes automatic backups of this database beyond the newest `keep`. A failure is logged:
/// the backup just made is what matters.
fn prune(policy: &Policy) {
    let stem = stem(&policy.db);
    let Ok(entries) = std::fs::read_dir(&policy.dir) else {
        return;
    };
    let mut auto: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_automatic(n, &stem))
        .collect();
    // The time comes right after the stem, so names sort by age.
    auto.sort();
    let excess = auto.len().saturating_sub(policy.keep);
    for name in &auto[..excess] {
        let p = policy.dir.join(name);
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot delete an old automatic backup");
        }
    }
}

/// A backup copied beside the database and checked, ready to be swapped in.
pub struct Prepared {
    tmp: TempFiles,
    pub checked: Checked,
}

impl Prepared {
    fn path(&self) -> &Path {
        self.tmp.0.as_deref().expect("armed until swapped")
    }
}

/// Copies `src` beside `db` and checks the copy (the operator's file is never opened for
/// writing). The revision must be one `graph` knows.
pub fn prepare_restore(src: &Path, db: &Path, graph: &Graph) -> Result<Prepared, BackupError> {
    let meta = std::fs::metadata(src).map_err(io_err("cannot read", src))?;
    if !meta.is_file() {
        return Err(BackupError::Io {
            what: "cannot restore",
            path: src.to_owned(),
            source: io::Error::other("not a regular file"),
        });
    }
    if same_file(src, db) {
        return Err(BackupError::SameFile(src.to_owned()));
    }
    let wal = sibling(src, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(BackupError::HasWal {
            path: src.to_owned(),
            wal,
        });
    }
    let tmp = TempFiles(Some(sibling(db, ".restore")));
    tmp.clear()?;
    let path = tmp.0.clone().expect("armed");
    std::fs::copy(src, &path).map_err(io_err(
        "cannot copy the backup beside the database, to",
        &path,
    ))?;
    let checked = check(&path, src, Some(graph))?;
    sync_file(&path)?;
    Ok(Prepared { tmp, checked })
}

impl Prepared {
    /// The copy, for an upgrade before the swap (production).
    pub fn db(&self) -> Db {
        Db::new(self.path())
    }
}

/// Swaps the prepared copy in for `db`. The old database's WAL is checkpointed into it and
/// removed before the rename: at every instant the path holds either the old database, whole
/// in its main file, or the new one with no WAL, so a crash never applies the old WAL to the
/// new file. `db` reopens on its next use.
pub fn swap(prepared: Prepared, db: &mut Db) -> Result<(), BackupError> {
    let path = db.path().to_owned();
    if db.exists() {
        let conn = db.writer().map_err(|e| BackupError::Io {
            what: "cannot open",
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(sqlite_err(&path))?;
        if busy != 0 {
            return Err(BackupError::Busy(path));
        }
        // The last connection to close removes the (now empty) -wal and -shm itself.
        db.close();
        for f in [sibling(&path, "-wal"), sibling(&path, "-shm")] {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("cannot remove", &f)(e))
                }
                _ => {}
            }
        }
    }
    // Whatever touched the copy closed it cleanly; a log beside it would be lost by the rename.
    let copy_wal = sibling(prepared.path(), "-wal");
    if std::fs::metadata(&copy_wal).is_ok_and(|m| m.len() > 0) {
        return Err(BackupError::HasWal {
            path: prepared.path().to_owned(),
            wal: copy_wal,
        });
    }
    std::fs::rename(prepared.path(), &path).map_err(io_err(
        "cannot move the restored database into place at",
        &path,
    ))?;
    prepared.tmp.disarm();
    sync_dir(&path);
    db.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_automatic_names_of_this_database_are_pruned() {
        assert!(is_automatic(
            "silica-cron-20261124T141848.123Z-auto-rebuild.db",
            "silica-cron"
        ));
        assert!(!is_automatic(
            "silica-cron-20261124T141848.123Z.db",
            "silica-cron"
        ));
        assert!(!is_automatic(
            "silica-cron-test-20261124T141848.123Z-auto-rebuild.db",
            "silica-cron"
        ));
        assert!(!is_automatic("my-auto-backup.db", "silica-cron"));
    }
}
