//! Noticing rows that other processes change (the sqlite3 shell, a seeding script): inotify on
//! the database's directory wakes us when the database or its WAL is written; SQLite's
//! `data_version` then says whether another connection committed (our own writes do not move
//! it), and only then does the scheduler plan again. Nothing wakes while nobody writes.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::state::Shared;

pub async fn watch_database(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let db = shared.settings().db.clone();
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return;
    };
    let fd = match inotify(dir) {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, dir = %dir.display(), "cannot watch the database for changes by other processes; they are picked up at the next re-plan");
            return;
        }
    };
    let wal = [name.as_bytes(), b"-wal"].concat();
    let mut last = data_version(&shared).await;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut guard = tokio::select! {
            g = fd.readable() => match g { Ok(g) => g, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let mut ours = false;
        loop {
            // SAFETY: reading into our own buffer from our own descriptor.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                guard.clear_ready();
                break;
            }
            ours |= names(&buf[..n as usize]).any(|n| n == name.as_bytes() || n == wal.as_slice());
        }
        if !ours {
            continue;
        }
        // Most events are the daemon's own commits, one of which is the start of a run: look a
        // little later, so this check does not compete for the database with the run's start,
        // and a burst of writes is one check.
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(25)) => {}
            _ = shutdown.changed() => return,
        }
        let now = data_version(&shared).await;
        if now != last {
            debug!("the database was changed by another process; planning again");
            last = now;
            shared.replan.notify_one();
        }
    }
}

async fn data_version(shared: &Arc<Shared>) -> Option<crate::migrate::store::DataVersion> {
    let s = shared.clone();
    tokio::task::spawn_blocking(move || s.data_version())
        .await
        .ok()
        .flatten()
}

fn inotify(dir: &std::path::Path) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: inotify_init1 returns a new descriptor or -1.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let path =
        CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in path"))?;
    let mask = libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
    // SAFETY: a valid inotify descriptor and a NUL-terminated path.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the OwnedFd stays open and the same until dropped with the AsyncFd.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// The file names in a buffer of inotify events.
fn names(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    std::iter::from_fn(move || {
        if buf.len() < HEADER {
            return None;
        }
        let len = u32::from_ne_bytes(buf[12..16].try_into().ok()?) as usize;
        let end = (HEADER + len).min(buf.len());
        let raw = &buf[HEADER..end];
        buf = &buf[end..];
        let name = raw.split(|b| *b == 0).next().unwrap_or(&[]);
        Some(OsStr::from_bytes(name).as_bytes())
    })
}
