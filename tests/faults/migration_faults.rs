//! Scenario 1: faults during a long upgrade (a table rebuild over many rows, see
//! `silica_cron_tests::upgrade`). kill -9 at random instants, one-shot and through the daemon;
//! and I/O errors injected with strace into the Nth write, fsync or truncate of an upgrade, for
//! a sweep of N, with EIO and ENOSPC: one-shot (1c), and in a running daemon serving a client's
//! upgrade (1e, strace attached to it). Every time: the command fails with a clear error or
//! succeeds, the database is intact and at one revision whose schema matches it, never between
//! two (DESIGN §3), and the next `migrate upgrade` reaches head; the daemon stays up. Last, a
//! daemon whose writes fail while a run ends (strace attached to it) must stay up and log it.
//!
//! Iterations: 5 one-shot kills and 10 daemon kills, 6 points of the one-shot's pwrite64 sweep
//! and 3 of the daemon's (20, 50, 40 and 20 with `SILICA_CRON_FAULTS_LONG=1`); every call of the
//! rarer syscalls.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use silica_cron_tests::client::{assert_serving, wait_until};
use silica_cron_tests::jobs::{config, rows, script};
use silica_cron_tests::report::Scenario;
use silica_cron_tests::upgrade::{fingerprint, sqlite, wait_bounded, Fixture, LONG, NEW, OLD};
use silica_cron_tests::{run, sibling, Out};

use crate::common::{cli, iterations, started_id, Rng};

/// Rows for the I/O sweep: enough for thousands of writes, short enough to run it many times.
const SWEEP_ROWS: u32 = 20_000;

/// The syscalls SQLite writes the database, its WAL and its temp files with (`strace -f -c` of
/// an upgrade: pwrite64 for pages, fsync for the WAL, the database and its directory, ftruncate
/// for the shm and the checkpointed database, write for the lock file); fdatasync is listed in
/// case the build uses it.
const WRITE_CALLS: &[&str] = &["pwrite64", "write", "fsync", "fdatasync", "ftruncate"];

fn seed(scenario: u64, i: u32) -> u64 {
    (scenario << 32) ^ u64::from(i)
}

/// Where the kill left the database, and how long the next run took to reach head.
#[derive(Default)]
struct Tally {
    at_old: u32,
    at_new: u32,
    finished_before_kill: u32,
}

impl Tally {
    fn add(&mut self, rev: &str) {
        if rev == NEW {
            self.at_new += 1;
        } else {
            self.at_old += 1;
        }
    }
}

/// One-shot: `silica-cron migrate upgrade` execs silica-crond (no daemon runs), which is killed.
#[test]
fn kill_one_shot_upgrade_at_random_instants() {
    let mut sc = Scenario::start("1a", "kill -9 of a one-shot upgrade at random instants");
    let fx = Fixture::new(LONG);
    // The revision's downgrade is its inverse. A renamed table's stored DDL names it quoted,
    // which the sqlite3 shell prints as `CREATE TABLE IF NOT EXISTS "t"`: compare without that.
    fx.cli(&["migrate", "downgrade", "-1"]).ok();
    let unquoted = |s: &str| {
        s.replace("CREATE TABLE IF NOT EXISTS ", "CREATE TABLE ")
            .replace('"', "")
    };
    assert_eq!(
        unquoted(&sqlite(&fx.db(), ".schema").stdout),
        unquoted(&fx.schema_old)
    );
    assert_eq!(fingerprint(&fx.db()), fx.fingerprint);

    let n = iterations(5, 20);
    sc.tried(format!(
        "{n} kills within {:?} of a one-shot upgrade over {LONG} rows (uninterrupted: {:?})",
        fx.window(),
        fx.full_upgrade
    ));
    let mut tally = Tally::default();
    for i in 0..n {
        fx.reset();
        let delay = Rng::new(seed(1, i)).delay(fx.window());
        let mut child = fx.spawn_upgrade("one-shot.log");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        let status = wait_bounded(&mut child, Duration::from_secs(10), "killed silica-crond");
        if status.signal() != Some(libc::SIGKILL) {
            assert_eq!(
                status.code(),
                Some(0),
                "iteration {i}: the upgrade failed by itself:\n{}",
                std::fs::read_to_string(fx.env.path().join("one-shot.log")).unwrap_or_default()
            );
            tally.finished_before_kill += 1;
        }
        let rev = fx.check_database();
        let t0 = Instant::now();
        fx.cli(&["migrate", "upgrade"]).ok();
        sc.recovery(t0.elapsed());
        fx.check_finished();
        tally.add(rev);
        sc.iteration();
    }
    assert_eq!(tally.at_old + tally.at_new, n);
    sc.held(format!(
        "ended at {OLD}: {}, at {NEW}: {} ({} finished before the kill), schema and rows intact each time; the next upgrade reached head",
        tally.at_old, tally.at_new, tally.finished_before_kill
    ));
    sc.pass();
}

