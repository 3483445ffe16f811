//! Helpers for tests that run jobs: a fake agent script as the configured runner, SQL polls on
//! the execution rows, and a /proc scan for the processes of runs.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Env, Out};

/// `silica-cron --config CFG ARGS...`.
pub fn cli(env: &Env, cfg: &str, args: &[&str]) -> Out {
    let mut a = vec!["--config", cfg];
    a.extend_from_slice(args);
    env.cli(&a)
}

/// Writes an executable `#!/bin/sh` script into the Env's directory; returns its path.
pub fn script(env: &Env, name: &str, body: &str) -> String {
    let p = env.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// A config file whose runner is `agent {prompt} {session_id} {workdir}`, with a 1 s kill grace
/// and 8 runs at once unless `extra` sets them, plus `extra` lines; returns its path.
pub fn config(env: &Env, agent: &str, extra: &str) -> String {
    let p = env.path().join("config.toml");
    let mut text =
        format!("runner = [\"{agent}\", \"{{prompt}}\", \"{{session_id}}\", \"{{workdir}}\"]\n");
    // `extra` may set these itself (a key twice is an error).
    for (key, default) in [("kill_grace", "1"), ("max_concurrent_runs", "8")] {
        if !extra.contains(key) {
            text.push_str(&format!("{key} = {default}\n"));
        }
    }
    text.push_str(extra);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// What `sql` prints in the sqlite3 shell, trimmed; the shell must succeed.
pub fn rows(env: &Env, sql: &str) -> String {
    env.sqlite(sql).ok().stdout.trim().to_string()
}

/// Waits until `sql` prints `want`, up to `limit`.
#[track_caller]
pub fn wait_for(env: &Env, sql: &str, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = env.sqlite(sql).stdout.trim().to_string();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {sql:?} to be {want:?}; it is {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A live process that carries a silica-cron execution marker.
#[derive(Debug, Clone)]
pub struct RunProcess {
    pub pid: i32,
    pub cmdline: String,
    environ: Vec<u8>,
}

impl RunProcess {
    fn marker(&self) -> Option<&str> {
        self.environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"SILICA_CRON_EXECUTION_ID="))
            .and_then(|m| std::str::from_utf8(m).ok())
    }

    /// The execution it belongs to (the marker is `<database hash>-<execution id>`).
    pub fn execution_id(&self) -> Option<i64> {
        self.marker()?.rsplit('-').next()?.parse().ok()
    }

    /// A run of a daemon on this Env's default database: the marker's prefix is the daemon's
    /// hash of the database path (`Shared::marker_prefix`).
    pub fn of(&self, env: &Env) -> bool {
        let hash = proto::paths::fnv1a(env.db().as_os_str().as_encoded_bytes()) as u32;
        self.marker()
            .is_some_and(|m| m.starts_with(&format!("{hash:08x}-")))
    }
}

impl std::fmt::Display for RunProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.pid, self.cmdline)
    }
}

/// Every live (non-zombie) process anywhere whose environment carries `SILICA_CRON_EXECUTION_ID`.
pub fn run_processes() -> Vec<RunProcess> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        let dir = Path::new("/proc").join(&name);
        let Ok(environ) = std::fs::read(dir.join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(b"SILICA_CRON_EXECUTION_ID="))
        {
            continue;
        }
        // A zombie is dead already; only its parent's wait is missing.
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        found.push(RunProcess {
            pid,
            cmdline: String::from_utf8_lossy(&cmd).replace('\0', " "),
            environ,
        });
    }
    found
}

/// The live run processes of this Env's daemons.
pub fn env_run_processes(env: &Env) -> Vec<RunProcess> {
    run_processes().into_iter().filter(|p| p.of(env)).collect()
}

/// Waits until no run process of this Env is alive; panics naming the survivors after `limit`.
#[track_caller]
pub fn wait_no_run_processes(env: &Env, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = env_run_processes(env);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run processes survived for {limit:?}: {}",
            left.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `/proc/PID/status` field in KiB (VmRSS:, VmHWM:).
pub fn status_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
