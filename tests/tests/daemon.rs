//! The daemon end to end, with the real binaries: `status`, ownership of the database, the
//! control socket's file (permissions, stale files, paths it must not touch), signals, reload,
//! start-up against databases at various revisions, hostile clients and concurrent migrations
//! (DESIGN §1-4).

use std::io::{Cursor, ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use proto::frame;
use proto::message::{ErrorKind, ServerMsg};
use silica_cron_tests::{hello_frame, raw_exchange, wait_until, Daemon, Env, Out};

const HEAD: &str = "34065a4cc718";
const MIDDLE: &str = "fc0bfa77ff5a";

// ---------------------------------------------------------------------------------------------
// Helpers

#[track_caller]
fn wait_for_log(d: &Daemon, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "daemon log lacks {needle:?} after 10 s:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `silica-cron status --json`, checked to succeed and parsed.
#[track_caller]
fn status_json(env: &Env) -> serde_json::Value {
    let out = env.cli(&["status", "--json"]);
    out.ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{out}"))
}

/// The daemon process is still running and a normal `silica-cron status` reaches it.
#[track_caller]
fn assert_serving(env: &Env, d: &mut Daemon) {
    let log = d.log();
    serving(env, &mut d.child, &log);
}

#[track_caller]
fn serving(env: &Env, child: &mut Child, log: &str) {
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the daemon died:\n{log}"
    );
    let out = env.cli(&["status"]);
    out.ok().stdout_has(&format!("(pid {})", child.id()));
}

/// Resident memory of a process, in KiB.
fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A connection that has sent a hello and read the daemon's answer.
fn hello_connection(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&hello_frame(proto::PROTOCOL_VERSION)).unwrap();
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).expect("the daemon's hello");
    assert_eq!(reply.to_vec(), hello_frame(proto::PROTOCOL_VERSION));
    s
}