/// Daemon: the upgrade is requested through the socket and the daemon is killed; the next
/// daemon start handles the stale socket and the lock file, and finishes the upgrade.
#[test]
fn kill_daemon_during_upgrade_at_random_instants() {
    let mut sc = Scenario::start("1b", "kill -9 of the daemon during an upgrade");
    let fx = Fixture::new(LONG);
    let daemon_args = ["--migrations-dir", fx.migrations.as_str()];
    let lock = sibling(&fx.db(), ".lock");
    let n = iterations(10, 50);
    sc.tried(format!(
        "{n} kills of the daemon within {:?} of an upgrade over {LONG} rows requested by a client",
        fx.window()
    ));
    let mut tally = Tally::default();
    for i in 0..n {
        fx.reset();
        let d = fx.env.start_daemon(&daemon_args);
        let delay = Rng::new(seed(2, i)).delay(fx.window());
        let mut client = fx.spawn_upgrade("client.log");
        std::thread::sleep(delay);
        d.kill9();
        assert!(fx.env.socket().exists(), "kill -9 leaves the socket file");
        // The client sees the connection drop (or, if it connects only after the kill, falls
        // back to a one-shot run that finishes the upgrade): wait for it either way, so that
        // nothing has the database open during the checks.
        let status = wait_bounded(&mut client, Duration::from_secs(30), "silica-cron client");
        if status.success() {
            tally.finished_before_kill += 1;
        }
        let rev = fx.check_database();

        let t0 = Instant::now();
        let d2 = fx.env.start_daemon(&daemon_args);
        fx.cli(&["migrate", "upgrade"]).ok();
        sc.recovery(t0.elapsed());
        assert!(
            d2.log()
                .contains("removing stale socket file left by a previous run"),
            "{}",
            d2.log()
        );
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap().trim(),
            format!("{} daemon", d2.pid()),
            "the new daemon holds the lock"
        );
        fx.check_finished();
        fx.cli(&["status"])
            .ok()
            .stdout_has("schema:      up to date");
        assert_eq!(d2.stop(), 0, "daemon did not stop cleanly");
        tally.add(rev);
        sc.iteration();
    }
    assert_eq!(tally.at_old + tally.at_new, n);
    sc.held(format!(
        "ended at {OLD}: {}, at {NEW}: {} (the client exited 0: {}), schema and rows intact; the restarted daemon replaced the stale socket, took the lock and reached head",
        tally.at_old, tally.at_new, tally.finished_before_kill
    ));
    sc.pass();
}

/// `silica-cron ARGS` under strace (following the exec of silica-crond), its trace in `log`.
fn under_strace(fx: &Fixture, strace: &[&str], log: &Path, args: &[&str]) -> Out {
    let log = log.display().to_string();
    let mut wrapper = vec!["strace", "-f", "-qq", "-o", log.as_str()];
    wrapper.extend_from_slice(strace);
    run(fx
        .env
        .command_under(&wrapper, "silica-cron")
        .args(["--migrations-dir", &fx.migrations])
        .args(args))
}

/// strace attached to a running process (`-f -p PID`), writing its trace to a file.
struct Attached {
    strace: std::process::Child,
    log: PathBuf,
}

