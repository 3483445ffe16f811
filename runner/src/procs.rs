//! Process bookkeeping through /proc: finding a run's descendants, signalling them without
//! pid-reuse races, and reaping orphans that were reparented to the daemon (a subreaper).
//!
//! See the crate documentation for how descendants are found and how orphans are reaped.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Pids of children whose exit status belongs to someone else (tokio, the caller).
static TRACKED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn tracked() -> MutexGuard<'static, Option<HashSet<u32>>> {
    TRACKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a child out of [`reap_orphans`]' reach while it lives; untracks it on drop.
#[derive(Debug)]
pub struct Tracked(u32);

impl Tracked {
    /// The tracked pid.
    pub fn pid(&self) -> u32 {
        self.0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(set) = tracked().as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Spawns a child so that [`reap_orphans`] never reaps it: `spawn` runs with the registry
/// lock held and `pid_of` names the pid to protect. Drop the returned [`Tracked`] only after
/// the child's exit status has been collected. Any child the daemon spawns other than through
/// [`crate::run`] must be spawned this way.
pub fn spawn_tracked<C>(
    spawn: impl FnOnce() -> io::Result<C>,
    pid_of: impl FnOnce(&C) -> Option<u32>,
) -> io::Result<(C, Option<Tracked>)> {
    let mut guard = tracked();
    let child = spawn()?;
    let pid = pid_of(&child);
    if let Some(pid) = pid {
        guard.get_or_insert_with(HashSet::new).insert(pid);
    }
    Ok((child, pid.map(Tracked)))
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned descendants,
/// such as a job's `setsid` grandchild, are reparented here instead of to init, so they can
/// be found and killed. Call once at start; the setting is process-wide.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this process is a child subreaper.
pub fn is_subreaper() -> bool {
    let mut v: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer.
    let r = unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut v as *mut libc::c_int,
            0,
            0,
            0,
        )
    };
    r == 0 && v != 0
}

/// Reaps zombie children that nobody else waits for (orphans of jobs reparented to this
/// subreaper). Non-blocking; returns how many were reaped. Never touches children spawned
/// by [`crate::run`] or [`spawn_tracked`]. Reads this process's `children` lists.
pub fn reap_orphans() -> usize {
    reap_pass().reaped
}

struct Pass {
    reaped: usize,
    /// Untracked children still running (orphans that have not exited yet).
    live: usize,
}

fn reap_pass() -> Pass {
    // The list is read without the registry lock (it is long when many runs are in flight and
    // spawns wait on that lock). That is safe: under the lock, a pid that is not tracked is
    // either an orphan or no child of ours at all (a tracked child's pid cannot be reused by a
    // spawn without being tracked again), and waitpid(pid, WNOHANG) on it reaps an exited
    // orphan or does nothing.
    let children = children_of_self(std::process::id() as i32);
    let guard = tracked();
    let mut pass = Pass { reaped: 0, live: 0 };
    for pid in children {
        if guard.as_ref().is_some_and(|s| s.contains(&(pid as u32))) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            pass.reaped += 1;
        } else if r == 0 {
            pass.live += 1;
        }
    }
    pass
}

/// Runs [`reap_orphans`] on SIGCHLD, forever. Spawn it once in the daemon. It sleeps when no
/// child exits (no idle wake-ups), handles at most one pass per 20 ms however many children
/// exit (a pass reads the list of every child), and while orphans are alive it looks again
/// every second, so one that exits just after a pass is not left a zombie.
pub async fn reap_orphans_on_sigchld() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(20);
    const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);
    let mut chld = signal(SignalKind::child())?;
    loop {
        let pass = tokio::task::spawn_blocking(reap_pass)
            .await
            .unwrap_or(Pass { reaped: 0, live: 1 });
        tokio::time::sleep(MIN_GAP).await;
        if pass.live > 0 {
            // A signal that arrived meanwhile is still pending in `chld`.
            let _ = tokio::time::timeout(RECHECK, chld.recv()).await;
        } else if chld.recv().await.is_none() {
            return Ok(());
        }
    }
}