/// Waits for a child with a bound; the child's pipes must not fill up meanwhile (small outputs).
fn finish(mut child: Child, limit: Duration) -> Out {
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

/// A daemon started by hand (not through the harness), stopped when dropped.
struct Spawned {
    child: Child,
    log: PathBuf,
}

impl Spawned {
    /// Starts `silica-crond` in `env`, running `setup` in the child before exec, and waits until
    /// the socket answers.
    fn start(
        env: &Env,
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Spawned {
        let log = env.path().join("spawned.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = env.command("silica-crond");
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[track_caller]
    fn assert_serving(&mut self, env: &Env) {
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

// ---------------------------------------------------------------------------------------------
// 1. status

#[test]
fn status_reports_the_daemon() {
    let env = Env::new();
    let d = env.start_daemon(&[]);
    let out = env.cli(&["status"]);
    out.ok()
        .stdout_has(&format!(
            "silica-crond {} (pid {}), up ",
            proto::PRODUCT_VERSION,
            d.pid()
        ))
        .stdout_has(&format!("database:    {}\n", env.db().display()))
        .stdout_has(&format!("socket:      {}\n", env.socket().display()))
        .stdout_has(&format!("revision:    {HEAD} (head)\n"))
        .stdout_has("schema:      up to date\n")
        // These tests run the original chain, which stops before the scheduler's tables
        // (built_in_chain.rs checks "running" on the built-in revisions).
        .stdout_has("scheduler:   held: the database lacks revision 57249ff23536 (the scheduler's tables)\n");

    let v = status_json(&env);
    assert_eq!(v["pid"], d.pid() as u64, "{v}");
    assert_eq!(v["version"], proto::PRODUCT_VERSION, "{v}");
    assert_eq!(v["database"], env.db().to_str().unwrap(), "{v}");
    assert_eq!(v["socket"], env.socket().to_str().unwrap(), "{v}");
    assert_eq!(v["revisions"], serde_json::json!([HEAD]), "{v}");
    assert_eq!(v["heads"], serde_json::json!([HEAD]), "{v}");
    assert_eq!(v["at_head"], true, "{v}");
    assert!(v["schema_note"].is_null(), "{v}");
    assert_eq!(
        v["scheduler"], "held: the database lacks revision 57249ff23536 (the scheduler's tables)",
        "{v}"
    );
    assert_eq!(v["environment"], "development", "{v}");
}

/// The revisions in one status reply on a held connection.
fn status_revisions(s: &mut UnixStream) -> Vec<String> {
    s.write_all(&request_status()).unwrap();
    let payload = frame::read_payload(s).unwrap();
    match frame::decode::<ServerMsg>(&payload).unwrap() {
        ServerMsg::Status(info) => info.revisions,
        other => panic!("expected a status reply, got {other:?}"),
    }
}

/// The daemon's cached schema state follows its connection: a rebuild reopens the database, and
/// a value of `data_version` seen on the old connection must not vouch for the new one.
#[test]
fn status_follows_a_rebuild_through_the_daemon() {
    let env = Env::built_in();
    let d = env.start_daemon(&[]);
    let mut s = hello_connection(&env.socket());
    let head = status_revisions(&mut s);
    env.cli(&["prompts", "add", "before", "text"]).ok();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                status_revisions(&mut s);
                n += 1;
            }
            n
        });
        env.cli(&["migrate", "rebuild"]).ok();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(asking.join().unwrap() > 0);
    });
    assert_eq!(status_revisions(&mut s), head);
    env.cli(&["prompts", "add", "after", "text"]).ok();
    for _ in 0..20 {
        status_revisions(&mut s);
    }
    env.sqlite(&format!(
        "UPDATE cron_alembic_version SET version_num = '{MIDDLE}'"
    ))
    .ok();
    assert_eq!(status_revisions(&mut s), [MIDDLE]);
    env.sqlite(&format!(
        "UPDATE cron_alembic_version SET version_num = '{}'",
        head[0]
    ))
    .ok();
    assert_eq!(status_revisions(&mut s), head);
    assert_eq!(
        env.sqlite("SELECT name FROM prompts;").ok().stdout.trim(),
        "after"
    );
    drop(s);
    assert_eq!(d.stop(), 0);
    assert_eq!(
        env.sqlite("SELECT name FROM prompts;").ok().stdout.trim(),
        "after"
    );
    assert!(!sibling(&env.db(), "-wal").exists(), "WAL left behind");
}

#[test]
fn status_without_a_daemon_says_how_to_start_it() {
    let env = Env::new();
    let out = env.cli(&["status"]);
    out.code(3)
        .stderr_has("silica-crond is not running")
        .stderr_has(&env.db().display().to_string())
        .stderr_has("silica-cron serve");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(!env.db().exists(), "status must not create the database");
}

// ---------------------------------------------------------------------------------------------
// 2-3. ownership, the lock file and the socket file

#[test]
fn second_daemon_on_the_same_database_is_refused() {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    let lock = sibling(&env.db(), ".lock");
    assert!(lock.is_file(), "no lock file beside the database");
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        format!("{} daemon", d.pid())
    );

    let second = env.crond(&[]);
    second
        .code(1)
        .stderr_has(&format!("pid {}", d.pid()))
        .stderr_has("owned by a running silica-crond");
    // Also through `silica-cron serve`, and with the socket elsewhere (the lock, not the socket,
    // decides).
    let other_socket = env.path().join("other.sock");
    env.cli(&["serve", "--socket", other_socket.to_str().unwrap()])
        .code(1)
        .stderr_has(&format!("pid {}", d.pid()));
    assert!(!other_socket.exists());

    // The first one is untouched.
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        format!("{} daemon", d.pid())
    );
    assert!(env.socket().exists());
    assert_serving(&env, &mut d);
}

