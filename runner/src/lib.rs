//! Runs one agent command for silica-cron (see DESIGN.md §6 and §8).
//!
//! * The child gets exactly the environment it is given (minus systemd plumbing:
//!   `NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*`) plus `SILICA_CRON_EXECUTION_ID=<marker>`,
//!   stdin from /dev/null, its own process group, every inherited descriptor above 2 marked
//!   close-on-exec, default dispositions for the usual signals, and optionally a lower
//!   `RLIMIT_NOFILE` soft limit.
//! * stdout and stderr are captured concurrently up to a cap each, drained to the end
//!   whatever their size, and forwarded to live followers.
//! * Stopping a run (timeout or [`Cancel`]) sends SIGTERM to the process group and to every
//!   process of the run, waits up to `grace` (returning early once all are gone), then
//!   SIGKILLs whatever is left, re-scanning until none remains, and reaps. After a normal
//!   exit, leftover processes get the same treatment and are counted in the outcome.
//! * The daemon should call [`become_subreaper`] once at start and spawn
//!   [`reap_orphans_on_sigchld`] (or call [`reap_orphans`] now and then).
//!
//! # Finding a run's processes
//! A process group is not enough (a `setsid` grandchild leaves it), so the daemon is a child
//! subreaper: orphans of a job are reparented to it rather than to init. A sweep reads
//! `/proc/*/stat`, keeps live (non-zombie) processes whose parent chain leads to the daemon,
//! and selects those in the run's process group or whose `/proc/PID/environ` holds
//! `SILICA_CRON_EXECUTION_ID=<marker>`. Each is signalled through a pidfd checked against the
//! start time read in the scan, so a recycled pid is never hit. A process that both leaves
//! the group and rewrites its environment (`setsid env -i ...`) after the main process has
//! exited cannot be attributed to the run; only a cgroup could catch that.
//!
//! # Starting and reaping
//! The child is started vfork-style (`clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, see
//! `spawn.rs`), which costs the same however large the daemon is, and the run waits for it on
//! its pidfd and reaps it with `waitpid(pid)`. The runner registers every main child in a
//! process-wide set while holding that set's lock around the spawn, so there is no instant at
//! which it exists untracked. [`reap_orphans`] lists the daemon's children
//! (`/proc/self/task/*/children`, or a /proc scan) and calls `waitpid(pid, WNOHANG)` only on
//! those that are not registered. It never waits on `-1`. Any other child the daemon spawns
//! must go through [`spawn_tracked`].

mod capture;
mod procs;
mod spawn;
mod workdir;

use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

pub use capture::{Chunk, Stream};
pub use procs::{
    become_subreaper, is_subreaper, reap_orphans, reap_orphans_on_sigchld, spawn_tracked, Tracked,
};
pub use workdir::{make_fresh_dir, remove_tree, Workdir};

/// The variable through which a run's processes are recognised.
pub const EXECUTION_ID_VAR: &str = "SILICA_CRON_EXECUTION_ID";

/// Variables that are never passed to a job, even if present in [`Spec::env`].
fn is_forbidden_var(name: &str) -> bool {
    name == "NOTIFY_SOCKET"
        || name.starts_with("WATCHDOG_")
        || matches!(name, "LISTEN_PID" | "LISTEN_FDS" | "LISTEN_FDNAMES")
        || name == EXECUTION_ID_VAR
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Program and arguments, already expanded; never interpreted by a shell.
    pub argv: Vec<String>,
    /// The child's whole environment (the runner clears everything else).
    pub env: Vec<(String, String)>,
    pub workdir: Workdir,
    /// Measured on the monotonic clock from the spawn.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Bytes kept per stream.
    pub output_cap: usize,
    /// The execution id, exported as `SILICA_CRON_EXECUTION_ID`. Must be non-empty and unique.
    pub marker: String,
    /// RLIMIT_NOFILE soft limit for the child (capped at the hard limit).
    pub nofile: Option<u64>,
}

