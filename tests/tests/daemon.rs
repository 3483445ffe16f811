//! The daemon end to end, with the real binaries: `status`, the lock and socket files'
//! permissions, signals, reload, start-up against databases at various revisions, the protocol
//! handshake and concurrent migrations (DESIGN §1-4). Attacks (a second daemon, stale or foreign
//! socket files, hostile clients) are in the fault battery, `tests/faults/`.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use proto::frame;
use proto::message::ServerMsg;
use silica_cron_tests::client::{
    assert_serving, finish, hello_connection, hold_connections, request_status, wait_until, Spawned,
};
use silica_cron_tests::{hello_frame, raw_exchange, sibling, Daemon, Env, Out};

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
    try_status_revisions(s).unwrap_or_else(|e| panic!("{e}"))
}

fn try_status_revisions(s: &mut UnixStream) -> Result<Vec<String>, String> {
    s.write_all(&request_status())
        .map_err(|e| format!("status request: {e}"))?;
    let payload = frame::read_payload(s).map_err(|e| format!("status reply: {e}"))?;
    match frame::decode::<ServerMsg>(&payload).map_err(|e| e.to_string())? {
        ServerMsg::Status(info) => Ok(info.revisions),
        other => Err(format!("expected a status reply, got {other:?}")),
    }
}

/// The daemon's cached schema state follows its connection: a rebuild reopens the database, and
/// a value of `data_version` seen on the old connection must not vouch for the new one.
#[test]
fn status_follows_a_rebuild_through_the_daemon() {
    let env = Env::built_in();
    let d = env.start_daemon(&[]);
    let mut s = hello_connection(&env.socket());
    // On a failure, what the daemon said.
    let status_revisions = |s: &mut UnixStream| {
        try_status_revisions(s).unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()))
    };
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
fn socket_is_owner_only_even_with_a_permissive_umask() {
    let env = Env::new();
    let _d = Spawned::start(&env, &[], || {
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
    wait_for_log(
        &d,
        "max_connections changes only with a restart; keeping 64",
    );

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
    // The slots counted at start stay in force, so each reload without the key says so again.
    assert_eq!(
        d.log()
            .matches("max_connections changes only with a restart; keeping 64")
            .count(),
        2,
        "{}",
        d.log()
    );

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