#[test]
fn socket_is_owner_only_even_with_a_permissive_umask() {
    let env = Env::new();
    let _d = Spawned::start(&env, || {
        // SAFETY: umask only changes this (child) process's mask.
        unsafe { libc::umask(0) };
        Ok(())
    });
    let meta = std::fs::symlink_metadata(env.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    let lock = std::fs::metadata(sibling(&env.db(), ".lock")).unwrap();
    assert!(lock.is_file());
    assert_eq!(lock.permissions().mode() & 0o777, 0o600, "lock file mode");
    env.cli(&["status"]).ok();
}

// ---------------------------------------------------------------------------------------------
// 4. what may lie at the socket path

#[test]
fn stale_socket_from_a_killed_daemon_is_replaced() {
    let env = Env::new();
    let d = env.start_daemon(&[]);
    let first = d.pid();
    d.kill9();
    let meta = std::fs::symlink_metadata(env.socket()).expect("kill -9 leaves the socket file");
    assert!(meta.file_type().is_socket());
    // Nobody listens: the client says the daemon is not running.
    env.cli(&["status"])
        .code(3)
        .stderr_has("nothing listens on")
        .stderr_has("silica-crond is not running");

    let mut d = env.start_daemon(&[]);
    assert_ne!(d.pid(), first);
    assert!(
        d.log().contains("removing stale socket file"),
        "{}",
        d.log()
    );
    assert_serving(&env, &mut d);
}

#[test]
fn socket_path_where_another_program_listens_is_left_alone() {
    let env = Env::new();
    let listener = UnixListener::bind(env.socket()).unwrap();
    let inode = std::fs::metadata(env.socket()).unwrap().ino();

    let out = env.crond(&[]);
    out.code(1)
        .stderr_has(&env.socket().display().to_string())
        .stderr_has("another process accepts connections on it");

    // The other program's socket is still there and still its own: the daemon's probe reached
    // it (and hung up), and so does a client now.
    assert_eq!(std::fs::metadata(env.socket()).unwrap().ino(), inode);
    let (mut daemon_probe, _) = listener.accept().expect("the daemon's probe");
    daemon_probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        daemon_probe.read(&mut [0u8; 8]).unwrap(),
        0,
        "probe sent data"
    );
    let mut probe = UnixStream::connect(env.socket()).expect("the other program's socket");
    let (mut accepted, _) = listener.accept().unwrap();
    probe.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    accepted.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // The daemon released the database: a daemon on another socket starts.
    let other = env.path().join("second.sock");
    let d = env.start_daemon_at(&["--socket", other.to_str().unwrap()], &other);
    env.cli(&["--socket", other.to_str().unwrap(), "status"])
        .ok()
        .stdout_has(&format!("(pid {})", d.pid()));
}

#[test]
fn regular_file_at_the_socket_path_is_refused_and_kept() {
    let env = Env::new();
    std::fs::write(env.socket(), "precious\n").unwrap();
    let out = env.crond(&[]);
    out.code(1)
        .stderr_has(&env.socket().display().to_string())
        .stderr_has("is not a socket");
    assert_eq!(std::fs::read_to_string(env.socket()).unwrap(), "precious\n");
    // A directory, likewise.
    let dir_socket = env.path().join("dir.sock");
    std::fs::create_dir(&dir_socket).unwrap();
    env.crond(&["--socket", dir_socket.to_str().unwrap()])
        .code(1)
        .stderr_has("is not a socket");
    assert!(dir_socket.is_dir());
}

// ---------------------------------------------------------------------------------------------
// 5. stopping

fn stops_cleanly_on(sig: i32) {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    let wal = sibling(&env.db(), "-wal");
    let shm = sibling(&env.db(), "-shm");
    assert!(wal.exists(), "the database runs in WAL mode");
    d.signal(sig);
    let code = d.wait(Duration::from_secs(10)).expect("stops within 10 s");
    assert_eq!(code, 0, "exit code after signal {sig}:\n{}", d.log());
    assert!(d.log().contains("silica-crond stopped"), "{}", d.log());
    assert!(!env.socket().exists(), "socket file left behind");
    assert!(!wal.exists(), "WAL file left behind (unclean close)");
    assert!(!shm.exists(), "shm file left behind (unclean close)");
    assert!(env.db().exists());
    env.cli(&["status"]).code(3);

    // The lock is free again.
    let mut again = env.start_daemon(&[]);
    assert_serving(&env, &mut again);
    assert_eq!(again.stop(), 0);
}

#[test]
fn sigterm_stops_cleanly() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_stops_cleanly() {
    stops_cleanly_on(libc::SIGINT);
}

/// Idle connections do not hold a stopping daemon until their idle timeout (60 s): the stop ends
/// the reads their threads wait in, and the clients see the connection close.
#[test]
fn sigterm_closes_idle_connections_at_once() {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    let mut held = hold_connections(&env.socket(), 20);
    // One has just been answered, so its thread waits for a next request.
    assert_eq!(status_revisions(&mut held[0]), [HEAD]);
    let started = Instant::now();
    d.signal(libc::SIGTERM);
    let code = d.wait(Duration::from_secs(10)).expect("stops within 10 s");
    assert_eq!(code, 0, "{}", d.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?} with idle connections",
        started.elapsed()
    );
    for (i, s) in held.iter_mut().enumerate() {
        let mut buf = [0u8; 16];
        assert!(
            matches!(s.read(&mut buf), Ok(0)),
            "connection {i} was not closed"
        );
    }
    assert!(!env.socket().exists(), "socket file left behind");
}

