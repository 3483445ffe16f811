//! Noticing rows that other processes change (the sqlite3 shell, a seeding script): inotify on
//! the database's directory wakes us when the database or its WAL is written; SQLite's
//! `data_version` then says whether another connection committed (our own writes do not move
//! it), and only then does the scheduler plan again. Nothing wakes while nobody writes.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::state::Shared;

pub async fn watch_database(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let db = shared.settings().db.clone();
    let (Some(dir), Some(files)) = (db.parent(), crate::dirwatch::DbFiles::of(&db)) else {
        return;
    };
    let fd = match inotify(dir) {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, dir = %dir.display(), "cannot watch the database for changes by other processes; they are picked up at the next re-plan");
            return;
        }
    };
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
            ours |= files.written(&buf[..n as usize]);
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
    let fd = crate::dirwatch::open(dir)?;
    // SAFETY: the OwnedFd stays open and the same until dropped with the AsyncFd.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
