//! Temporary working directories: created mode 0700, removed even when a job left
//! unreadable or unwritable directories behind, without ever following a symlink.

use std::collections::hash_map::RandomState;
use std::ffi::{CString, OsString};
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a run executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workdir {
    /// A new directory (mode 0700) is created under `parent` and removed after the run.
    Fresh { parent: PathBuf },
    /// An existing directory, left as it is.
    Given(PathBuf),
    /// A directory the caller created (e.g. with [`make_fresh_dir`], to put its path into
    /// argv); it is removed after the run like a `Fresh` one.
    Owned(PathBuf),
}

/// Creates a new directory `parent/silica-cron-<tag>-<random>` with mode 0700.
pub fn make_fresh_dir(parent: &Path, tag: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    let mut last = io::Error::other("no attempt");
    for _ in 0..64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let name = if tag.is_empty() {
            format!("silica-cron-{:016x}", h.finish())
        } else {
            format!("silica-cron-{tag}-{:012x}", h.finish() & 0xffff_ffff_ffff)
        };
        let path = parent.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                // The umask can only have removed bits; make it exactly 0700.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Removes a directory tree. If a plain recursive removal fails (a job chmod-ed
/// directories to 000 or 500), permissions of the directories inside are restored to 0700
/// -- through O_PATH descriptors opened with O_NOFOLLOW, so a symlink is never followed --
/// and removal is retried. A missing directory is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let mut last = match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => e,
    };
    for _ in 0..3 {
        if let Ok(fd) = open_dir_path(libc::AT_FDCWD, path.as_os_str().as_bytes()) {
            unlock(&fd, 0);
        }
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

const MAX_DEPTH: usize = 1024;

fn open_dir_path(dirfd: libc::c_int, name: &[u8]) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: openat with a valid C string; O_PATH|O_NOFOLLOW|O_DIRECTORY fails on a symlink.
    let fd = unsafe {
        libc::openat(
            dirfd,
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// chmod 0700 the directory behind `fd`, then recurse into its subdirectories.
fn unlock(fd: &OwnedFd, depth: usize) {
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let _ = fs::set_permissions(&proc_path, fs::Permissions::from_mode(0o700));
    if depth >= MAX_DEPTH {
        return;
    }
    let subdirs: Vec<OsString> = match fs::read_dir(&proc_path) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name())
            .collect(),
        Err(_) => return,
    };
    for name in subdirs {
        if let Ok(child) = open_dir_path(fd.as_raw_fd(), name.as_bytes()) {
            unlock(&child, depth + 1);
        }
    }
}
