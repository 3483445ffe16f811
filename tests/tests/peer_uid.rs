//! The control socket admits the daemon's own user and root, and no one else (SO_PEERCRED),
//! checked with a real second account. Needs root (useradd, runuser); says so and passes
//! without checking anything when not root.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use silica_cron_tests::{bin, Env};

const USER: &str = "silica-cron-peer";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The test account's uid, created on first use.
fn test_user() -> u32 {
    let id = |u: &str| {
        Command::new("id")
            .args(["-u", u])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
    };
    if let Some(uid) = id(USER) {
        return uid;
    }
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ])
        .status()
        .expect("useradd");
    // Another test process may have created it meanwhile.
    id(USER).unwrap_or_else(|| panic!("useradd {USER} failed: {made}"))
}

fn chown(path: &Path, uid: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: chown on a path we own, with a valid C string.
    assert_eq!(
        unsafe { libc::chown(c.as_ptr(), uid, u32::MAX) },
        0,
        "chown {path:?}"
    );
}

fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "no daemon at {socket:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn another_user_is_refused_even_through_an_open_socket_file() {
    if !is_root() {
        eprintln!("skipped: needs root for useradd and runuser");
        return;
    }
    test_user();
    let env = Env::built_in();
    let d = env.start_daemon(&[]);
    // Open the directory and the socket file to everyone, as a careless admin might: only the
    // peer-credential check stands between the other user and the daemon now.
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new("runuser")
        .args(["-u", USER, "--"])
        .arg(bin("silica-cron"))
        .arg("--socket")
        .arg(env.socket())
        .arg("status")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "another user got an answer");
    let uid = test_user();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log().contains(&format!("peer_uid={uid}")) {
        assert!(
            Instant::now() < deadline,
            "no refusal logged for uid {uid}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon's own user still gets its answers.
    env.cli(&["status"]).ok();
}

#[test]
fn root_is_admitted_to_a_daemon_run_by_another_user() {
    if !is_root() {
        eprintln!("skipped: needs root for useradd and runuser");
        return;
    }
    let uid = test_user();
    let env = Env::built_in();
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = env.path().join("service");
    std::fs::create_dir(&home).unwrap();
    chown(&home, uid);
    let db = home.join("silica-cron.db");
    let socket = home.join("silica-cron.db.sock");
    let mut daemon = Command::new("runuser")
        .args(["-u", USER, "--"])
        .arg(bin("silica-crond"))
        .arg("--db")
        .arg(&db)
        .current_dir(&home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_socket(&socket);
    let out = env.cli(&["--socket", socket.to_str().unwrap(), "status"]);
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    // runuser forwards SIGTERM to the daemon and exits with it.
    let _ = daemon.wait();
    out.ok().stdout_has(db.to_str().unwrap());
}
