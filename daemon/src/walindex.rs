//! Keeps a full disk from killing the process with SIGBUS through SQLite's WAL index.
//!
//! In WAL mode SQLite maps the `-shm` file (the WAL index) and stores into it through memory.
//! When it grows the file by a 32 KiB region, it writes one byte at the end of each 4 KiB page.
//! On a filesystem with smaller blocks (ext4 makes 1 KiB blocks on small volumes) that
//! allocates one block per page; the rest of the page is a hole. A store into a hole must
//! allocate a block inside a page fault, and on a full disk the kernel answers with SIGBUS.
//! It happens at the first read of a restart on a nearly full disk (the first connection
//! truncates the `-shm` and rebuilds the index) and whenever the WAL outgrows the index.
//!
//! Every connection of this process goes through a VFS that is SQLite's `unix` VFS but for one
//! method of main database files, `xShmMap`: before a region is handed to SQLite, the blocks of
//! the `-shm` file up to the region's end are reserved with `fallocate(FALLOC_FL_KEEP_SIZE)`.
//! Reserved blocks are unwritten extents: a store into them needs no new data block, and the
//! file's size, which SQLite reads to know which regions exist, is left to SQLite. If the
//! reservation fails for want of space, the region is refused with `SQLITE_FULL`, so the
//! statement fails with "database or disk is full" instead of the process dying. Any other
//! failure (a filesystem without `fallocate`) leaves SQLite's behaviour as it was.
//!
//! The descriptor reserved through is SQLite's own, found in `/proc/self/fd` by the `-shm`
//! file's device and inode: this module never opens or closes the `-shm` file. Closing any
//! descriptor of a file drops every POSIX lock the process holds on it, SQLite's WAL-index
//! locks included (a first version that used its own descriptor lost them; see README, "The
//! WAL index on a full disk").

use std::ffi::{c_char, c_int, c_void, CStr, CString, OsStr};
use std::io;
use std::mem::{align_of, size_of};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};

use rusqlite::ffi;
use tracing::debug;

/// Why the blocks of a WAL index could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("cannot look at {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("cannot list this process's descriptors: {0}")]
    ListFds(io::Error),
    #[error("no descriptor of {0} is open in this process")]
    NotOpen(PathBuf),
    #[error("cannot reserve the first {len} bytes of {path}: {source}")]
    Fallocate {
        path: PathBuf,
        len: u64,
        source: io::Error,
    },
}

impl ReserveError {
    /// The disk (or the quota) has no room: mapping the region could end in SIGBUS.
    pub fn is_full(&self) -> bool {
        matches!(self, ReserveError::Fallocate { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// Reserves the blocks of the first `len` bytes of the `-shm` file at `shm`, through the
/// descriptor SQLite holds on it, without changing its size. Bytes already written are kept.
pub fn reserve(shm: &Path, len: u64) -> Result<(), ReserveError> {
    let want = std::fs::metadata(shm).map_err(|source| ReserveError::Stat {
        path: shm.to_owned(),
        source,
    })?;
    let fd = sqlite_descriptor(want.dev(), want.ino())?
        .ok_or_else(|| ReserveError::NotOpen(shm.to_owned()))?;
    let off_len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
    // SAFETY: a plain syscall; `fd` is open (SQLite keeps it while a connection maps the index).
    if unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, off_len) } != 0 {
        return Err(ReserveError::Fallocate {
            path: shm.to_owned(),
            len,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The descriptor of this process open on the file (`dev`, `ino`), if any. Only `fstat`s the
/// descriptors listed in /proc/self/fd: nothing is opened or closed on the file itself.
fn sqlite_descriptor(dev: u64, ino: u64) -> Result<Option<c_int>, ReserveError> {
    let dir = std::fs::read_dir("/proc/self/fd").map_err(ReserveError::ListFds)?;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<c_int>().ok())
        else {
            continue;
        };
        // SAFETY: fstat writes into `st`; a descriptor closed meanwhile just fails with EBADF.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_dev == dev && st.st_ino == ino {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// What our VFS keeps after the `unix` VFS's own data in a main database file's
/// `sqlite3_file`.
#[repr(C)]
struct Extra {
    /// The `unix` method table the file was opened with: every method but ours is its.
    base: *const ffi::sqlite3_io_methods,
    /// `<database path>-shm`, owned (`CString::into_raw`), freed at close.
    shm: *mut c_char,
}

/// Where `Extra` starts in a `sqlite3_file` of our VFS.
static EXTRA_AT: OnceLock<usize> = OnceLock::new();
/// The `unix` VFS's xOpen.
static BASE_OPEN: OnceLock<OpenFn> = OnceLock::new();
/// Our method tables, one per `unix` table they copy (base address, ours).
static TABLES: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

type OpenFn = unsafe extern "C" fn(
    *mut ffi::sqlite3_vfs,
    ffi::sqlite3_filename,
    *mut ffi::sqlite3_file,
    c_int,
    *mut c_int,
) -> c_int;

/// Makes the VFS described above SQLite's default, so that every connection the process
/// opens afterwards uses it. Called once at the start of `main`, before any connection.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the default VFS is static data of SQLite; the copy is leaked, so it lives
        // as long as the process, as SQLite requires of a registered VFS.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                debug!("SQLite has no default VFS: the WAL index is not reserved");
                return;
            }
            let mut vfs = std::ptr::read(base);
            let Some(open) = vfs.xOpen else { return };
            let _ = BASE_OPEN.set(open);
            let at = (vfs.szOsFile as usize).next_multiple_of(align_of::<Extra>());
            let _ = EXTRA_AT.set(at);
            vfs.szOsFile = (at + size_of::<Extra>()) as c_int;
            vfs.xOpen = Some(open_file);
            vfs.zName = c"silica-unix".as_ptr();
            vfs.pNext = std::ptr::null_mut();
            let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 1);
            if rc != ffi::SQLITE_OK {
                debug!(
                    rc,
                    "cannot register the WAL-index VFS: the WAL index is not reserved"
                );
            }
        }
    });
}