/// After the main process exited and was reaped: true when nothing of the run can be left, so
/// the /proc sweep (which reads every process) can be skipped. The run's process group must be
/// empty, and this process must have no children besides tracked ones: a descendant that left
/// the group has its topmost escaped ancestor orphaned once the main process is gone, and a
/// subreaper gets every orphan as its own child.
///
/// Orphans are given to the subreaper's first live thread, its main thread (the kernel's
/// `find_new_reaper` / `find_alive_thread`), so only the main thread's `children` list is read:
/// the runs' main processes are children of whichever threads spawned them, and reading all
/// of those lists on every exit made a 10,000-run burst quadratic. (The tests of leftovers
/// after a normal exit check this on the running kernel.)
pub(crate) fn nothing_left_after_exit(pgid: i32) -> bool {
    if pgid <= 0 || !crate::is_subreaper() {
        return false;
    }
    // SAFETY: signal 0 only checks whether the group has a member.
    if unsafe { libc::kill(-pgid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    {
        return false;
    }
    let me = std::process::id() as i32;
    let children = match fs::read_to_string(format!("/proc/self/task/{me}/children")) {
        Ok(s) => s
            .split_ascii_whitespace()
            .filter_map(|x| x.parse::<i32>().ok())
            .collect(),
        Err(_) => children_of_self(me),
    };
    let guard = tracked();
    children
        .into_iter()
        .all(|pid| guard.as_ref().is_some_and(|s| s.contains(&(pid as u32))))
}

fn children_of_self(me: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut have_children_file = false;
    if let Ok(tasks) = fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let mut p = t.path();
            p.push("children");
            if let Ok(s) = fs::read_to_string(&p) {
                have_children_file = true;
                out.extend(
                    s.split_ascii_whitespace()
                        .filter_map(|x| x.parse::<i32>().ok()),
                );
            }
        }
    }
    if !have_children_file {
        out = all_procs()
            .into_iter()
            .filter(|p| p.ppid == me)
            .map(|p| p.pid)
            .collect();
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// One line of /proc/PID/stat, the fields we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub start: u64,
}

impl ProcStat {
    fn is_zombie(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    let s = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &s)
}

fn parse_stat(pid: i32, s: &[u8]) -> Option<ProcStat> {
    // "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    //  stime cutime cstime priority nice threads itrealvalue starttime ..."; comm may hold
    //  spaces and parentheses, so split after the last ')'.
    let close = s.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&s[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(ProcStat {
        pid,
        state: *f.first()?.as_bytes().first()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn all_procs() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// The value of `SILICA_CRON_EXECUTION_ID` in a process's environment, if any.
fn marker_of(pid: i32) -> Option<Vec<u8>> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{}=", crate::EXECUTION_ID_VAR).into_bytes();
    env.split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_slice()).map(<[u8]>::to_vec))
}

/// One read of /proc: this process's live descendants, indexed by process group and by run
/// marker, shared by every run that needs a sweep. When thousands of runs stop at once (a
/// daemon stopping), each reading all of /proc for itself made stopping quadratic.
struct Snapshot {
    /// When the read began: it shows every process that existed then and still exists.
    taken: Instant,
    by_group: HashMap<i32, Vec<ProcStat>>,
    by_marker: HashMap<Vec<u8>, Vec<ProcStat>>,
}

static SNAPSHOT: Mutex<Option<Arc<Snapshot>>> = Mutex::new(None);

fn take_snapshot() -> Snapshot {
    let taken = Instant::now();
    let me = std::process::id() as i32;
    let procs = all_procs();
    let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut memo: HashMap<i32, bool> = HashMap::new();
    memo.insert(me, true);
    let mut snap = Snapshot {
        taken,
        by_group: HashMap::new(),
        by_marker: HashMap::new(),
    };
    for p in procs {
        if p.pid == me || p.is_zombie() || !descends(p.pid, &parent, &mut memo) {
            continue;
        }
        snap.by_group.entry(p.pgrp).or_default().push(p);
        if let Some(m) = marker_of(p.pid) {
            snap.by_marker.entry(m).or_default().push(p);
        }
    }
    snap
}

/// Live (non-zombie) processes descending from this process that belong to the run:
/// in process group `pgid`, or carrying `SILICA_CRON_EXECUTION_ID=<marker>`, as seen by a
/// read of /proc that began no earlier than `not_before`. Callers pass the last moment
/// something changed for them (a signal sent, the main process reaped), so that concurrent
/// callers share one read while none gets an answer older than its own last change.
pub(crate) fn find_run_processes(marker: &str, pgid: i32, not_before: Instant) -> Vec<ProcStat> {
    let snap = {
        let mut cached = SNAPSHOT.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some(s) if s.taken >= not_before => s.clone(),
            _ => {
                let s = Arc::new(take_snapshot());
                *cached = Some(s.clone());
                s
            }
        }
    };
    let mut out: Vec<ProcStat> = Vec::new();
    if pgid > 0 {
        out.extend(snap.by_group.get(&pgid).into_iter().flatten());
    }
    for p in snap.by_marker.get(marker.as_bytes()).into_iter().flatten() {
        if !out.iter().any(|q| q.pid == p.pid) {
            out.push(*p);
        }
    }
    out
}

fn descends(pid: i32, parent: &HashMap<i32, i32>, memo: &mut HashMap<i32, bool>) -> bool {
    let mut chain = Vec::new();
    let mut cur = pid;
    let answer = loop {
        if let Some(&known) = memo.get(&cur) {
            break known;
        }
        if cur <= 1 || chain.len() > 65_536 {
            break false;
        }
        chain.push(cur);
        match parent.get(&cur) {
            Some(&pp) => cur = pp,
            None => break false,
        }
    };
    for c in chain {
        memo.insert(c, answer);
    }
    answer
}

/// Sends `sig` to the process identified by (pid, start time). Returns whether it was sent.
pub(crate) fn signal_exact(p: &ProcStat, sig: libc::c_int) -> bool {
    // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
    if fd >= 0 {
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pidfd pins the process; if the pid still shows the same start time now,
        // the pidfd refers to the process we selected.
        if read_stat(p.pid).map(|s| s.start) != Some(p.start) {
            return false;
        }
        // SAFETY: pidfd_send_signal(fd, sig, NULL, 0).
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        return r == 0;
    }
    // No pidfd (old kernel): check and kill, with a tiny reuse window.
    if read_stat(p.pid).map(|s| s.start) != Some(p.start) {
        return false;
    }
    // SAFETY: kill(pid, sig).
    unsafe { libc::kill(p.pid, sig) == 0 }
}

/// Sends `sig` to the process group `pgid` (ignores errors: the group may be gone).
pub(crate) fn signal_group(pgid: i32, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill(-pgid, sig).
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line =
            b"42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 1000 200";
        let st = parse_stat(42, line).unwrap();
        assert_eq!(st.state, b'S');
        assert_eq!(st.ppid, 7);
        assert_eq!(st.pgrp, 42);
        assert_eq!(st.start, 12345);
    }

    #[test]
    fn own_stat_is_readable() {
        let me = std::process::id() as i32;
        let st = read_stat(me).unwrap();
        assert_eq!(st.pid, me);
        assert!(!st.is_zombie());
    }
}