impl Attached {
    /// Returns once every thread of `pid` is traced: calls made after it cannot escape.
    fn to(pid: i32, args: &[&str], log: &Path) -> Attached {
        let strace = Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(log)
            .args(args)
            .args(["-p", &pid.to_string()])
            .spawn()
            .expect("strace");
        let tracer = format!("TracerPid:\t{}\n", strace.id());
        let attached = Attached {
            strace,
            log: log.to_owned(),
        };
        wait_until(
            Duration::from_secs(10),
            "strace to attach to every thread",
            || {
                std::fs::read_dir(format!("/proc/{pid}/task"))
                    .unwrap()
                    .all(|t| {
                        std::fs::read_to_string(t.unwrap().path().join("status"))
                            .is_ok_and(|s| s.contains(&tracer))
                    })
            },
        );
        attached
    }

    /// Detaches (strace lets its tracees go on SIGINT) and returns the trace.
    fn detach(mut self) -> String {
        self.stop();
        std::fs::read_to_string(&self.log).unwrap()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.strace.try_wait() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(self.strace.id() as i32, libc::SIGINT) };
            wait_bounded(&mut self.strace, Duration::from_secs(10), "strace");
        }
    }
}

impl Drop for Attached {
    /// A failed check must not leave the daemon traced (and failing its writes).
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many times an uninterrupted upgrade makes each of [`WRITE_CALLS`] (`strace -c`).
fn count_calls(fx: &Fixture) -> Vec<(&'static str, u64)> {
    fx.reset();
    let log = fx.env.path().join("count.strace");
    let trace = format!("trace={}", WRITE_CALLS.join(","));
    under_strace(fx, &["-c", "-e", &trace], &log, &["migrate", "upgrade"]).ok();
    let table = std::fs::read_to_string(&log).unwrap();
    WRITE_CALLS
        .iter()
        .map(|&name| {
            let calls = table
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|cols| cols.len() >= 5 && cols.last() == Some(&name))
                .map_or(0, |cols| cols[3].parse().unwrap());
            (name, calls)
        })
        .collect()
}

fn need_strace() {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is needed (apt-get install strace; .ci/run installs it)"
    );
}

/// The Ns to fail: every call when there are few, else `points` spread over 1..=calls.
fn sweep(calls: u64, points: u64) -> Vec<u64> {
    if calls <= points {
        return (1..=calls).collect();
    }
    (0..points)
        .map(|j| 1 + j * (calls - 1) / (points - 1))
        .collect()
}

fn db_revision(db: &Path) -> String {
    sqlite(db, "SELECT version_num FROM cron_alembic_version;")
        .stdout
        .trim()
        .to_string()
}

#[test]
fn io_errors_during_one_shot_upgrade() {
    let mut sc = Scenario::start(
        "1c",
        "I/O errors (EIO, ENOSPC) injected into a one-shot upgrade",
    );
    need_strace();
    let fx = Fixture::new(SWEEP_ROWS);
    let counts = count_calls(&fx);
    let points = u64::from(iterations(6, 40));
    let db = fx.db();
    let log = fx.env.path().join("inject.strace");
    let (mut failed, mut succeeded) = (0, 0);
    let mut swept = Vec::new();
    for &(name, calls) in &counts {
        if calls == 0 {
            continue;
        }
        let ns = sweep(calls, points);
        swept.push(format!("{name} N={}..{calls} ({} points)", ns[0], ns.len()));
        // EIO once at the Nth call; ENOSPC from the Nth call on (a disk that stays full).
        let faults: &[(&str, &str)] = match name {
            "fsync" | "fdatasync" => &[("EIO", "")],
            _ => &[("EIO", ""), ("ENOSPC", "+")],
        };
        for n in ns {
            for (errno, from_on) in faults {
                let what = format!("{name} {errno} at call {n}{from_on}");
                fx.reset();
                let inject = format!("inject={name}:error={errno}:when={n}{from_on}");
                let trace = format!("trace={name}");
                let out = under_strace(
                    &fx,
                    &["-e", &trace, "-e", &inject],
                    &log,
                    &["migrate", "upgrade"],
                );
                let traced = std::fs::read_to_string(&log).unwrap();
                assert!(traced.contains("(INJECTED)"), "{what}: nothing injected");
                assert!(
                    !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
                    "{what}: a panic:\n{out}"
                );
                let rev = fx.check_database();
                match out.code {
                    0 => {
                        assert_eq!(rev, NEW, "{what}: exit 0 but the database is at {rev}");
                        succeeded += 1;
                    }
                    1 => {
                        // Every write from the Nth on failing takes stderr too: then the
                        // exit code is all that can tell (and it must, without a panic).
                        let stderr = out.stderr.as_str();
                        let mute = name == "write" && !from_on.is_empty();
                        assert!(
                            mute || stderr.contains("FAILED: ")
                                && (stderr.contains(NEW)
                                    || stderr.contains(&db.display().to_string())),
                            "{what}: the error names neither the revision nor the database:\n{out}"
                        );
                        assert_eq!(
                            rev, OLD,
                            "{what}: the upgrade failed but the database is at {rev}:\n{out}"
                        );
                        failed += 1;
                    }
                    code => panic!("{what}: exit {code}:\n{out}"),
                }
                assert_eq!(db_revision(&db), rev);
                let t0 = Instant::now();
                fx.cli(&["migrate", "upgrade"]).ok();
                sc.recovery(t0.elapsed());
                fx.check_finished();
                sc.iteration();
            }
        }
    }
    sc.tried(format!(
        "strace -e inject over an upgrade of {SWEEP_ROWS} rows: {}",
        swept.join(", ")
    ));
    sc.held(format!(
        "{failed} failed cleanly (exit 1, FAILED naming the revision or the database, still at {OLD}), {succeeded} succeeded (at {NEW}); never a panic; integrity_check ok, schema matching the revision, rows intact; the next upgrade reached head"
    ));
    sc.pass();
}