/// # Safety
/// `file` was opened by our VFS and uses one of our method tables.
unsafe fn extra(file: *mut ffi::sqlite3_file) -> *mut Extra {
    (file as *mut u8).add(*EXTRA_AT.get().unwrap_or(&0)) as *mut Extra
}

/// Our copy of `base` with `xShmMap` and `xClose` replaced, made once per base table.
fn our_table(base: *const ffi::sqlite3_io_methods) -> *const ffi::sqlite3_io_methods {
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, ours)) = tables.iter().find(|(b, _)| *b == base as usize) {
        return ours as *const _;
    }
    // SAFETY: `base` is one of the `unix` VFS's static method tables.
    let mut ours = unsafe { std::ptr::read(base) };
    ours.xShmMap = Some(shm_map);
    ours.xClose = Some(close_file);
    let ours = Box::leak(Box::new(ours)) as *const ffi::sqlite3_io_methods;
    tables.push((base as usize, ours as usize));
    ours
}

unsafe extern "C" fn open_file(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(base_open) = BASE_OPEN.get() else {
        return ffi::SQLITE_CANTOPEN;
    };
    let rc = base_open(vfs, name, file, flags, out_flags);
    let methods = (*file).pMethods;
    // Only a main database file has a WAL index, and only tables of version 2+ map one.
    if rc != ffi::SQLITE_OK
        || flags & ffi::SQLITE_OPEN_MAIN_DB == 0
        || name.is_null()
        || methods.is_null()
        || (*methods).iVersion < 2
        || (*methods).xShmMap.is_none()
    {
        return rc;
    }
    let mut shm = CStr::from_ptr(name as *const c_char).to_bytes().to_vec();
    shm.extend_from_slice(b"-shm");
    let Ok(shm) = CString::new(shm) else {
        return rc;
    };
    extra(file).write(Extra {
        base: methods,
        shm: shm.into_raw(),
    });
    (*file).pMethods = our_table(methods);
    rc
}

unsafe extern "C" fn close_file(file: *mut ffi::sqlite3_file) -> c_int {
    let Extra { base, shm } = extra(file).read();
    drop(CString::from_raw(shm));
    match (*base).xClose {
        Some(close) => close(file),
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let Extra { base, shm } = extra(file).read();
    let Some(base_map) = (*base).xShmMap else {
        return ffi::SQLITE_IOERR_SHMMAP;
    };
    // Without growing first: this opens the -shm file (the first connection of all truncates
    // it, which frees any block reserved before) and maps the region if the file holds it.
    let rc = base_map(file, region, size, 0, out);
    if rc != ffi::SQLITE_OK || ((*out).is_null() && extend == 0) {
        return rc;
    }
    // Also for a region that exists: another process's stock SQLite may have left holes.
    let end = (region as u64 + 1) * size as u64;
    let path = Path::new(OsStr::from_bytes(CStr::from_ptr(shm).to_bytes()));
    if let Err(e) = reserve(path, end) {
        debug!(error = %e, "WAL index not reserved");
        if e.is_full() {
            // Not handed out: a store into a hole could not be backed. A later call tries again.
            *out = std::ptr::null_mut();
            return ffi::SQLITE_FULL;
        }
    }
    if (*out).is_null() {
        // Grown by SQLite now, its one-byte writes landing in reserved blocks.
        return base_map(file, region, size, extend, out);
    }
    rc
}