impl Spec {
    /// A spec with the defaults: fresh workdir under the temp dir, 300 s timeout, 10 s grace,
    /// 1 MiB per stream, empty environment.
    pub fn new(argv: Vec<String>, marker: impl Into<String>) -> Self {
        Spec {
            argv,
            env: Vec::new(),
            workdir: Workdir::Fresh {
                parent: std::env::temp_dir(),
            },
            timeout: Duration::from_secs(300),
            grace: Duration::from_secs(10),
            output_cap: 1 << 20,
            marker: marker.into(),
            nofile: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The main process exited with this code.
    Exited(i32),
    /// The main process was killed by this signal (not by us).
    Signaled(i32),
    /// The timeout elapsed; the process tree was stopped.
    TimedOut,
    /// [`Cancel::cancel`] was called; the process tree was stopped.
    Cancelled,
    /// Nothing ran: bad spec, workdir creation failed, or exec failed (message names why).
    SpawnFailed(String),
}

impl Status {
    pub fn is_success(&self) -> bool {
        *self == Status::Exited(0)
    }
}

/// Result of [`run`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub pid: Option<u32>,
    pub status: Status,
    /// Captured text (lossy UTF-8), ending with a marker line if cut.
    pub stdout: String,
    pub stderr: String,
    /// Whether either stream was cut.
    pub truncated: bool,
    /// Bytes dropped from stdout + stderr.
    pub dropped_bytes: u64,
    pub started: SystemTime,
    pub finished: SystemTime,
    /// Processes other than the main one that had to be signalled to end the run.
    pub leftovers_killed: usize,
    /// The directory the run used.
    pub workdir: Option<PathBuf>,
    /// Set if the temporary workdir could not be removed.
    pub cleanup_error: Option<String>,
}

/// Sent as soon as the process has started.
#[derive(Debug, Clone)]
pub struct Started {
    pub pid: u32,
    pub workdir: PathBuf,
    pub at: SystemTime,
}

/// Optional observers of a run.
#[derive(Debug, Default)]
pub struct Live {
    /// Receives output chunks as they are read. Followers that lag lose chunks (broadcast
    /// semantics); the job is never slowed down.
    pub output: Option<broadcast::Sender<Chunk>>,
    /// Receives the pid once the process is running.
    pub started: Option<oneshot::Sender<Started>>,
}

/// A cancellation handle; clones share the state.
#[derive(Debug, Clone)]
pub struct Cancel(Arc<watch::Sender<bool>>);

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    pub fn new() -> Self {
        Cancel(Arc::new(watch::Sender::new(false)))
    }
    /// Asks the run to stop (SIGTERM, grace, SIGKILL). Idempotent.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
    /// Completes once [`Cancel::cancel`] has been called.
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so this only returns once the value is true.
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// Poll period while waiting for a stopped process tree to go away.
const POLL: Duration = Duration::from_millis(25);
/// Upper bound on the SIGKILL phase (processes stuck in uninterruptible sleep).
const KILL_PHASE_LIMIT: Duration = Duration::from_secs(5);

/// Runs `spec` to completion. Never panics on a bad command: failures are a [`Status`].
///
/// If the returned future is dropped before completion, the process group and the marked
/// descendants are SIGKILLed and an owned workdir is removed (synchronously, in `drop`).
pub async fn run(spec: Spec, live: Live, cancel: Cancel) -> Outcome {
    let started = SystemTime::now();
    let mut out = Outcome {
        pid: None,
        status: Status::SpawnFailed(String::new()),
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
        dropped_bytes: 0,
        started,
        finished: started,
        leftovers_killed: 0,
        workdir: None,
        cleanup_error: None,
    };
    let fail = |mut out: Outcome, msg: String| {
        out.status = Status::SpawnFailed(msg);
        out.finished = SystemTime::now();
        out
    };

    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return fail(out, "empty argv".into());
    }
    if spec.marker.is_empty() || spec.marker.contains('\0') {
        return fail(out, "invalid execution marker".into());
    }
    if cancel.is_cancelled() {
        out.status = Status::Cancelled;
        out.finished = SystemTime::now();
        return out;
    }