/// A daemon whose database writes fail (EIO on every pwrite64 and fsync, strace attached to
/// it) while a run ends: it stays up, says so in its log, and records runs again once the
/// writes work.
#[test]
fn a_failed_write_while_recording_a_run() {
    let mut sc = Scenario::start("1d", "EIO on the daemon's writes while a run ends");
    let env = silica_cron_tests::Env::built_in();
    let agent = script(
        &env,
        "agent.sh",
        r#"case "$1" in
  slow) here="$(dirname "$0")"; touch "$here/slow.started"
        while [ ! -e "$here/slow.go" ]; do sleep 0.05; done; echo slow-done ;;
  *) echo "$1" ;;
esac"#,
    );
    let cfg = config(&env, &agent, "");
    let mut d = env.start_daemon(&["--config", &cfg]);
    for p in ["slow", "after"] {
        cli(&env, &cfg, &["prompts", "add", p, p]).ok();
    }
    let out = cli(&env, &cfg, &["prompts", "run", "slow"]);
    out.ok();
    let id = started_id(&out.stdout).unwrap();
    let log = env.path().join("daemon.strace");
    sc.tried("strace attached to the daemon, failing every pwrite64 and fsync with EIO while a run ends; detached 4 s later");
    // The run's start is recorded before strace attaches, and its end only after (the agent
    // ends when told to): however slow the machine, the end meets the failing writes.
    wait_until(Duration::from_secs(30), "the slow run to start", || {
        env.path().join("slow.started").exists()
    });
    let strace = Attached::to(
        d.pid(),
        &[
            "-e",
            "trace=pwrite64,fsync",
            "-e",
            "inject=pwrite64:error=EIO",
            "-e",
            "inject=fsync:error=EIO",
        ],
        &log,
    );
    std::fs::write(env.path().join("slow.go"), "").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let traced = strace.detach();
    assert!(traced.contains("(INJECTED)"), "nothing injected:\n{traced}");
    sc.iteration();
    let t0 = Instant::now();
    assert_serving(&env, &mut d);
    sc.recovery(t0.elapsed());
    let logged = format!("cannot record the end of a run yet; trying again execution={id}");
    assert!(d.log().contains(&logged), "{}", d.log());
    // The end is kept and written again once writes work: the row becomes `completed`.
    wait_until(
        Duration::from_secs(30),
        "the end held back by the I/O errors to be recorded",
        || {
            rows(
                &env,
                &format!("SELECT status FROM job_executions WHERE id = {id};"),
            ) == "completed"
        },
    );
    let after = cli(&env, &cfg, &["prompts", "run", "after", "--wait"]);
    after.ok();
    let next = started_id(&after.stdout).unwrap();
    assert_eq!(
        rows(
            &env,
            &format!("SELECT status FROM job_executions WHERE id = {next};")
        ),
        "completed"
    );
    sc.held(format!(
        "the daemon stayed up and served; its log says `{logged}` with the disk I/O error; once strace detached, the held-back end was written (`completed`); the next run was recorded `completed`"
    ));
    sc.pass();
}

