//! The control socket admits root beside the daemon's own user (SO_PEERCRED), checked with a
//! real second account running the daemon. Needs root (useradd, runuser); says so and passes
//! without checking anything when not root. Another user being refused is in the fault battery
//! (`tests/faults/hostile_clients.rs`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use silica_cron_tests::users::{is_root, test_user, USER};
use silica_cron_tests::{bin, Env};

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
