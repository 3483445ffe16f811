//! Starting a job's process the way `posix_spawn` does, with `clone(CLONE_VM | CLONE_VFORK)`,
//! not `fork`.
//!
//! Why not `std::process::Command`: the child must set its process group, a lower
//! `RLIMIT_NOFILE` and default signal dispositions before exec, and `posix_spawn` has no rlimit
//! attribute, so std would fall back to `fork` (any `pre_exec` does). With thousands of runs
//! in flight, `fork` copied the daemon's page tables and took COW faults with TLB shootdowns
//! on every start; that was most of the cost of a 10,000-run burst (measured with perf). A
//! vfork-style child shares the parent's memory until it execs, so it costs the same whatever
//! the daemon's size. `CLONE_PIDFD` gives a pidfd for the child from the start, so waiting for
//! it never depends on SIGCHLD or on a pid that could be reused.
//!
//! The descriptor table is shared with the child too (`CLONE_FILES`): copying it, as fork and
//! posix_spawn do, costs one entry per open descriptor, and with thousands of runs in flight
//! (two pipes and a pidfd each) that copy and the close-on-exec sweep of the copy were the
//! next largest cost. Instead, the pipes are placed in three reserved low-numbered slots, and
//! the child's first act is `close_range(K, ~0, CLOSE_RANGE_UNSHARE)`, which gives it a private
//! table holding only the descriptors below K. Spawns are serialized by the slots' lock.
//!
//! The child runs on its own small stack, in the parent's memory, while the parent thread is
//! suspended. It must not allocate or take locks: everything it touches is prepared before
//! the clone, and it only makes raw system calls. All signals are blocked in the parent around
//! the clone so that none of the daemon's handlers runs in the child; the child resets every
//! handled signal to its default, then unblocks them just before exec.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// A started child: its pid, a pidfd (readable once it has exited) and the read ends of its
/// stdout and stderr pipes.
#[derive(Debug)]
pub(crate) struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What the child does, all prepared in the parent (the child must not allocate).
#[repr(C)]
struct Plan {
    /// Candidate paths of the program, null-terminated (PATH lookup done by the parent).
    programs: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    dir: *const libc::c_char,
    /// The reserved slots (see [`Slots`]), moved to 0, 1 and 2 in the child.
    stdin: libc::c_int,
    stdout: libc::c_int,
    stderr: libc::c_int,
    /// The child keeps only the descriptors below this one.
    keep_below: libc::c_uint,
    nofile: libc::rlim_t,
    set_nofile: bool,
    /// Set by the child when it fails before exec: which step, and errno.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

// Steps the child can fail at; the parent turns them into messages.
const STEP_PGID: i32 = 1;
const STEP_RLIMIT: i32 = 2;
const STEP_STDIO: i32 = 3;
const STEP_CHDIR: i32 = 4;
const STEP_EXEC: i32 = 5;
const STEP_SIGMASK: i32 = 6;
const STEP_FDS: i32 = 7;

/// Three descriptors reserved at the first spawn, when the daemon has few open (so their
/// numbers are small). Each holds /dev/null between spawns; during a spawn the stdout and
/// stderr slots hold the pipes' write ends.
struct Slots {
    null: OwnedFd,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

static SLOTS: Mutex<Option<Slots>> = Mutex::new(None);

impl Slots {
    fn new() -> io::Result<Slots> {
        let null: OwnedFd = std::fs::File::open("/dev/null")?.into();
        let slot = || -> io::Result<OwnedFd> {
            // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (at least 3) or -1.
            let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: new and owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let (stdin, stdout, stderr) = (slot()?, slot()?, slot()?);
        Ok(Slots {
            null,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Points `slot` at `fd`'s open file (dup3 replaces atomically; the slot stays reserved).
    fn put(slot: &OwnedFd, fd: libc::c_int) -> io::Result<()> {
        // SAFETY: both descriptors are open; dup3 onto a descriptor we own.
        if unsafe { libc::dup3(fd, slot.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The child's stack. It makes a handful of system calls through libc; 64 KiB is ample.
const STACK_SIZE: usize = 64 * 1024;

/// Signals whose disposition is reset to the default even when the daemon ignores them
/// (an ignored signal stays ignored across exec; handled ones are reset by exec anyway).
const RESET_EVEN_IF_IGNORED: [libc::c_int; 9] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGCHLD,
    libc::SIGPIPE,
];

/// Starts `argv` with exactly `env`, in `dir`, stdin from /dev/null, stdout and stderr to new
/// pipes, in its own process group, with every descriptor above 2 closed on exec. `argv[0]`
/// without a slash is looked up in the `PATH` of `env` (or `/usr/local/bin:/usr/bin:/bin`).
pub(crate) fn spawn(
    argv: &[String],
    env: &[(String, String)],
    dir: &Path,
    nofile: Option<u64>,
) -> io::Result<Child> {
    let nul = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} holds a NUL byte"),
        )
    };
    let programs = candidates(&argv[0], env)?;
    let argv_c = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| nul("an argument")))
        .collect::<io::Result<Vec<_>>>()?;
    let env_c = env
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid environment variable name {k:?}"),
                ));
            }
            CString::new(format!("{k}={v}")).map_err(|_| nul("an environment variable"))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let dir_c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| nul("the work directory"))?;
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let (programs_p, argv_p, envp_p) = (ptrs(&programs), ptrs(&argv_c), ptrs(&env_c));

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;

    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    if slots.is_none() {
        *slots = Some(Slots::new()?);
    }
    let slots = slots.as_ref().expect("initialised above");
    Slots::put(&slots.stdout, out_w.as_raw_fd())?;
    let restore = |slots: &Slots| {
        // Back to /dev/null, so that the parent holds no write end of the pipes.
        let _ = Slots::put(&slots.stdout, slots.null.as_raw_fd());
        let _ = Slots::put(&slots.stderr, slots.null.as_raw_fd());
    };
    if let Err(e) = Slots::put(&slots.stderr, err_w.as_raw_fd()) {
        restore(slots);
        return Err(e);
    }
    drop((out_w, err_w));
    let keep_below = [&slots.stdin, &slots.stdout, &slots.stderr]
        .iter()
        .map(|f| f.as_raw_fd())
        .max()
        .unwrap_or(2) as libc::c_uint
        + 1;