/// Neither the client nor the daemon panicked.
#[track_caller]
fn no_panic(what: &str, out: &Out, daemon_log: &str) {
    for text in [out.stderr.as_str(), daemon_log] {
        assert!(
            !text.contains("panicked") && !text.contains("stack backtrace"),
            "{what}: a panic:\n{out}\n{daemon_log}"
        );
    }
}

/// How many times the busiest thread of the daemon makes each of [`WRITE_CALLS`] while it
/// serves an upgrade (strace counts calls per thread for `when=N`; the upgrade runs on the
/// connection's thread), and how many writes go to `log` (the daemon's own log file).
fn count_daemon_calls(fx: &Fixture, daemon_args: &[&str]) -> (Vec<(&'static str, u64)>, u64) {
    fx.reset();
    let d = fx.env.start_daemon(daemon_args);
    let log = fx.env.path().join("count.strace");
    let trace = format!("trace={}", WRITE_CALLS.join(","));
    let strace = Attached::to(d.pid(), &["-y", "-e", &trace], &log);
    fx.cli(&["migrate", "upgrade"]).ok();
    let traced = strace.detach();
    let daemon_log = format!("<{}>", d.log_path().display());
    assert_eq!(d.stop(), 0);
    // `TID name(fd<path>, ...` (a call strace saw start; its end may be a separate line).
    let calls = |name: &str, only: Option<&str>| {
        let mut per_thread = std::collections::HashMap::<&str, u64>::new();
        for line in traced.lines() {
            let Some((tid, call)) = line.split_once(' ') else {
                continue;
            };
            let call = call.trim_start();
            if call.starts_with(&format!("{name}(")) && only.is_none_or(|p| call.contains(p)) {
                *per_thread.entry(tid).or_default() += 1;
            }
        }
        per_thread.into_values().max().unwrap_or(0)
    };
    let counts = WRITE_CALLS.iter().map(|&n| (n, calls(n, None))).collect();
    (counts, calls("write", Some(&daemon_log)))
}

/// 1c through a running daemon: strace attached to it fails the Nth call of one syscall while
/// a client's `migrate upgrade` runs in it. The daemon's own writes are its log's (and tokio's
/// eventfd wake-ups, which cannot fail with EIO): `write` is failed on the log file only.
#[test]
fn io_errors_during_upgrade_through_daemon() {
    let mut sc = Scenario::start(
        "1e",
        "I/O errors (EIO, ENOSPC) injected into a daemon during an upgrade a client requested",
    );
    need_strace();
    let fx = Fixture::new(SWEEP_ROWS);
    let daemon_args = ["--migrations-dir", fx.migrations.as_str()];
    // Paused: the fixture's minutely job must not add runs (the checks count rows) once at head.
    std::fs::write(sibling(&fx.db(), ".paused"), "fault battery 1e\n").unwrap();
    let (counts, log_writes) = count_daemon_calls(&fx, &daemon_args);
    let points = u64::from(iterations(3, 20));
    let db = fx.db();
    let log = fx.env.path().join("inject.strace");
    let (mut failed, mut succeeded) = (0, 0);
    let mut commit_failures: Vec<(String, String)> = Vec::new();
    let mut swept = Vec::new();
    for &(name, calls) in &counts {
        let (calls, on_log) = if name == "write" {
            (log_writes, true)
        } else {
            (calls, false)
        };
        if calls == 0 {
            swept.push(format!("{name}: no call"));
            continue;
        }
        let ns = sweep(calls, points);
        swept.push(format!(
            "{name}{} N={}..{calls} ({} points)",
            if on_log { " (log)" } else { "" },
            ns[0],
            ns.len()
        ));
        let faults: &[(&str, &str)] = match name {
            "fsync" | "fdatasync" => &[("EIO", "")],
            _ => &[("EIO", ""), ("ENOSPC", "+")],
        };
        for n in ns {
            for (errno, from_on) in faults {
                let what = format!("daemon {name} {errno} at call {n}{from_on}");
                fx.reset();
                let mut d = fx.env.start_daemon(&daemon_args);
                let inject = format!("inject={name}:error={errno}:when={n}{from_on}");
                let trace = format!("trace={name}");
                let only_log = d.log_path().display().to_string();
                let mut args = vec!["-e", &trace, "-e", &inject];
                if on_log {
                    args.extend(["-P", &only_log]);
                }
                let strace = Attached::to(d.pid(), &args, &log);
                let out = fx.cli(&["migrate", "upgrade"]);
                let traced = strace.detach();
                assert!(traced.contains("(INJECTED)"), "{what}: nothing injected");
                no_panic(&what, &out, &d.log());
                // Up and answering, with the database as the failure left it.
                let t0 = Instant::now();
                assert_serving(&fx.env, &mut d);
                sc.recovery(t0.elapsed());
                let rev = fx.check_database();
                assert_eq!(db_revision(&db), rev);
                // A failed COMMIT's frames must not come back when the WAL is replayed.
                assert_eq!(
                    fx.revision_after_crash(),
                    rev,
                    "{what}: a crash now would leave another revision:\n{out}"
                );
                let failure = out.stderr.lines().find(|l| l.starts_with("FAILED: "));
                println!(
                    "[fault 1e]   {what}: exit {}, {}",
                    out.code,
                    failure.unwrap_or("-")
                );
                if out.code == 0 {
                    assert_eq!(rev, NEW, "{what}: exit 0 but the database is at {rev}");
                    succeeded += 1;
                } else {
                    assert_eq!(out.code, 1, "{what}: exit {}:\n{out}", out.code);
                    // A failed statement names the revision's file and line; the other
                    // failures of the step (BEGIN, COMMIT, the version rows) the database.
                    assert!(
                        out.stderr
                            .contains(&format!("FAILED: revision {NEW} failed at "))
                            || out
                                .stderr
                                .contains(&format!(" revision {NEW} (upgrade {OLD} -> {NEW}) "))
                                && out.stderr.contains(&db.display().to_string()),
                        "{what}: the error names not the revision and the file:\n{out}"
                    );
                    assert_eq!(
                        rev, OLD,
                        "{what}: the upgrade failed but the database is at {rev}:\n{out}"
                    );
                    if out.stderr.contains("cannot commit revision") {
                        commit_failures.push((what.clone(), out.stderr.clone()));
                    }
                    failed += 1;
                }
                // The same daemon, once strace let go, finishes the upgrade.
                fx.cli(&["migrate", "upgrade"]).ok();
                fx.check_finished();
                assert_eq!(d.stop(), 0, "{what}: the daemon did not stop cleanly");
                sc.iteration();
            }
        }
    }
    sc.tried(format!(
        "strace -p on the daemon, -e inject over an upgrade of {SWEEP_ROWS} rows a client requested: {}",
        swept.join(", ")
    ));
    // A failed COMMIT (every fsync is swept: one is the WAL's at the commit) names the
    // revision and the step, not only the file.
    let commit = format!(
        "FAILED: cannot commit revision {NEW} (upgrade {OLD} -> {NEW}) to {}: disk I/O error",
        db.display()
    );
    let full =
        format!("{commit}\nNothing of revision {NEW} was applied; the database stays at {OLD}.\n");
    assert!(
        commit_failures.iter().any(|(_, e)| e.contains(&full)),
        "no COMMIT failure said `{full}`: {commit_failures:#?}"
    );
    sc.held(format!(
        "{failed} failed cleanly (exit 1, FAILED naming the revision, and the file and line of a failed statement or the database, e.g. `{commit}`; still at {OLD}), {succeeded} succeeded (at {NEW}); never a panic; the daemon stayed up and answered status; integrity_check ok, schema matching the revision, rows intact; a crash image (database and WAL without the index) at the same revision; once strace detached the same daemon's next upgrade reached head"
    ));
    sc.pass();
}
