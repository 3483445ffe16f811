//! One owner per database: an exclusive `flock` on `<db>.lock`, held for the daemon's life and
//! by one-shot migrate runs. The holder's pid is written into the file so a refused second
//! owner can name it. The kernel drops the lock when the holder dies, even by kill -9.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the database {db} is owned by another silica-crond (pid {pid}; lock file {lock}); stop it first, or use it through its socket")]
    Held {
        db: PathBuf,
        lock: PathBuf,
        pid: String,
    },
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct OwnerLock {
    _file: File,
}

impl OwnerLock {
    pub fn acquire(lock: &Path, db: &Path) -> Result<OwnerLock, LockError> {
        let open_err = |source| LockError::Open {
            path: lock.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(lock)
            .map_err(open_err)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    db: db.to_owned(),
                    lock: lock.to_owned(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_owned()
                    },
                });
            }
            return Err(open_err(err));
        }
        file.set_len(0).map_err(open_err)?;
        file.seek(SeekFrom::Start(0)).map_err(open_err)?;
        writeln!(file, "{}", std::process::id()).map_err(open_err)?;
        Ok(OwnerLock { _file: file })
    }
}
