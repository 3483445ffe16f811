//! Harness for the end-to-end tests: each test gets a temp directory, runs the real
//! `silica-cron` / `silica-crond` binaries in it with a clean environment, and can start and
//! stop a real daemon.
//!
//! The binaries come from `target/<profile>/`; `scripts/test.sh` builds them before
//! `cargo test` runs. A binary older than the sources is refused rather than silently tested.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

pub use tempfile::TempDir;

pub mod client;
pub mod jobs;
pub mod report;
pub mod upgrade;
pub mod users;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The original tool's three revisions, frozen (tests/fixtures/original-chain): what the seed
/// guide's exact outputs and alembic interop are checked against.
pub fn original_chain() -> PathBuf {
    root().join("tests/fixtures/original-chain")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Path of a workspace binary, checked to exist and to be newer than the sources.
pub fn bin(name: &str) -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    let dir = CHECKED.get_or_init(|| {
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        let dir = target_dir().join(profile);
        // Each binary against the sources it is built from (a client does not relink when
        // only daemon code changed).
        for (b, crates) in [
            ("silica-cron", &["proto", "ctl", "schedule"][..]),
            ("silica-crond", &["proto", "daemon", "migrations", "schedule", "runner"][..]),
        ] {
            let newest_source = crates
                .iter()
                .flat_map(|d| walk(&root().join(d)))
                .filter(|p| p.extension().is_some_and(|e| e == "rs" || e == "sql" || e == "toml"))
                .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let p = dir.join(b);
            let built = p.metadata().and_then(|m| m.modified()).unwrap_or_else(|_| {
                panic!("{} is missing: run `cargo build --workspace` (scripts/test.sh does)", p.display())
            });
            assert!(
                built >= newest_source,
                "{} is older than the sources: run `cargo build --workspace` (scripts/test.sh does)",
                p.display()
            );
        }
        dir
    });
    dir.join(name)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self
    }
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}:\n{self}");
        self
    }
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{self}"
        );
        self
    }
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{self}"
        );
        self
    }
    /// Stdout lines, without trailing empty ones.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Variables the binaries read; cleared so the developer's environment cannot leak in.
