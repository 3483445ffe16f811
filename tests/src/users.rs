//! A second local account for the tests that check who the control socket admits. Creating it
//! needs root.

use std::process::Command;

/// The test account's name.
pub const USER: &str = "silica-cron-peer";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The test account's uid, created on first use.
pub fn test_user() -> u32 {
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
