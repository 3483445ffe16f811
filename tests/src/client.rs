//! Hand-made control clients and daemon checks shared by the daemon tests and the fault battery.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use proto::frame;

use crate::{hello_frame, Daemon, Env, Out};

/// Polls `f` every 10 ms until it holds; panics with `what` after `limit`.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Deterministic bytes (xorshift), so a failure can be replayed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A connection that has sent a hello and read the daemon's answer.
pub fn hello_connection(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&hello_frame(proto::PROTOCOL_VERSION)).unwrap();
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).expect("the daemon's hello");
    assert_eq!(reply.to_vec(), hello_frame(proto::PROTOCOL_VERSION));
    s
}

/// A status request frame.
pub fn request_status() -> Vec<u8> {
    frame::encode(&proto::message::ClientMsg::Request(
        proto::message::Request::Status,
    ))
    .unwrap()
}

/// Connects and greets `n` times; every connection gets the daemon's hello, so the daemon holds
/// each of them (not just the kernel's backlog).
pub fn hold_connections(socket: &Path, n: usize) -> Vec<UnixStream> {
    let mut held: Vec<UnixStream> = (0..n)
        .map(|i| UnixStream::connect(socket).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let hello = hello_frame(proto::PROTOCOL_VERSION);
    for s in &mut held {
        s.write_all(&hello).unwrap();
    }
    for (i, s) in held.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = [0u8; 12];
        s.read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("connection {i} got no hello: {e}"));
        assert_eq!(reply.to_vec(), hello_frame(proto::PROTOCOL_VERSION));
    }
    held
}

/// Raises this test process's open-files soft limit to its hard limit.
pub fn raise_own_fd_limit(needed: u64) {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert!(
            lim.rlim_cur >= needed,
            "RLIMIT_NOFILE hard limit {} is too low for this test (needs {needed})",
            lim.rlim_max
        );
    }
}

/// Waits for a child with a bound; the child's pipes must not fill up meanwhile (small outputs).
pub fn finish(mut child: Child, limit: Duration) -> Out {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a client did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout).unwrap();
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// The daemon process is still running and a normal `silica-cron status` reaches it.
#[track_caller]
pub fn assert_serving(env: &Env, d: &mut Daemon) {
    let log = d.log();
    serving(env, &mut d.child, &log);
}

#[track_caller]
pub fn serving(env: &Env, child: &mut Child, log: &str) {
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the daemon died:\n{log}"
    );
    let out = env.cli(&["status"]);
    out.ok().stdout_has(&format!("(pid {})", child.id()));
}

/// A daemon started by hand (not through the harness), stopped when dropped.
pub struct Spawned {
    pub child: Child,
    log: PathBuf,
}

impl Spawned {
    /// Starts `silica-crond ARGS` in `env`, running `setup` in the child before exec, and waits
    /// until the socket answers.
    pub fn start(
        env: &Env,
        args: &[&str],
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Spawned {
        let log = env.path().join("spawned.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = env.command("silica-crond");
        cmd.args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        // SAFETY: `setup` only makes async-signal-safe calls (umask, setrlimit).
        unsafe { cmd.pre_exec(setup) };
        let mut d = Spawned {
            child: cmd.spawn().expect("spawn silica-crond"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(env.socket()).is_err() {
            assert!(
                matches!(d.child.try_wait(), Ok(None)),
                "the daemon exited:\n{}",
                d.log()
            );
            assert!(
                Instant::now() < deadline,
                "no socket after 20 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[track_caller]
    pub fn assert_serving(&mut self, env: &Env) {
        let log = self.log();
        serving(env, &mut self.child, &log);
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lowers this (child) process's open-files soft limit to at most `soft`, and with `hard` the
/// hard limit too (as `prlimit --nofile=N` does: the daemon cannot raise it back); for
/// [`Spawned::start`].
pub fn limit_nofile(
    soft: u64,
    hard: bool,
) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    move || {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit on this (child) process with a valid struct.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_cur.min(soft);
            if hard {
                lim.rlim_max = lim.rlim_cur;
            }
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
