//! Process bookkeeping through /proc: finding a run's descendants, signalling them without
//! pid-reuse races, and reaping orphans that were reparented to the daemon (a subreaper).
//!
//! See the crate documentation for how descendants are found and how orphans are reaped.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

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
/// by [`crate::run`] or [`spawn_tracked`]. Cheap: reads this process's `children` lists.
pub fn reap_orphans() -> usize {
    let guard = tracked();
    let me = std::process::id() as i32;
    let mut reaped = 0;
    for pid in children_of_self(me) {
        if guard.as_ref().is_some_and(|s| s.contains(&(pid as u32))) {
            continue;
        }
        match read_stat(pid) {
            Some(st) if st.ppid == me && st.is_zombie() => {}
            _ => continue,
        }
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            reaped += 1;
        }
    }
    reaped
}

/// Runs [`reap_orphans`] on every SIGCHLD, forever. Spawn it once in the daemon (it sleeps
/// when no child exits, so it adds no idle wake-ups).
pub async fn reap_orphans_on_sigchld() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut chld = signal(SignalKind::child())?;
    reap_orphans();
    while chld.recv().await.is_some() {
        reap_orphans();
    }
    Ok(())
}

/// After the main process exited and was reaped: true when nothing of the run can be left, so
/// the /proc sweep (which reads every process) can be skipped. The run's process group must be
/// empty, and this process must have no children besides tracked ones: a descendant that left
/// the group has its topmost escaped ancestor orphaned once the main process is gone, and a
/// subreaper gets every orphan as its own child.
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
    let guard = tracked();
    let me = std::process::id() as i32;
    children_of_self(me)
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

fn environ_has(pid: i32, entry: &[u8]) -> bool {
    match fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => env.split(|&b| b == 0).any(|e| e == entry),
        Err(_) => false,
    }
}

/// Live (non-zombie) processes descending from this process that belong to the run:
/// in process group `pgid`, or carrying `SILICA_CRON_EXECUTION_ID=<marker>`.
pub(crate) fn find_run_processes(marker: &str, pgid: i32) -> Vec<ProcStat> {
    let me = std::process::id() as i32;
    let procs = all_procs();
    let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut memo: HashMap<i32, bool> = HashMap::new();
    memo.insert(me, true);
    let entry = format!("{}={}", crate::EXECUTION_ID_VAR, marker).into_bytes();
    let mut out = Vec::new();
    for p in &procs {
        if p.pid == me || p.is_zombie() || !descends(p.pid, &parent, &mut memo) {
            continue;
        }
        if (pgid > 0 && p.pgrp == pgid) || environ_has(p.pid, &entry) {
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
