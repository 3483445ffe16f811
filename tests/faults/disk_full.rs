//! Scenario 4: the disk full. The database and the runs' workdirs (TMPDIR) are on a 16 MiB ext4
//! loop device (1 KiB blocks), filled to the last block while runs write files and output and
//! while `migrate downgrade` runs through the daemon and one-shot; then the daemon is restarted
//! on a disk with only a few KiB left, several times, and started with a fresh WAL index (no
//! `-shm` file) with 0-40 KiB left, where SQLite without the daemon's reservation dies of
//! SIGBUS (see README, "The WAL index on a full disk"). Every failure must say the disk is
//! full, the daemon must stay up and answer status (or refuse to start saying the disk is
//! full), the database stays at a revision with integrity ok; once the filler is deleted runs
//! fire again and every row committed before is still there.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use silica_cron_tests::client::{assert_serving, finish, wait_until};
use silica_cron_tests::jobs::{config, rows, script, wait_for};
use silica_cron_tests::report::Scenario;
use silica_cron_tests::{Daemon, Env, Out};

use crate::common::{cli, iterations, started_id};
use crate::loopdisk::LoopDisk;

const HEAD: &str = "57249ff23536";
const BELOW_HEAD: &str = "34065a4cc718";

/// Every row that exists now, as text, for comparing later.
fn committed(env: &Env) -> Vec<String> {
    rows(
        env,
        "SELECT 'prompt|' || id || '|' || name || '|' || prompt_text FROM prompts
         UNION ALL SELECT 'job|' || id || '|' || name || '|' || cron_expression FROM scheduled_jobs
         UNION ALL SELECT 'exec|' || id || '|' || status || '|' || coalesce(output, '') FROM job_executions
           WHERE status NOT IN ('pending', 'running') ORDER BY 1;",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A failure must name the full disk.
#[track_caller]
fn says_full(out: &Out) {
    let e = out.stderr.to_lowercase();
    assert!(
        e.contains("full") || e.contains("no space"),
        "a failure on a full disk that does not say so:\n{out}"
    );
}

/// Starts on a nearly full disk after a clean stop, so with no `-shm` file: SQLite creates a
/// fresh WAL index at the first read, growing it by one byte per 4 KiB page, which leaves
/// holes of three 1 KiB blocks in each page. With a few KiB left the stock SQLite dies of
/// SIGBUS there (at 9 KiB on this disk, before the daemon reserved the index's blocks). Each
/// start must serve, or refuse to start saying the disk is full; never die of a signal.
fn fresh_index_starts(env: &Env, cfg: &str, disk: &LoopDisk, sc: &mut Scenario) -> Daemon {
    let args = ["--config", cfg];
    let leaves: Vec<u64> = (0..=iterations(40, 64) as u64).collect();
    sc.tried(format!(
        "starts with no -shm file (after a clean stop with space) and {}-{} KiB left, a prompts add after each",
        leaves[0],
        leaves[leaves.len() - 1]
    ));
    let shm = disk.mount.join("silica-cron.db-shm");
    let (mut served, mut refused) = (0, 0);
    let (mut died, mut unclear) = (Vec::new(), Vec::new());
    for leave in &leaves {
        disk.free();
        // The last connection's close checkpoints and deletes the -wal and -shm files.
        let code = env.start_daemon(&args).stop();
        assert_eq!(code, 0);
        assert!(!shm.exists(), "{} left after a clean stop", shm.display());
        disk.fill(*leave);
        let mut daemon = env.spawn_daemon(&args);
        match listening_or_exit(env, &mut daemon) {
            None => {
                let out = cli(env, cfg, &["prompts", "add", &format!("fresh{leave}"), "x"]);
                if out.code != 0 {
                    // A daemon that died meanwhile answered "closed the connection": reap it.
                    let _ = daemon.wait(Duration::from_secs(1));
                }
                if let Ok(Some(status)) = daemon.child.try_wait() {
                    died.push(format!("{leave} KiB: listened, then {}", how(status)));
                    continue;
                }
                if out.code != 0 {
                    says_full(&out);
                }
                alive(env, &mut daemon);
                served += 1;
            }
            Some(status) if status.signal().is_some() => {
                died.push(format!("{leave} KiB: {}", how(status)));
            }
            Some(status) => {
                let log = daemon.log();
                let lower = log.to_lowercase();
                if lower.contains("full") || lower.contains("no space") {
                    refused += 1;
                } else {
                    let last = log.lines().last().unwrap_or_default().to_string();
                    unclear.push(format!("{leave} KiB: {status}, {last}"));
                }
            }
        }
        sc.iteration();
    }
    // Every start is tried before judging, so that a failure lists them all.
    assert!(
        died.is_empty() && unclear.is_empty(),
        "on a fresh WAL index the daemon died of a signal: {died:#?}\nor exited without saying the disk is full: {unclear:#?}"
    );
    assert!(served > 0, "no start served at all");
    sc.held(format!(
        "{} starts with a fresh WAL index: {served} served, {refused} refused to start saying the disk is full (too little room to reserve the index's 32 KiB), none died of a signal",
        leaves.len()
    ));
    disk.free();
    env.start_daemon(&args)
}

/// None once the daemon listens, or how it exited before that.
fn listening_or_exit(env: &Env, d: &mut Daemon) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = d.child.try_wait() {
            return Some(status);
        }
        if std::os::unix::net::UnixStream::connect(env.socket()).is_ok() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon neither listened nor exited:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn how(status: ExitStatus) -> String {
    match status.signal() {
        Some(libc::SIGBUS) => "killed by SIGBUS".into(),
        Some(sig) => format!("killed by signal {sig}"),
        None => status.to_string(),
    }
}

fn integrity(env: &Env) -> String {
    rows(env, "PRAGMA integrity_check;")
}

/// The daemon is alive (not killed by SIGBUS or anything else) and answers status.
#[track_caller]
fn alive(env: &Env, d: &mut Daemon) {
    if let Ok(Some(status)) = d.child.try_wait() {
        panic!("the daemon died on the full disk: {status}\n{}", d.log());
    }
    assert_serving(env, d);
}

#[test]
fn disk_full() {
    let mut sc = Scenario::start("4", "disk full (ext4 loop device, 1 KiB blocks)");
    let mut env = Env::built_in();
    let disk = match LoopDisk::new(env.path(), 16) {
        Ok(d) => d,
        Err(why) => {
            println!("[fault 4]   SKIPPED: {why}");
            sc.skip(why);
            return;
        }
    };
    // The database lives on the small disk (SQLite follows the link: -wal and -shm are there too).
    std::os::unix::fs::symlink(disk.mount.join("silica-cron.db"), env.db()).unwrap();
    let tmp = disk.mount.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    env.set_var("TMPDIR", tmp.to_str().unwrap());
    let agent = script(
        &env,
        "agent.sh",
        r#"case "$1" in
  write) echo "writing into the workdir"
         if head -c 1000000 /dev/zero > "$3/out.bin"; then echo wrote; else echo "the write failed" >&2; exit 7; fi ;;
  slow) touch "$(dirname "$0")/slow.started"; sleep 3; echo "slow done"; touch "$(dirname "$0")/slow.done" ;;
  *) echo "$1" ;;
esac"#,
    );
    let cfg = config(&env, &agent, "");
    let args = ["--config", cfg.as_str()];
    let mut d = env.start_daemon(&args);

    // What is committed before the disk fills.
    for i in 0..40 {
        cli(
            &env,
            &cfg,
            &["prompts", "add", &format!("p{i}"), &format!("text {i}")],
        )
        .ok();
    }
    cli(&env, &cfg, &["prompts", "add", "write", "write"]).ok();
    cli(&env, &cfg, &["prompts", "add", "slow", "slow"]).ok();
    for _ in 0..3 {
        cli(&env, &cfg, &["prompts", "run", "write", "--wait"]).ok();
    }
    cli(
        &env,
        &cfg,
        &[
            "jobs",
            "add",
            "tick",
            "--prompt",
            "write",
            "--cron",
            "* * * * *",
        ],
    )
    .ok();
    let before = committed(&env);
    assert!(before.len() >= 45, "{before:?}");

    // (a) Runs that write output, and requests, on a full disk.
    sc.tried(
        "filled to the last block; 3 runs writing 1 MB into their workdirs, 3 prompts add, status",
    );
    disk.fill(0);
    let mut started = Vec::new();
    let mut refused = 0;
    for _ in 0..3 {
        let out = cli(&env, &cfg, &["prompts", "run", "write"]);
        match started_id(&out.stdout) {
            Some(id) if out.code == 0 => started.push(id),
            _ => {
                says_full(&out);
                refused += 1;
            }
        }
    }
    let (mut added, mut add_refused) = (0, 0);
    for i in 0..3 {
        let name = format!("full{i}");
        let out = cli(&env, &cfg, &["prompts", "add", &name, "x"]);
        if out.code == 0 {
            added += 1;
        } else {
            says_full(&out);
            add_refused += 1;
            assert_eq!(
                rows(
                    &env,
                    &format!("SELECT count(*) FROM prompts WHERE name = '{name}';")
                ),
                "0"
            );
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    alive(&env, &mut d);
    sc.iterations(7);
    sc.held(format!(
        "on the full disk: runs {} started, {refused} refused saying the disk is full; prompts add {added} stored, {add_refused} refused saying so and absent; status answered",
        started.len()
    ));

    // (b) Migrations on the full disk, through the daemon and one-shot.
    sc.tried("migrate downgrade -1 through the daemon and one-shot, upgrade one-shot, restart, all on the full disk");
    let through_daemon = cli(&env, &cfg, &["migrate", "downgrade", "-1"]);
    d.stop();
    let mut migrate_notes = Vec::new();
    for (how, out) in [
        ("downgrade through the daemon", through_daemon),
        (
            "downgrade one-shot",
            env.crond(&["--config", &cfg, "migrate", "downgrade", "-1"]),
        ),
        (
            "upgrade one-shot",
            env.crond(&["--config", &cfg, "migrate", "upgrade"]),
        ),
    ] {
        if out.code != 0 {
            says_full(&out);
            assert!(
                out.stderr.contains(HEAD) || out.stderr.contains(BELOW_HEAD),
                "the failure names no revision:\n{out}"
            );
        }
        migrate_notes.push(format!("{how}: exit {}", out.code));
        assert_eq!(integrity(&env), "ok");
        let current = env.crond(&["--config", &cfg, "migrate", "current"]);
        assert!(
            current.stdout.contains(HEAD) || current.stdout.contains(BELOW_HEAD),
            "not at a revision after {how}:\n{current}"
        );
        sc.iteration();
    }
    sc.held(format!(
        "{}; each failure said the disk is full and named the revision; the database at a revision, integrity ok",
        migrate_notes.join(", ")
    ));

    // A restart on an (almost) full disk: a fresh WAL index must be allocated.
    let leaves: Vec<u64> = (0..iterations(12, 30) as u64).map(|i| i * 3).collect();
    sc.tried(format!(
        "daemon restarts with {leaves:?} KiB left on the disk, a prompts add after each"
    ));
    let mut d = None;
    for leave in &leaves {
        drop(d.take());
        disk.free();
        disk.fill(*leave);
        let mut daemon = env.start_daemon(&args);
        let out = cli(
            &env,
            &cfg,
            &["prompts", "add", &format!("left{leave}"), "x"],
        );
        if out.code != 0 {
            says_full(&out);
        }
        alive(&env, &mut daemon);
        assert_eq!(integrity(&env), "ok");
        d = Some(daemon);
        sc.iteration();
    }
    sc.held(format!(
        "{} restarts on a nearly full disk: the daemon served every time, no SIGBUS",
        leaves.len()
    ));
    drop(d);

    let mut d = fresh_index_starts(&env, &cfg, &disk, &mut sc);

    // A run that ends while the disk is full: its end cannot be written then, and must be
    // written once there is space again, not left `running`.
    sc.tried(
        "a run started with space, the disk filled while it ran, its end due on the full disk",
    );
    disk.free();
    let marker = env.path().join("slow.done");
    let out = cli(&env, &cfg, &["prompts", "run", "slow"]);
    out.ok();
    let slow = started_id(&out.stdout).expect("the slow run's id");
    // The reply comes once the run is recorded; its workdir (on the small disk) and process
    // come just after, and must exist before the disk fills.
    let row = |env: &Env| {
        rows(
            env,
            &format!("SELECT status || ' ' || coalesce(error_message, '') FROM job_executions WHERE id = {slow};"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.path().join("slow.started").exists() {
        let now = row(&env);
        assert!(
            Instant::now() < deadline,
            "the slow run did not start within 60 s: {now}\n{}",
            d.log()
        );
        assert!(
            now.starts_with("pending") || now.starts_with("running"),
            "the slow run ended without starting its agent: {now}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    disk.fill(0);
    wait_until(Duration::from_secs(30), "the slow run to end", || {
        marker.exists()
    });
    std::thread::sleep(Duration::from_secs(1));
    let slow_status = |env: &Env| {
        rows(
            env,
            &format!("SELECT status || ' ' || coalesce(output, '') FROM job_executions WHERE id = {slow};"),
        )
    };
    let on_full_disk = slow_status(&env);
    sc.iteration();

    // (c) Space back.
    disk.free();
    let freed = Instant::now();
    let run = env
        .command("silica-cron")
        .args(["--config", &cfg, "prompts", "run", "write", "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(run, Duration::from_secs(60)).ok();
    cli(&env, &cfg, &["prompts", "add", "after", "x"]).ok();
    let recovered = freed.elapsed();
    sc.recovery(recovered);
    for id in &started {
        wait_until(
            Duration::from_secs(30),
            "a run started on the full disk to be recorded ended",
            || {
                !matches!(
                    rows(
                        &env,
                        &format!("SELECT status FROM job_executions WHERE id = {id};")
                    )
                    .as_str(),
                    "pending" | "running"
                )
            },
        );
    }
    wait_until(
        Duration::from_secs(30),
        "the end of the run that ended on the full disk to be recorded",
        || slow_status(&env).starts_with("completed"),
    );
    assert!(
        slow_status(&env).contains("slow done"),
        "{}",
        slow_status(&env)
    );
    sc.held(format!(
        "the run that ended on the full disk: {} then, recorded completed with its output once there was space",
        if on_full_disk.starts_with("running") { "its end held back (still running)" } else { "its end written all the same" }
    ));
    let since = rows(&env, "SELECT strftime('%Y-%m-%d %H:%M:%S', 'now');");
    wait_for(
        &env,
        &format!(
            "SELECT count(*) > 0 FROM job_executions WHERE trigger_kind = 'schedule' AND status = 'completed' AND scheduled_for >= '{since}';"
        ),
        "1",
        Duration::from_secs(90),
    );
    alive(&env, &mut d);
    sc.held(format!(
        "space back: a run completed and a prompt was added within {:.1} s, the runs started on the full disk recorded ended, the minutely job fired again",
        recovered.as_secs_f64()
    ));

    // (d) Nothing committed before was lost.
    let after = committed(&env);
    let lost: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
    assert!(lost.is_empty(), "rows lost: {lost:?}");
    assert_eq!(integrity(&env), "ok");
    sc.held(format!(
        "all {} rows committed before the disk filled still there, unchanged; integrity ok",
        before.len()
    ));
    drop(d);
    sc.pass();
}