    let plan = Plan {
        programs: programs_p.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: envp_p.as_ptr(),
        dir: dir_c.as_ptr(),
        stdin: slots.stdin.as_raw_fd(),
        stdout: slots.stdout.as_raw_fd(),
        stderr: slots.stderr.as_raw_fd(),
        keep_below,
        nofile: nofile.unwrap_or(0) as libc::rlim_t,
        set_nofile: nofile.is_some(),
        failed_step: AtomicI32::new(0),
        failed_errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down on every Linux target we build for; keep the top 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !0xf;
    let mut pidfd: libc::c_int = -1;

    // SAFETY: sigset operations on local values; the mask is restored right after the clone.
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old_mask);
    }
    // SAFETY: CLONE_VM | CLONE_VFORK suspends this thread until the child has exec'd or
    // exited, so `plan`, `stack` and everything they point to outlive the child's use of them;
    // `child_main` only makes async-signal-safe system calls. CLONE_PIDFD stores the pidfd in
    // `pidfd` (the parent_tid argument).
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM
                | libc::CLONE_VFORK
                | libc::CLONE_FILES
                | libc::CLONE_PIDFD
                | libc::SIGCHLD,
            &plan as *const Plan as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
    }
    drop(stack);
    restore(slots);
    if pid < 0 {
        return Err(clone_err);
    }
    // SAFETY: the kernel returned a new pidfd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let step = plan.failed_step.load(Ordering::Acquire);
    if step != 0 {
        // The child has exited (status 127); collect it so no zombie is left.
        let mut status = 0;
        // SAFETY: waitpid on our own child, which has already exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let err = io::Error::from_raw_os_error(plan.failed_errno.load(Ordering::Acquire));
        let what = match step {
            STEP_PGID => "cannot start a process group",
            STEP_RLIMIT => "cannot set RLIMIT_NOFILE",
            STEP_STDIO => "cannot set up stdin/stdout/stderr",
            STEP_CHDIR => "cannot enter the work directory",
            STEP_SIGMASK => "cannot unblock signals",
            STEP_FDS => "cannot get a descriptor table of its own",
            _ => return Err(err),
        };
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(Child {
        pid,
        pidfd,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Paths to try for `program`, like execvp: itself when it holds a slash, else each PATH entry.
fn candidates(program: &str, env: &[(String, String)]) -> io::Result<Vec<CString>> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the program name holds a NUL byte",
        )
    };
    if program.contains('/') {
        return Ok(vec![CString::new(program).map_err(|_| bad())?]);
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    let mut out = Vec::new();
    for dir in path.split(':') {
        // An empty entry means the current directory, as for execvp.
        let dir = if dir.is_empty() { "." } else { dir };
        let full = Path::new(dir).join(OsStr::new(program));
        out.push(CString::new(full.as_os_str().as_bytes()).map_err(|_| bad())?);
    }
    if out.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    Ok(out)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reaps `pid` if it has exited: `Some(raw wait status)`, `None` while it runs.
pub(crate) fn try_reap(pid: i32) -> io::Result<Option<i32>> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a specific child with WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(Some(status));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn errno() -> i32 {
    // SAFETY: reads the calling thread's errno (in the child: the suspended parent's slot,
    // which nothing else uses meanwhile).
    unsafe { *libc::__errno_location() }
}

/// Records the failed step and exits without running any of the parent's exit handlers.
fn fail(plan: &Plan, step: i32, err: i32) -> ! {
    plan.failed_errno.store(err, Ordering::Release);
    plan.failed_step.store(step, Ordering::Release);
    // SAFETY: _exit ends the child at once.
    unsafe { libc::_exit(127) }
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Plan`, alive while the parent is suspended.
    let plan = unsafe { &*(arg as *const Plan) };
    // SAFETY: only system calls on values prepared by the parent (see the module docs).
    unsafe {
        // First, a descriptor table of our own holding only the low descriptors (the
        // reserved slots among them); until then every change would hit the daemon's.
        if libc::syscall(
            libc::SYS_close_range,
            plan.keep_below,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE as libc::c_uint,
        ) != 0
            && libc::unshare(libc::CLONE_FILES) != 0
        {
            fail(plan, STEP_FDS, errno());
        }
        // A handler of the daemon must never run here, and an ignored signal would stay
        // ignored in the job: reset them (the child has its own copy of the dispositions).
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue; // glibc's internal signals
            }
            let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if handled || RESET_EVEN_IF_IGNORED.contains(&sig) {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(plan, STEP_PGID, errno());
        }
        if plan.set_nofile {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur = plan.nofile.min(lim.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    fail(plan, STEP_RLIMIT, errno());
                }
            }
        }
        // The slots are all above 2, so no move overwrites another.
        for (to, from) in [plan.stdin, plan.stdout, plan.stderr]
            .into_iter()
            .enumerate()
        {
            if libc::dup2(from, to as libc::c_int) != to as libc::c_int {
                fail(plan, STEP_STDIO, errno());
            }
        }
        if libc::chdir(plan.dir) != 0 {
            fail(plan, STEP_CHDIR, errno());
        }
        // Any descriptor the daemon forgot to mark close-on-exec must not leak into a job.
        // Best effort: needs Linux 5.11.
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(plan, STEP_SIGMASK, errno());
        }
        // Like execvp: EACCES from one candidate is reported if no other one runs.
        let mut err = libc::ENOENT;
        let mut p = plan.programs;
        while !(*p).is_null() {
            libc::execve(*p, plan.argv, plan.envp);
            let e = errno();
            if e == libc::EACCES || err != libc::EACCES && e != libc::ENOENT && e != libc::ENOTDIR {
                err = e;
            }
            p = p.add(1);
        }
        fail(plan, STEP_EXEC, err)
    }
}