const CLEARED: &[&str] = &[
    "DATABASE_URL",
    "CRON_DATABASE_URL",
    "SILICA_CRON_SOCKET",
    "SILICA_CRON_CONFIG",
    "SILICA_CRON_MIGRATIONS",
    "SILICA_ENVIRONMENT",
    "LOG_LEVEL",
    "LOG_TO_FILE",
    "LOG_DIR",
    "JOURNAL_STREAM",
    // A test run under a service manager must not notify it on the daemons' behalf.
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// A temp directory the binaries run in, with extra environment variables.
pub struct Env {
    dir: TempDir,
    vars: Vec<(String, String)>,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A temp directory whose binaries use the original chain of revisions (see
    /// [`original_chain`]); [`Env::built_in`] for the revisions built into silica-crond.
    pub fn new() -> Env {
        let original = original_chain();
        Env::built_in().with_var(
            "SILICA_CRON_MIGRATIONS",
            original.to_str().expect("utf-8 path"),
        )
    }

    /// A temp directory whose binaries use the revisions built into silica-crond.
    pub fn built_in() -> Env {
        // Short paths: a Unix socket path must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("sc")
            .tempdir_in("/tmp")
            .expect("temp dir");
        Env {
            dir,
            vars: Vec::new(),
        }
    }

    /// Sets (or replaces) an environment variable of the binaries this Env runs.
    pub fn with_var(mut self, k: &str, v: &str) -> Env {
        self.set_var(k, v);
        self
    }

    pub fn set_var(&mut self, k: &str, v: &str) {
        self.vars.retain(|(key, _)| key != k);
        self.vars.push((k.into(), v.into()));
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The default database of this directory.
    pub fn db(&self) -> PathBuf {
        self.path().join("silica-cron.db")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("silica-cron.db.sock")
    }

    pub fn command(&self, name: &str) -> Command {
        self.command_under(&[], name)
    }

    /// The binary `name` run by a wrapper, e.g. `["strace", "-f", …]`, with this Env's
    /// directory and environment.
    pub fn command_under(&self, wrapper: &[&str], name: &str) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin(name));
                c
            }
            None => Command::new(bin(name)),
        };
        c.current_dir(self.path()).stdin(Stdio::null());
        // SIGINT and SIGQUIT as a terminal leaves them: a test runner started as a background
        // job inherits them ignored, and the tests that send them (Ctrl-C to a follower,
        // strace's detach) would wait forever.
        // SAFETY: signal() is async-signal-safe, and nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        for k in CLEARED {
            c.env_remove(k);
        }
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs `silica-cron ARGS` to its end.
    pub fn cli(&self, args: &[&str]) -> Out {
        run(self.command("silica-cron").args(args))
    }

    /// Runs `silica-crond ARGS` to its end.
    pub fn crond(&self, args: &[&str]) -> Out {
        run(self.command("silica-crond").args(args))
    }

    /// Runs the sqlite3 shell on this directory's database.
    pub fn sqlite(&self, sql: &str) -> Out {
        run(Command::new("sqlite3")
            .current_dir(self.path())
            .arg(self.db())
            .arg(sql))
    }

    /// Starts `silica-crond ARGS` and waits until its socket answers a status request.
    pub fn start_daemon(&self, args: &[&str]) -> Daemon {
        self.start_daemon_at(args, &self.socket())
    }

    pub fn start_daemon_at(&self, args: &[&str], socket: &Path) -> Daemon {
        self.listening(self.spawn_daemon(args), socket)
    }

    /// [`Env::start_daemon`] with variables for the daemon alone (not for the client).
    pub fn start_daemon_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Daemon {
        self.listening(self.spawn_daemon_with(args, vars), &self.socket())
    }

    fn listening(&self, mut d: Daemon, socket: &Path) -> Daemon {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(socket).is_ok() {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "silica-crond exited with {status} before listening:\n{}",
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "silica-crond did not listen on {}:\n{}",
                socket.display(),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Env {
    /// Starts `silica-crond ARGS` without waiting for anything.
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        self.spawn_daemon_with(args, &[])
    }

    pub fn spawn_daemon_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Daemon {
        let log = self.path().join(format!("daemon-{}.log", unique()));
        let file = std::fs::File::create(&log).expect("daemon log");
        let child = self
            .command("silica-crond")
            .args(args)
            .envs(vars.iter().copied())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn silica-crond");
        Daemon { child, log }
    }
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub fn run(cmd: &mut Command) -> Out {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running daemon; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM, then waits; returns the exit code.
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(30))
            .expect("daemon did not stop within 30 s after SIGTERM")
    }

    /// kill -9.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            if self.wait(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Runs `f` once with no daemon and once with a daemon serving the directory, each in its own
/// temp directory, so every check holds for both paths.
pub fn both_ways(f: impl Fn(&Env, bool)) {
    let down = Env::new();
    f(&down, false);
    let up = Env::new();
    // The daemon creates the database at head on start; tests that need an empty one begin by
    // asking for `downgrade base`.
    let _d = up.start_daemon(&[]);
    f(&up, true);
}

/// Writes a raw byte sequence to a socket and returns what came back until EOF or `limit`.
pub fn raw_exchange(socket: &Path, bytes: &[u8], limit: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(limit))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(out)
}

/// A hello frame as the protocol defines it (magic + version), for hand-made clients.
pub fn hello_frame(version: u32) -> Vec<u8> {
    let mut v = 8u32.to_be_bytes().to_vec();
    v.extend_from_slice(b"SLCR");
    v.extend_from_slice(&version.to_be_bytes());
    v
}

/// The path of the alembic executable for interop tests: `$ALEMBIC`, else `.venv/bin/alembic`
/// (scripts/setup-alembic.sh makes it).
pub fn alembic() -> PathBuf {
    let p = std::env::var_os("ALEMBIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/alembic"));
    assert!(
        p.exists(),
        "alembic not found at {}: run scripts/setup-alembic.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Runs the alembic environment of the original chain against `db`.
pub fn run_alembic(db: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Out {
    let ini = root().join("tests/alembic_env/alembic.ini");
    let mut c = Command::new(alembic());
    c.arg("-c")
        .arg(ini)
        .args(args)
        .env("DATABASE_URL", format!("sqlite:///{}", db.display()));
    c.env_remove("CRON_DATABASE_URL");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    run(&mut c)
}

/// `db` with `suffix` appended to its file name (`-wal`, `-shm`, `.lock`).
pub fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}