    let (dir, remove_after) = match &spec.workdir {
        Workdir::Fresh { parent } => match make_fresh_dir(parent, &spec.marker) {
            Ok(d) => (d, true),
            Err(e) => {
                return fail(
                    out,
                    format!("cannot create workdir in {}: {e}", parent.display()),
                )
            }
        },
        Workdir::Given(d) => (d.clone(), false),
        Workdir::Owned(d) => (d.clone(), true),
    };
    out.workdir = Some(dir.clone());
    let mut cleanup = Cleanup {
        marker: spec.marker.clone(),
        pgid: 0,
        child_alive: false,
        workdir: remove_after.then(|| dir.clone()),
    };

    // The child's whole environment; a later entry replaces an earlier one of the same name.
    let mut env: Vec<(String, String)> = Vec::with_capacity(spec.env.len() + 1);
    let marker_var = (EXECUTION_ID_VAR.to_string(), spec.marker.clone());
    for (k, v) in spec
        .env
        .iter()
        .filter(|(k, _)| !is_forbidden_var(k))
        .chain(std::iter::once(&marker_var))
    {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }

    let spawned = spawn_tracked(
        || spawn::spawn(&spec.argv, &env, &dir, spec.nofile),
        |c| Some(c.pid as u32),
    );
    let (child, tracked) = match spawned {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("cannot execute {}: {e}", spec.argv[0]);
            out.cleanup_error = cleanup.finish().await;
            return fail(out, msg);
        }
    };
    let pid = child.pid as u32;
    // From here on the child runs; if anything below fails, the drop guard stops it.
    cleanup.pgid = pid as i32;
    cleanup.child_alive = true;
    let pipes = (
        tokio::net::unix::pipe::Receiver::from_owned_fd(child.stdout),
        tokio::net::unix::pipe::Receiver::from_owned_fd(child.stderr),
    );
    let (mut child, stdout_pipe, stderr_pipe) = match (Process::new(pid as i32, child.pidfd), pipes)
    {
        (Ok(p), (Ok(o), Ok(e))) => (p, o, e),
        (p, (o, e)) => {
            let err = [p.err(), o.err(), e.err()].into_iter().flatten().next();
            let msg = format!("cannot watch the process of {}: {err:?}", spec.argv[0]);
            cleanup.pgid = 0;
            procs::signal_group(pid as i32, libc::SIGKILL);
            // Untracked now, so the orphan reaper collects it.
            drop(tracked);
            out.cleanup_error = cleanup.finish().await;
            return fail(out, msg);
        }
    };
    out.pid = Some(pid);
    if let Some(tx) = live.started {
        let _ = tx.send(Started {
            pid,
            workdir: dir.clone(),
            at: SystemTime::now(),
        });
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let cap = spec.output_cap;
    let stdout_task = tokio::spawn(capture::capture(
        stdout_pipe,
        Stream::Stdout,
        cap,
        live.output.clone(),
        stop_rx.clone(),
    ));
    let stderr_task = tokio::spawn(capture::capture(
        stderr_pipe,
        Stream::Stderr,
        cap,
        live.output.clone(),
        stop_rx.clone(),
    ));
    drop(live.output);

    let deadline = Instant::now() + spec.timeout;
    enum End {
        Exit(io::Result<ExitStatus>),
        Stop(Status),
    }
    let end = tokio::select! {
        biased;
        r = child.wait() => End::Exit(r),
        _ = cancel.cancelled() => End::Stop(Status::Cancelled),
        _ = tokio::time::sleep_until(deadline) => End::Stop(Status::TimedOut),
    };

    let (status, killed) = match end {
        End::Exit(r) => {
            cleanup.child_alive = false;
            let status = exit_status(r);
            // The common case (nothing left behind) costs one kill(2) and one read of our
            // children, not a walk of every process on the machine.
            let killed = if procs::nothing_left_after_exit(cleanup.pgid) {
                0
            } else {
                stop_tree(None, &mut cleanup, spec.grace).await
            };
            (status, killed)
        }
        End::Stop(status) => {
            let killed = stop_tree(Some(&mut child), &mut cleanup, spec.grace).await;
            (status, killed)
        }
    };
    // Everything is stopped; nothing is left for the drop guard to kill.
    cleanup.pgid = 0;
    drop(tracked);
    out.status = status;
    out.leftovers_killed = killed;

    // Every process of the run is gone, so the pipes normally hit EOF at once. A descendant
    // that escaped (cleared its environment and left the group) may still hold them: give it
    // a moment, then stop reading.
    let drain_limit = spec.grace.max(Duration::from_millis(500));
    let collect = async {
        let o = stdout_task.await.unwrap_or_default();
        let e = stderr_task.await.unwrap_or_default();
        (o, e)
    };
    tokio::pin!(collect);
    let (o, e) = match tokio::time::timeout(drain_limit, &mut collect).await {
        Ok(x) => x,
        Err(_) => {
            let _ = stop_tx.send(true);
            collect.await
        }
    };
    let (stdout, d1) = capture::render(o, cap);
    let (stderr, d2) = capture::render(e, cap);
    out.stdout = stdout;
    out.stderr = stderr;
    out.dropped_bytes = d1 + d2;
    out.truncated = out.dropped_bytes > 0;
    out.cleanup_error = cleanup.finish().await;
    out.finished = SystemTime::now();
    out
}

