//! Writes to the database's files, seen through inotify on its directory. The scheduler's
//! watcher waits on such a descriptor; status polls one of its own, so it asks SQLite where the
//! database stands only after somebody wrote.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A non-blocking inotify descriptor watching `dir` for writes, creations and renames.
pub fn open(dir: &Path) -> io::Result<OwnedFd> {
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
    Ok(fd)
}

/// The name of each event in a buffer of inotify events, and whether it says the queue
/// overflowed (events were lost).
pub fn events(mut buf: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    std::iter::from_fn(move || {
        if buf.len() < HEADER {
            return None;
        }
        let mask = u32::from_ne_bytes(buf[4..8].try_into().ok()?);
        let len = u32::from_ne_bytes(buf[12..16].try_into().ok()?) as usize;
        let end = (HEADER + len).min(buf.len());
        let raw = &buf[HEADER..end];
        buf = &buf[end..];
        let name = raw.split(|b| *b == 0).next().unwrap_or(&[]);
        Some((
            OsStr::from_bytes(name).as_bytes(),
            mask & libc::IN_Q_OVERFLOW != 0,
        ))
    })
}

/// The database file and its WAL, as inotify names them.
pub struct DbFiles {
    main: Vec<u8>,
    wal: Vec<u8>,
}

impl DbFiles {
    pub fn of(db: &Path) -> Option<DbFiles> {
        let name = db.file_name()?.as_bytes();
        Some(DbFiles {
            main: name.to_vec(),
            wal: [name, b"-wal"].concat(),
        })
    }

    /// Whether a buffer of events says one of the files was written (or events were lost).
    pub fn written(&self, buf: &[u8]) -> bool {
        events(buf).any(|(n, lost)| lost || n == self.main.as_slice() || n == self.wal.as_slice())
    }
}

/// A descriptor that is polled, never waited on: `written` empties its queue and says whether
/// the database was written since the last call.
pub struct Writes {
    fd: OwnedFd,
    files: DbFiles,
}

impl Writes {
    pub fn new(db: &Path) -> io::Result<Writes> {
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let files = DbFiles::of(db).ok_or_else(|| io::Error::other("no file name"))?;
        Ok(Writes {
            fd: open(dir)?,
            files,
        })
    }

    /// True when something wrote the database or its WAL since the last call, or when that
    /// cannot be told (an error reading the queue).
    pub fn written(&self) -> bool {
        let mut buf = [0u8; 4096];
        let mut written = false;
        loop {
            // SAFETY: reading into our own buffer from our own descriptor.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                written |= self.files.written(&buf[..n as usize]);
                continue;
            }
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => written,
                io::ErrorKind::Interrupted => continue,
                _ => true,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_the_wal_is_seen_once_and_other_files_are_not() {
        let dir = std::env::temp_dir().join(format!("dirwatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("x.db");
        let w = Writes::new(&db).unwrap();
        assert!(!w.written(), "nothing written yet");
        std::fs::write(dir.join("x.db.log"), b"a line").unwrap();
        assert!(!w.written(), "another file in the directory");
        std::fs::write(dir.join("x.db-wal"), b"frame").unwrap();
        assert!(w.written(), "the WAL was written");
        assert!(!w.written(), "the queue was emptied by the previous call");
        std::fs::write(&db, b"page").unwrap();
        assert!(w.written(), "the database was written");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
