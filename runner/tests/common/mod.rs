//! Helpers shared by the integration tests (each test file is its own process).
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use runner::{Spec, Workdir};

/// Makes the test process a subreaper, like the daemon. Call first in every test.
pub fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| runner::become_subreaper().expect("PR_SET_CHILD_SUBREAPER"));
}

/// A marker unique to this process and call.
pub fn marker(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spec running `/bin/sh -c script` with a small PATH, in a fresh dir under the temp dir.
pub fn sh(script: &str, tag: &str) -> Spec {
    let mut s = Spec::new(
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        marker(tag),
    );
    s.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    s.timeout = Duration::from_secs(10);
    s.grace = Duration::from_millis(500);
    s.output_cap = 64 * 1024;
    s.workdir = Workdir::Fresh {
        parent: std::env::temp_dir(),
    };
    s
}

/// Pids of live (non-zombie) processes, anywhere, whose environment holds the marker.
pub fn processes_with_marker(marker: &str) -> Vec<i32> {
    let entry = format!("SILICA_CRON_EXECUTION_ID={marker}").into_bytes();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == entry) && !is_zombie(pid) {
            out.push(pid);
        }
    }
    out
}

pub fn is_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let after = &s[s.rfind(')').unwrap() + 2..];
            after.starts_with('Z') || after.starts_with('X')
        }
        Err(_) => true,
    }
}

/// Whether `pid` names a live process.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// Waits (polling) until `f` is true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When running as root, removes CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from
/// the calling thread's effective set, so permission bits apply to it (and to threads it
/// creates later, such as a current-thread runtime's blocking pool) as to an ordinary user.
/// Processes it execs get their capabilities back (root's are recomputed at exec).
pub fn drop_dac_caps_on_this_thread() {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
        // CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2, CAP_FOWNER = 3
        d[0].effective &= !((1 << 1) | (1 << 2) | (1 << 3));
        assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0);
    }
}
