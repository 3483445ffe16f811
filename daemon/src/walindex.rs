//! Keeps a full disk from killing the daemon with SIGBUS through SQLite's WAL index.
//!
//! In WAL mode SQLite maps the `-shm` file (the WAL index) with `mmap` and writes to it through
//! memory. When it grows that file it writes one byte at the end of each 4 KiB page, which
//! allocates only the last block of the page on a filesystem with smaller blocks (ext4 makes
//! 1 KiB blocks on small volumes). The first store into the rest of such a page must allocate a
//! block inside a page fault, and on a full disk the kernel can only answer with SIGBUS: the
//! process dies (scenario 4 of the fault battery reproduces it with the stock SQLite).
//!
//! The fix is a VFS shim, registered as the default VFS, that differs from SQLite's `unix` in
//! one method: before a WAL-index region is mapped, every block of the file up to the region's
//! end is allocated with `fallocate` (which keeps what is written and only fills holes). On a
//! full disk that fails with ENOSPC and the SQL statement fails with `database or disk is full`
//! instead; a region whose blocks are all there can be stored into without allocating. The
//! `-shm` file stays where and what SQLite expects, so the `sqlite3` shell and other readers
//! keep working beside the daemon (the alternative, `locking_mode=EXCLUSIVE` with the WAL index
//! in heap memory, would lock them out).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};

use rusqlite::ffi;

/// Our copy of a `unix` method table, with the table it was copied from: `pMethods` of an open
/// file points at `ours`, the first field, so a method can find the original ones.
#[repr(C)]
struct Methods {
    ours: ffi::sqlite3_io_methods,
    base: *const ffi::sqlite3_io_methods,
}

/// `-shm` paths of the open database files, by the address of their `sqlite3_file`.
static SHM_PATHS: Mutex<Option<HashMap<usize, PathBuf>>> = Mutex::new(None);
/// Our method tables, by the base table they copy (the `unix` VFS uses several).
static TABLES: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
type OpenFn = unsafe extern "C" fn(
    *mut ffi::sqlite3_vfs,
    ffi::sqlite3_filename,
    *mut ffi::sqlite3_file,
    c_int,
    *mut c_int,
) -> c_int;
/// The `unix` VFS's xOpen.
static BASE_OPEN: OnceLock<OpenFn> = OnceLock::new();

/// Registers the shim as SQLite's default VFS; every connection the daemon opens after this
/// uses it. Idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        let base = ffi::sqlite3_vfs_find(std::ptr::null());
        assert!(!base.is_null(), "SQLite has no default VFS");
        let mut vfs = std::ptr::read(base);
        let _ = BASE_OPEN.set(vfs.xOpen.expect("unix xOpen"));
        vfs.xOpen = Some(open);
        vfs.zName = c"silica-unix".as_ptr();
        vfs.pNext = std::ptr::null_mut();
        let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 1);
        assert_eq!(rc, ffi::SQLITE_OK, "cannot register the WAL-index VFS");
    });
}

fn our_table(base: *const ffi::sqlite3_io_methods) -> *const ffi::sqlite3_io_methods {
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ours)) = tables.iter().find(|(b, _)| *b == base as usize) {
        return *ours as *const _;
    }
    // SAFETY: `base` is a live method table of SQLite's unix VFS (static data).
    let mut ours = unsafe { std::ptr::read(base) };
    ours.xShmMap = Some(shm_map);
    ours.xClose = Some(close);
    let leaked = Box::leak(Box::new(Methods { ours, base })) as *const Methods;
    tables.push((base as usize, leaked as usize));
    leaked as *const _
}

unsafe fn base_of(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*((*file).pMethods as *const Methods)).base
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base_open = BASE_OPEN.get().expect("installed");
    let rc = base_open(vfs, name, file, flags, out_flags);
    if rc != ffi::SQLITE_OK || (*file).pMethods.is_null() || name.is_null() {
        return rc;
    }
    // Only a main database file has a WAL index.
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        return rc;
    }
    let mut shm = CStr::from_ptr(name as *const c_char).to_bytes().to_vec();
    shm.extend_from_slice(b"-shm");
    let shm = PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(shm));
    SHM_PATHS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(file as usize, shm);
    (*file).pMethods = our_table((*file).pMethods);
    rc
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    if let Some(m) = SHM_PATHS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        m.remove(&(file as usize));
    }
    (base_of(file).xClose.expect("unix xClose"))(file)
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let base_map = base_of(file).xShmMap.expect("unix xShmMap");
    // First without growing: this opens the -shm file (the first connection truncates it) and
    // maps the region if the file already holds it.
    let rc = base_map(file, region, size, 0, out);
    if rc != ffi::SQLITE_OK || ((*out).is_null() && extend == 0) {
        return rc;
    }
    let shm = SHM_PATHS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(&(file as usize)).cloned());
    if let Some(shm) = shm {
        let end = (region as u64 + 1) * size as u64;
        if let Err(e) = allocate(&shm, end) {
            tracing::warn!(
                "cannot allocate the WAL index {} ({end} bytes): {e}",
                shm.display()
            );
            // Not handed out: a later call checks again rather than using an unbacked map.
            *out = std::ptr::null_mut();
            return match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => ffi::SQLITE_FULL,
                _ => ffi::SQLITE_IOERR_SHMSIZE,
            };
        }
    }
    if (*out).is_null() {
        // The file is long enough now: SQLite maps it without writing.
        return base_map(file, region, size, extend, out);
    }
    rc
}

/// Allocates every block of `path` up to `len` bytes, extending it if shorter; the content
/// already written is kept. A filesystem without `fallocate` is left to SQLite's own growth.
fn allocate(path: &Path, len: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    // SAFETY: a plain syscall on a file descriptor we own.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(()),
        _ => Err(e),
    }
}
