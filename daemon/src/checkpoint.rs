//! Checkpoints off the firing path.
//!
//! SQLite checkpoints a WAL database inside the COMMIT that takes the WAL past 1,000 pages
//! (`wal_autocheckpoint`): that commit returns only after the pages were copied into the
//! database and the database fsynced, several milliseconds later. In the daemon, the commit
//! that records a due run as running comes before its process starts, so about one firing in
//! a hundred (more with large outputs) would carry a whole checkpoint in its lag.
//!
//! The daemon's writing connection therefore replaces SQLite's checkpointing hook with one
//! that only counts: past the same 1,000 pages it wakes a thread of its own, which waits a
//! moment (so the checkpoint does not compete with the process just started) and runs a
//! PASSIVE checkpoint on a connection of its own. A PASSIVE checkpoint never blocks writers;
//! the WAL then restarts at the next commit. The one-shot keeps SQLite's behaviour.

use std::ffi::{c_char, c_int, c_void, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{ffi, Connection, OpenFlags};
use tracing::{debug, warn};

/// WAL pages after which a checkpoint is asked for: SQLite's own default.
pub const PAGES: c_int = 1000;

/// How long the checkpointer waits after being asked: the commit that asked may be a run's
/// start, whose process is being spawned now.
const PAUSE: Duration = Duration::from_millis(200);

/// Replaces `conn`'s automatic checkpoints with requests to the checkpointer thread.
pub fn defer(conn: &Connection) {
    // SAFETY: the handle is valid for the connection's life; the hook keeps no pointer to
    // anything (its context is null), so it outlives nothing.
    unsafe {
        ffi::sqlite3_wal_hook(conn.handle(), Some(on_commit), std::ptr::null_mut());
    }
}

/// Called by SQLite after each commit of a connection with [`defer`] with the WAL's page
/// count. Must not write to the database; it only sends the file's path.
unsafe extern "C" fn on_commit(
    _: *mut c_void,
    db: *mut ffi::sqlite3,
    schema: *const c_char,
    pages: c_int,
) -> c_int {
    if pages >= PAGES {
        let name = ffi::sqlite3_db_filename(db, schema);
        if !name.is_null() {
            let path = PathBuf::from(OsStr::from_bytes(CStr::from_ptr(name).to_bytes()));
            request(path);
        }
    }
    ffi::SQLITE_OK
}

fn request(path: PathBuf) {
    static TX: OnceLock<Option<Sender<PathBuf>>> = OnceLock::new();
    if let Some(tx) = TX.get_or_init(start) {
        let _ = tx.send(path);
    }
}

fn start() -> Option<Sender<PathBuf>> {
    let (tx, rx) = channel();
    match std::thread::Builder::new()
        .name("checkpointer".into())
        .spawn(move || serve(rx))
    {
        Ok(_) => Some(tx),
        Err(e) => {
            // SQLite's hook stays ours, so the WAL then grows until the next restart.
            warn!(error = %e, "cannot start the checkpointer thread; the WAL is checkpointed when the daemon stops");
            None
        }
    }
}

fn serve(rx: Receiver<PathBuf>) {
    while let Ok(first) = rx.recv() {
        std::thread::sleep(PAUSE);
        // Requests made meanwhile are covered by this checkpoint.
        let mut paths = vec![first];
        paths.extend(rx.try_iter());
        paths.sort();
        paths.dedup();
        for path in paths {
            match run(&path) {
                Ok((busy, log, done)) => {
                    debug!(path = %path.display(), busy, wal_pages = log, checkpointed = done, "checkpoint")
                }
                Err(e) => warn!(path = %path.display(), error = %e, "checkpoint failed"),
            }
        }
    }
}

/// A PASSIVE checkpoint of `path` on a connection of its own: (busy, WAL pages, pages copied).
pub fn run(path: &std::path::Path) -> rusqlite::Result<(i64, i64, i64)> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of the database file itself (what checkpoints copy into).
    fn file_pages(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).unwrap().len() / 4096
    }

    #[test]
    fn the_commit_past_the_threshold_does_not_checkpoint_and_the_thread_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        defer(&conn);
        let before = file_pages(&path);
        // About 1,200 pages in one commit: past the threshold.
        let tx = conn.transaction().unwrap();
        for _ in 0..1200 {
            tx.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        tx.commit().unwrap();
        // SQLite's own hook would have copied them into the file before commit returned.
        assert!(
            file_pages(&path) < before + 100,
            "checkpointed in the commit: {} pages, {before} before",
            file_pages(&path)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while file_pages(&path) < before + 1000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpointer did not run"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
