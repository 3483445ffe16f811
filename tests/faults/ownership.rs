//! Scenario 9: Who owns the database and the socket path: a second daemon on the same database, a stale
//! socket file after kill -9, a socket path where another program listens, a regular file or a
//! directory at the socket path. Each is refused with a message that names the cause (or, for
//! the stale file, replaced), and the database's content (its `.dump`) is unchanged.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use silica_cron_tests::client::assert_serving;
use silica_cron_tests::report::Scenario;
use silica_cron_tests::{sibling, Env};

/// The database's content as the sqlite3 shell dumps it.
fn dump(env: &Env) -> String {
    env.sqlite(".dump").ok().stdout.clone()
}

/// An Env whose database is at head and holds a prompt and a job, with no daemon running.
fn with_data() -> Env {
    let env = Env::built_in();
    let d = env.start_daemon(&[]);
    env.cli(&["prompts", "add", "kept", "a prompt that must survive"])
        .ok();
    env.cli(&[
        "jobs",
        "add",
        "nightly",
        "--prompt",
        "kept",
        "--cron",
        "0 3 * * *",
    ])
    .ok();
    assert_eq!(d.stop(), 0);
    env
}

#[test]
fn second_daemon_on_the_same_database_is_refused() {
    let mut sc = Scenario::start("9a", "a second daemon on the same database");
    let env = with_data();
    let mut d = env.start_daemon(&[]);
    let before = dump(&env);
    let lock = sibling(&env.db(), ".lock");
    assert!(lock.is_file(), "no lock file beside the database");
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        format!("{} daemon", d.pid())
    );

    sc.tried("silica-crond on a database a running daemon owns");
    env.crond(&[])
        .code(1)
        .stderr_has(&format!("pid {}", d.pid()))
        .stderr_has("owned by a running silica-crond");
    // Also through `silica-cron serve`, and with the socket elsewhere (the lock, not the socket,
    // decides).
    sc.tried("silica-cron serve with another socket path on that database");
    let other_socket = env.path().join("other.sock");
    env.cli(&["serve", "--socket", other_socket.to_str().unwrap()])
        .code(1)
        .stderr_has(&format!("pid {}", d.pid()));
    assert!(!other_socket.exists());
    sc.iterations(2);

    // The first one is untouched.
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        format!("{} daemon", d.pid())
    );
    assert!(env.socket().exists());
    assert_serving(&env, &mut d);
    assert_eq!(
        dump(&env),
        before,
        "the refused daemon changed the database"
    );
    sc.held("both refused with exit 1 naming the owner's pid; lock file, socket and data untouched; the first daemon serves");
    sc.pass();
}

#[test]
fn stale_socket_from_a_killed_daemon_is_replaced() {
    let mut sc = Scenario::start("9b", "a stale socket file after kill -9");
    let env = with_data();
    let before = dump(&env);
    let d = env.start_daemon(&[]);
    let first = d.pid();
    sc.tried("kill -9 of the daemon, then a client, then a new daemon");
    d.kill9();
    let meta = std::fs::symlink_metadata(env.socket()).expect("kill -9 leaves the socket file");
    assert!(meta.file_type().is_socket());
    // Nobody listens: the client says the daemon is not running.
    env.cli(&["status"])
        .code(3)
        .stderr_has("nothing listens on")
        .stderr_has("silica-crond is not running");

    let t0 = Instant::now();
    let mut d = env.start_daemon(&[]);
    sc.recovery(t0.elapsed());
    sc.iteration();
    assert_ne!(d.pid(), first);
    assert!(
        d.log().contains("removing stale socket file"),
        "{}",
        d.log()
    );
    assert_serving(&env, &mut d);
    assert_eq!(dump(&env), before);
    sc.held("the client says the daemon is not running (exit 3); the new daemon probes, removes the stale file and serves; data unchanged");
    sc.pass();
}

#[test]
fn socket_path_where_another_program_listens_is_left_alone() {
    let mut sc = Scenario::start("9c", "a socket path in use by another program");
    let env = with_data();
    let before = dump(&env);
    let listener = UnixListener::bind(env.socket()).unwrap();
    let inode = std::fs::metadata(env.socket()).unwrap().ino();

    sc.tried("silica-crond where another program listens on the socket path");
    let out = env.crond(&[]);
    out.code(1)
        .stderr_has(&env.socket().display().to_string())
        .stderr_has("another process accepts connections on it");
    sc.iteration();

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
    assert_eq!(dump(&env), before);
    // The daemon released the database: a daemon on another socket starts.
    let other = env.path().join("second.sock");
    let d = env.start_daemon_at(&["--socket", other.to_str().unwrap()], &other);
    env.cli(&["--socket", other.to_str().unwrap(), "status"])
        .ok()
        .stdout_has(&format!("(pid {})", d.pid()));
    sc.held("refused with exit 1 naming the path; the other program's socket kept (same inode, still answering); data unchanged; the lock released");
    sc.pass();
}

#[test]
fn regular_file_at_the_socket_path_is_refused_and_kept() {
    let mut sc = Scenario::start("9d", "a regular file or a directory at the socket path");
    let env = with_data();
    let before = dump(&env);
    sc.tried("silica-crond with a regular file at the socket path");
    std::fs::write(env.socket(), "precious\n").unwrap();
    let out = env.crond(&[]);
    out.code(1)
        .stderr_has(&env.socket().display().to_string())
        .stderr_has("is not a socket");
    assert_eq!(std::fs::read_to_string(env.socket()).unwrap(), "precious\n");
    // A directory, likewise.
    sc.tried("silica-crond with a directory at the socket path");
    let dir_socket = env.path().join("dir.sock");
    std::fs::create_dir(&dir_socket).unwrap();
    env.crond(&["--socket", dir_socket.to_str().unwrap()])
        .code(1)
        .stderr_has("is not a socket");
    assert!(dir_socket.is_dir());
    sc.iterations(2);
    assert_eq!(dump(&env), before);
    sc.held(
        "both refused with exit 1 ('is not a socket'); file and directory kept; data unchanged",
    );
    sc.pass();
}