/// A SIGTERM at the very moment the socket appears (a service manager stopping a unit that just
/// started) is a clean stop too, never the default action of the signal.
#[test]
fn sigterm_right_after_start_is_a_clean_stop() {
    let env = Env::new();
    // The database exists first, so every round starts the same way.
    env.cli(&["migrate", "upgrade"]).ok();
    for round in 0..10 {
        let log = env.path().join(format!("early-{round}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut d = env
            .command("silica-crond")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn silica-crond");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !env.socket().exists() {
            assert!(Instant::now() < deadline, "no socket after 20 s");
            assert!(matches!(d.try_wait(), Ok(None)), "the daemon exited");
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = d.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no stop within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        };
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(0), "round {round}: {status}\n{log}");
        assert!(!env.socket().exists(), "round {round}: socket left behind");
        assert!(
            !sibling(&env.db(), "-wal").exists(),
            "round {round}: WAL left"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. reloading the configuration

#[test]
fn reload_applies_a_good_file_and_keeps_the_old_one_on_a_bad_file() {
    let env = Env::new();
    let config = env.path().join("config.toml");
    // The environment is a key that takes effect on reload and shows in status; the HTTP
    // address (port 0: any free port) is one that needs a restart.
    std::fs::write(
        &config,
        "environment = 'development'\nbind_port = 0\nmax_connections = 64\n",
    )
    .unwrap();
    let mut d = env.start_daemon(&["--config", config.to_str().unwrap()]);
    let environment = |env: &Env| status_json(env)["environment"].clone();
    let http = |env: &Env| status_json(env)["http"].clone();
    assert_eq!(environment(&env), "development");
    let listening = http(&env);
    assert!(
        listening
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{listening}"
    );

    // SIGHUP with a good file.
    std::fs::write(&config, "environment = 'production'\nbind_port = 0\n").unwrap();
    d.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "SIGHUP reloads", || {
        environment(&env) == "production"
    });
    wait_for_log(&d, "configuration reloaded");

    // `silica-cron reload` with a good file: effective when it returns. A new HTTP address is
    // not: the listener stays where it is, and the log says so.
    std::fs::write(
        &config,
        "environment = 'development'\nbind_port = 9191\nbind_host = '0.0.0.0'\n",
    )
    .unwrap();
    let out = env.cli(&["reload"]);
    out.ok();
    assert_eq!(environment(&env), "development");
    assert_eq!(http(&env), listening);
    wait_for_log(&d, "the HTTP address changes only with a restart");

    // A bad file: the client is told which key, the running configuration stays.
    std::fs::write(&config, "environment = 'production'\nbind_prot = 7071\n").unwrap();
    let out = env.cli(&["reload"]);
    out.code(1)
        .stderr_has("bind_prot")
        .stderr_has("configuration not reloaded")
        .stderr_has(config.to_str().unwrap());
    assert_eq!(environment(&env), "development");
    assert_serving(&env, &mut d);

    // SIGHUP with the bad file: logged, still serving with the old configuration.
    d.signal(libc::SIGHUP);
    wait_for_log(&d, "configuration not reloaded");
    assert!(d.log().contains("bind_prot"), "{}", d.log());
    assert_serving(&env, &mut d);
    assert_eq!(environment(&env), "development");

    // A file that went missing is an error too, not a crash.
    std::fs::remove_file(&config).unwrap();
    env.cli(&["reload"])
        .code(1)
        .stderr_has("cannot read config file");
    assert_serving(&env, &mut d);
}

// ---------------------------------------------------------------------------------------------
// 7. start-up against databases at various revisions

#[test]
fn production_daemon_upgrades_at_start() {
    let mut env = Env::new();
    env.cli(&["migrate", "upgrade", MIDDLE])
        .ok()
        .stderr_has(&format!("Running upgrade 5d8b746712b6 -> {MIDDLE}"));
    assert!(env.db().exists());
    env.set_var("SILICA_ENVIRONMENT", "production");
    let d = env.start_daemon(&[]);
    let log = d.log();
    assert!(
        log.contains("🚀 Production detected: auto-applying cron migrations..."),
        "{log}"
    );
    assert!(
        log.contains(&format!("Running upgrade {MIDDLE} -> {HEAD}")),
        "{log}"
    );
    assert!(
        log.contains("✅ cron migrations applied successfully"),
        "{log}"
    );
    let v = status_json(&env);
    assert_eq!(v["environment"], "production");
    assert_eq!(v["revisions"], serde_json::json!([HEAD]));
    assert_eq!(v["at_head"], true);
    assert_eq!(
        v["scheduler"],
        "held: the database lacks revision 57249ff23536 (the scheduler's tables)"
    );
}

#[test]
fn development_daemon_behind_head_serves_and_holds_jobs() {
    let env = Env::new();
    env.cli(&["migrate", "upgrade", MIDDLE]).ok();
    let d = env.start_daemon(&[]);
    assert!(
        d.log()
            .contains("jobs do not fire until the database is at head"),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("Running upgrade"), "{}", d.log());
    let out = env.cli(&["status"]);
    out.ok()
        .stdout_has(&format!("revision:    {MIDDLE}\n"))
        .stdout_has("needs migration")
        .stdout_has("scheduler:   held: needs migration\n");
    let v = status_json(&env);
    assert_eq!(v["at_head"], false);
    assert_eq!(v["revisions"], serde_json::json!([MIDDLE]));

    env.cli(&["migrate", "upgrade"])
        .ok()
        .stderr_has(&format!("Running upgrade {MIDDLE} -> {HEAD}"));
    env.cli(&["status"])
        .ok()
        .stdout_has(&format!("revision:    {HEAD} (head)\n"))
        .stdout_has("schema:      up to date\n")
        .stdout_has("scheduler:   held: the database lacks revision 57249ff23536 (the scheduler's tables)\n");
}

#[test]
fn missing_database_is_created_at_head() {
    let env = Env::new();
    let db = env.path().join("sub").join("new.db");
    std::fs::create_dir(env.path().join("sub")).unwrap();
    assert!(!db.exists());
    let socket = sibling(&db, ".sock");
    let _d = env.start_daemon_at(&["--db", db.to_str().unwrap()], &socket);
    assert!(db.is_file());
    let v = serde_json::from_str::<serde_json::Value>(
        &env.cli(&["--db", db.to_str().unwrap(), "status", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["revisions"], serde_json::json!([HEAD]));
    assert_eq!(v["at_head"], true);
    assert_eq!(v["socket"], socket.to_str().unwrap());
}

// ---------------------------------------------------------------------------------------------
// 8. hostile clients

/// Deterministic bytes (xorshift), so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
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

#[test]
fn random_bytes_are_dropped() {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    for seed in 1..=40u64 {
        // At least 12 bytes, so a header announcing up to 8 bytes is followed by its payload and
        // the daemon decides at once; at most a socket buffer, so the write never blocks.
        let bytes = noise(seed, 12 + (seed as usize * 97) % 4000);
        let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
        assert!(
            reply.is_empty(),
            "seed {seed}: the daemon answered a non-hello with {reply:?}"
        );
    }
    // HTTP, and a 4 GiB hello.
    let reply = raw_exchange(
        &env.socket(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(reply.is_empty());
    let reply = raw_exchange(&env.socket(), &[0xff; 16], Duration::from_secs(10)).unwrap();
    assert!(reply.is_empty());
    assert_serving(&env, &mut d);
}

#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    let before = vm_rss_kib(d.pid());
    for _ in 0..20 {
        let mut bytes = hello_frame(proto::PROTOCOL_VERSION);
        bytes.extend_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 64]);
        let started = Instant::now();
        let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the daemon did not close the connection"
        );
        // Its hello, then nothing: closed.
        assert_eq!(reply, hello_frame(proto::PROTOCOL_VERSION));
    }
    // Just over the request limit, with the bytes really sent.
    let mut s = hello_connection(&env.socket());
    let len = 1024 * 1024 + 1;
    s.write_all(&(len as u32).to_be_bytes()).unwrap();
    let _ = s.write_all(&vec![0u8; len]);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    drop(s);

    let after = vm_rss_kib(d.pid());
    assert!(
        after < 100 * 1024,
        "daemon RSS {after} KiB after oversized frames (before: {before} KiB)"
    );
    assert_serving(&env, &mut d);
}

#[test]
fn stalled_clients_do_not_block_others() {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    // Half a hello.
    let mut half_hello = UnixStream::connect(env.socket()).unwrap();
    half_hello
        .write_all(&hello_frame(proto::PROTOCOL_VERSION)[..6])
        .unwrap();
    // A hello, then half a request frame.
    let mut half_request = hello_connection(&env.socket());
    let request = frame::encode(&proto::message::ClientMsg::Request(
        proto::message::Request::Status,
    ))
    .unwrap();
    half_request.write_all(&request[..2]).unwrap();
    // A hello, then a header and part of the payload.
    let mut half_payload = hello_connection(&env.socket());
    half_payload.write_all(&100u32.to_be_bytes()).unwrap();
    half_payload.write_all(&[0u8; 10]).unwrap();

    let started = Instant::now();
    for _ in 0..5 {
        assert_serving(&env, &mut d);
    }
    assert!(started.elapsed() < Duration::from_secs(4));

    // The half hello is dropped after the handshake timeout (5 s), not kept forever.
    half_hello
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 16];
    let started = Instant::now();
    let n = loop {
        // A stop and continue of this process interrupts a read with a timeout (signal(7)).
        match half_hello.read(&mut buf) {
            Err(e)
                if e.kind() == IoErrorKind::Interrupted
                    && started.elapsed() < Duration::from_secs(15) => {}
            other => break other,
        }
    };
    assert!(
        matches!(n, Ok(0)),
        "expected the daemon to close a stalled handshake, got {n:?} after {:?}",
        started.elapsed()
    );
    // The others are still held (idle timeout is longer) and everyone else is served.
    assert_serving(&env, &mut d);
    drop((half_request, half_payload));
}

/// Raises this test process's open-files soft limit to its hard limit.
fn raise_own_fd_limit(needed: u64) {
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

/// Connects and greets `n` times; every connection gets the daemon's hello, so the daemon holds
/// each of them (not just the kernel's backlog).
fn hold_connections(socket: &Path, n: usize) -> Vec<UnixStream> {
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

/// The daemon starts with the usual soft limit of 1024 open files (systemd's default too), so it
/// must raise it itself to reach its default `max_connections` of 1024.
#[test]
fn a_thousand_held_connections_do_not_lock_out_status() {
    raise_own_fd_limit(1200);
    let env = Env::new();
    let mut d = Spawned::start(&env, || {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit on this (child) process with a valid struct.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_cur.min(1024);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        Ok(())
    });
    // Opened at once, then greeted.
    let mut held = hold_connections(&env.socket(), 1000);
    let started = Instant::now();
    d.assert_serving(&env);
    d.assert_serving(&env);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "status took {:?} with 1,000 idle connections",
        started.elapsed()
    );
    // A held connection still works.
    let s = &mut held[500];
    s.write_all(&request_status()).unwrap();
    let payload = frame::read_payload(s).unwrap();
    let msg: ServerMsg = frame::decode(&payload).unwrap();
    assert!(matches!(msg, ServerMsg::Status(ref i) if i.pid == d.child.id()));

    // Up to the limit of 1024, all held; one more is refused at once, not left hanging.
    held.extend(hold_connections(&env.socket(), 24));
    let client = env
        .command("silica-cron")
        .arg("status")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(client, Duration::from_secs(10))
        .code(1)
        .stderr_has("the daemon closed the connection");
    assert!(
        d.log().contains("too many control connections"),
        "{}",
        d.log()
    );
    let rss = vm_rss_kib(d.child.id() as i32);
    assert!(
        rss < 100 * 1024,
        "daemon RSS {rss} KiB with 1024 connections"
    );

    // One leaves: a place is free again.
    drop(held.pop());
    wait_until(
        Duration::from_secs(10),
        "a freed slot serves status",
        || env.cli(&["status"]).code == 0,
    );
    drop(held);
    d.assert_serving(&env);
}

fn request_status() -> Vec<u8> {
    frame::encode(&proto::message::ClientMsg::Request(
        proto::message::Request::Status,
    ))
    .unwrap()
}

#[test]
fn wrong_protocol_version_gets_the_daemons_hello_and_a_close() {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    // A future client: hello 99, then a request the daemon must not try to read.
    let mut bytes = hello_frame(99);
    bytes.extend_from_slice(&request_status());
    let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
    assert_eq!(
        reply,
        hello_frame(proto::PROTOCOL_VERSION),
        "the daemon's hello, then a close"
    );
    wait_for_log(
        &d,
        &format!(
            "a client speaking protocol 99 connected; this daemon speaks {}",
            proto::PROTOCOL_VERSION
        ),
    );
    assert_serving(&env, &mut d);
}

#[test]
fn client_reports_a_protocol_mismatch() {
    // A stand-in for a daemon of another protocol version.
    let env = Env::new();
    let socket = env.path().join("future.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hello = [0u8; 12];
        s.read_exact(&mut hello).unwrap();
        s.write_all(&hello_frame(proto::PROTOCOL_VERSION + 1))
            .unwrap();
        hello
    });
    let out = env.cli(&["--socket", socket.to_str().unwrap(), "status"]);
    out.code(1).stderr_has(&format!(
        "protocol mismatch: client {}, daemon {}",
        proto::PROTOCOL_VERSION,
        proto::PROTOCOL_VERSION + 1
    ));
    assert_eq!(
        server.join().unwrap().to_vec(),
        hello_frame(proto::PROTOCOL_VERSION)
    );
}

#[test]
fn garbage_after_a_valid_hello_gets_an_error_reply() {
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    for (i, payload) in [
        vec![0xff; 16],
        noise(7, 200),
        vec![0u8; 1],
        // A valid request followed by a trailing byte.
        {
            let mut p = request_status()[4..].to_vec();
            p.push(0);
            p
        },
        // Migrate with a string claiming u64::MAX bytes.
        {
            let mut p = vec![0u8, 2];
            p.extend_from_slice(&[0xff; 9]);
            p
        },
    ]
    .into_iter()
    .enumerate()
    {
        let mut bytes = hello_frame(proto::PROTOCOL_VERSION);
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
        let mut r = Cursor::new(reply);
        let hello = frame::read_payload(&mut r).expect("hello");
        assert_eq!(frame::parse_hello(&hello).unwrap(), proto::PROTOCOL_VERSION);
        match frame::read_payload(&mut r) {
            // An error reply, then the close.
            Ok(p) => match frame::decode::<ServerMsg>(&p) {
                Ok(ServerMsg::Done(Err(e))) => {
                    assert_eq!(e.kind, ErrorKind::InvalidArgument, "case {i}: {e:?}");
                    assert!(e.message.contains("malformed request"), "case {i}: {e:?}");
                    assert!(
                        matches!(frame::read_payload(&mut r), Err(frame::FrameError::Closed)),
                        "case {i}: more after the error"
                    );
                }
                other => panic!("case {i}: expected Done(Err), got {other:?}"),
            },
            // Or just the close.
            Err(frame::FrameError::Closed) => {}
            Err(e) => panic!("case {i}: {e}"),
        }
        assert_serving(&env, &mut d);
    }
    // An empty frame after the hello: closed.
    let mut bytes = hello_frame(proto::PROTOCOL_VERSION);
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
    assert_eq!(reply, hello_frame(proto::PROTOCOL_VERSION));
    assert_serving(&env, &mut d);
}

// ---------------------------------------------------------------------------------------------
// 9. concurrent migrations through one daemon

#[test]
fn concurrent_upgrades_apply_each_step_once() {
    let env = Env::new();
    let _d = env.start_daemon(&[]);
    env.cli(&["migrate", "downgrade", "base"]).ok();
    let v = status_json(&env);
    assert_eq!(v["revisions"], serde_json::json!([]), "{v}");

    let clients: Vec<Child> = (0..8)
        .map(|_| {
            env.command("silica-cron")
                .args(["migrate", "upgrade"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn silica-cron")
        })
        .collect();
    let outs: Vec<Out> = clients
        .into_iter()
        .map(|c| finish(c, Duration::from_secs(20)))
        .collect();
    for o in &outs {
        o.ok();
    }
    let applied: Vec<&str> = outs
        .iter()
        .flat_map(|o| o.stderr.lines())
        .filter(|l| l.contains("Running upgrade"))
        .collect();
    assert_eq!(
        applied,
        [
            "INFO  [alembic.runtime.migration] Running upgrade  -> 5d8b746712b6, initial_cron_schema",
            "INFO  [alembic.runtime.migration] Running upgrade 5d8b746712b6 -> fc0bfa77ff5a, add new feature",
            "INFO  [alembic.runtime.migration] Running upgrade fc0bfa77ff5a -> 34065a4cc718, add priority field to prompts",
        ],
        "each step exactly once across all clients:\n{}",
        outs.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("\n")
    );
    let v = status_json(&env);
    assert_eq!(v["revisions"], serde_json::json!([HEAD]), "{v}");
    assert_eq!(v["at_head"], true, "{v}");
    let rows = env.sqlite("SELECT version_num FROM cron_alembic_version");
    rows.ok();
    assert_eq!(rows.stdout.trim(), HEAD);
}
