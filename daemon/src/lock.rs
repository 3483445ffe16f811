//! One owner per database: an exclusive `flock` on `<db>.lock`, held for the daemon's life and
//! by one-shot migrate runs. The holder writes its pid and role into the file, so a refused
//! second owner can name it, and a one-shot migration can wait for another one instead of
//! failing. The kernel drops the lock when the holder dies, even by kill -9.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Who holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Daemon,
    Migrate,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Daemon => "daemon",
            Role::Migrate => "migrate",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the database {db} is owned by a running silica-crond (pid {pid}; lock file {lock}); stop it first, or use it through its socket")]
    Held {
        db: PathBuf,
        lock: PathBuf,
        pid: String,
    },
    #[error("the database {db} is still being migrated by pid {pid} after {waited} s (lock file {lock})")]
    StillMigrating {
        db: PathBuf,
        lock: PathBuf,
        pid: String,
        waited: u64,
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

/// How long an owner waits for a one-shot migration that holds the lock.
pub const WAIT_FOR_MIGRATION: Duration = Duration::from_secs(120);

impl OwnerLock {
    /// Takes the lock as `role`. A holder that is a one-shot migration is waited for (up to
    /// [`WAIT_FOR_MIGRATION`]; `on_wait` is told once); a daemon holder is an error at once.
    pub fn acquire(
        lock: &Path,
        db: &Path,
        role: Role,
        on_wait: impl FnOnce(&str),
    ) -> Result<OwnerLock, LockError> {
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
        let started = Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(open_err(err));
            }
            let (pid, holder) = holder(&mut file);
            // An empty file is a new holder between truncating and writing: look again.
            if holder == Some(Role::Daemon) {
                return Err(LockError::Held {
                    db: db.to_owned(),
                    lock: lock.to_owned(),
                    pid,
                });
            }
            if started.elapsed() > WAIT_FOR_MIGRATION {
                return Err(LockError::StillMigrating {
                    db: db.to_owned(),
                    lock: lock.to_owned(),
                    pid,
                    waited: WAIT_FOR_MIGRATION.as_secs(),
                });
            }
            if let Some(f) = on_wait.take() {
                f(&pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        file.set_len(0).map_err(open_err)?;
        file.seek(SeekFrom::Start(0)).map_err(open_err)?;
        writeln!(file, "{} {}", std::process::id(), role.as_str()).map_err(open_err)?;
        file.flush().map_err(open_err)?;
        Ok(OwnerLock { _file: file })
    }
}

/// The holder's pid and role as written in the file ("1234 migrate"); an old file holds only a pid.
fn holder(file: &mut File) -> (String, Option<Role>) {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    let mut words = text.split_whitespace();
    let pid = words.next().unwrap_or("unknown").to_string();
    let role = match words.next() {
        Some("migrate") => Some(Role::Migrate),
        Some("daemon") => Some(Role::Daemon),
        _ => None,
    };
    (pid, role)
}