/// The main child: its pid (ours to reap, tracked against the orphan reaper) and its pidfd,
/// which becomes readable when it exits.
struct Process {
    pid: i32,
    exited: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
}

impl Process {
    fn new(pid: i32, pidfd: OwnedFd) -> io::Result<Self> {
        Ok(Process {
            pid,
            // SAFETY: the OwnedFd stays open, unchanged, for as long as the AsyncFd owns it.
            exited: unsafe {
                AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)?
            },
            status: None,
        })
    }

    /// Reaps the child if it has exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = spawn::try_reap(self.pid)?.map(ExitStatus::from_raw);
        }
        Ok(self.status)
    }

    /// Waits until the child exits and reaps it. Cancel-safe.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            let mut ready = self.exited.readable().await?;
            match spawn::try_reap(self.pid)? {
                Some(raw) => self.status = Some(ExitStatus::from_raw(raw)),
                None => ready.clear_ready(),
            }
        }
    }
}

fn exit_status(r: io::Result<ExitStatus>) -> Status {
    match r {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => Status::Exited(c),
            (None, Some(s)) => Status::Signaled(s),
            _ => Status::Exited(-1),
        },
        // Only possible if someone else reaped our child (a waitpid(-1) elsewhere).
        Err(e) => Status::SpawnFailed(format!("lost the child's exit status: {e}")),
    }
}

/// State needed to clean up after a run, also when the run's future is dropped.
struct Cleanup {
    marker: String,
    /// Process group (the main child's pid), 0 before spawn.
    pgid: i32,
    /// True while the main child has not been reaped, i.e. while its pid (and so the group
    /// id) cannot have been reused and `kill(-pgid)` is safe.
    child_alive: bool,
    /// Directory to remove at the end.
    workdir: Option<PathBuf>,
}

impl Cleanup {
    /// Removes the workdir (off the async threads). Returns an error message if that failed.
    async fn finish(&mut self) -> Option<String> {
        let dir = self.workdir.take()?;
        let shown = dir.display().to_string();
        let r = tokio::task::spawn_blocking(move || remove_tree(&dir)).await;
        match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("cannot remove workdir {shown}: {e}")),
            Err(e) => Some(format!("cannot remove workdir {shown}: {e}")),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.pgid > 0 {
            if self.child_alive {
                procs::signal_group(self.pgid, libc::SIGKILL);
            }
            let now = std::time::Instant::now();
            for p in procs::find_run_processes(&self.marker, self.pgid, now) {
                procs::signal_exact(&p, libc::SIGKILL);
            }
        }
        if let Some(dir) = self.workdir.take() {
            let _ = remove_tree(&dir);
        }
    }
}

/// Finds the run's live processes and sends `sig` to those not in `skip` and, when
/// `group_done` (the group was just signalled as a whole), not in the process group either.
/// Runs off the async threads.
async fn sweep(
    marker: &str,
    pgid: i32,
    sig: libc::c_int,
    skip: &HashSet<(i32, u64)>,
    group_done: bool,
    not_before: std::time::Instant,
) -> Vec<procs::ProcStat> {
    let marker = marker.to_owned();
    let skip = skip.clone();
    tokio::task::spawn_blocking(move || {
        let found = procs::find_run_processes(&marker, pgid, not_before);
        for p in &found {
            let already = skip.contains(&(p.pid, p.start)) || (group_done && p.pgrp == pgid);
            if !already {
                procs::signal_exact(p, sig);
            }
        }
        // Orphans killed here are reaped by the SIGCHLD reaper; a zombie is never "found".
        found
    })
    .await
    .unwrap_or_default()
}

/// Stops everything that belongs to the run: SIGTERM (once each) to the group while the main
/// child is unreaped and to every process of the run, re-scanning for newcomers, until all
/// are gone or `grace` has passed; then SIGKILL the same way until none is left. With
/// `child == None` the main process has already exited and been reaped and only leftovers
/// are handled. Returns how many processes other than the main one were found.
async fn stop_tree(mut child: Option<&mut Process>, c: &mut Cleanup, grace: Duration) -> usize {
    let main_pid = c.pgid;
    let mut others: HashSet<(i32, u64)> = HashSet::new();
    let mut signalled: HashSet<(i32, u64)> = HashSet::new();
    let mut sig = libc::SIGTERM;
    let mut group_signalled = false;
    let mut phase_end = Instant::now() + grace;
    // The last time something changed for this run (a signal sent, the main child reaped): a
    // sweep must see /proc as it was after that.
    let mut last_change = std::time::Instant::now();
    loop {
        let mut group_done = false;
        if c.child_alive && !group_signalled {
            procs::signal_group(c.pgid, sig);
            group_signalled = true;
            group_done = true;
            last_change = std::time::Instant::now();
        }
        // Each process gets one SIGTERM (a second one means "hurry" to some programs).
        let found = sweep(&c.marker, c.pgid, sig, &signalled, group_done, last_change).await;
        if found.iter().any(|p| !signalled.contains(&(p.pid, p.start))) {
            last_change = std::time::Instant::now();
        }
        for p in &found {
            signalled.insert((p.pid, p.start));
            if p.pid != main_pid {
                others.insert((p.pid, p.start));
            }
        }
        if !c.child_alive && found.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= phase_end {
            if sig == libc::SIGKILL {
                break; // unkillable (uninterruptible sleep): give up
            }
            sig = libc::SIGKILL;
            phase_end = now + KILL_PHASE_LIMIT;
            group_signalled = false;
            signalled.clear();
            continue;
        }
        if sig == libc::SIGKILL {
            // Re-send SIGKILL on every round: it is idempotent, and catches forks in flight.
            group_signalled = false;
            signalled.clear();
        }
        // Wait a little, or until the main child exits, then look again.
        let nap = POLL.min(phase_end - now);
        match child.as_deref_mut() {
            Some(ch) if c.child_alive => {
                if tokio::time::timeout(nap, ch.wait()).await.is_ok() {
                    c.child_alive = false;
                    last_change = std::time::Instant::now();
                }
            }
            _ => tokio::time::sleep(nap).await,
        }
    }
    if let Some(ch) = child {
        if c.child_alive {
            if let Ok(Some(_)) = ch.try_wait() {
                c.child_alive = false;
            }
        }
    }
    others.len()
}
