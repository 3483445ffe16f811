//! `silica-cron logs` and the details of `silica-cron status`, with the real daemon and real
//! job processes (a fake agent script as the configured runner).

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use silica_cron_tests::client::wait_until;
use silica_cron_tests::jobs::script;
use silica_cron_tests::{Daemon, Env};

/// A config whose runner is `agent PROMPT`.
fn config(env: &Env, agent: &str) -> String {
    let p = env.path().join("config.toml");
    std::fs::write(
        &p,
        format!("runner = [\"{agent}\", \"{{prompt}}\"]\nkill_grace = 1\n"),
    )
    .unwrap();
    p.display().to_string()
}

struct Setup {
    env: Env,
    cfg: String,
    daemon: Daemon,
}

impl Setup {
    /// A daemon whose agent runs `body` (the prompt text is `$1`).
    fn new(body: &str) -> Setup {
        let env = Env::built_in();
        let agent = script(&env, "agent.sh", body);
        let cfg = config(&env, &agent);
        let daemon = env.start_daemon(&["--config", &cfg]);
        Setup { env, cfg, daemon }
    }

    fn cli(&self, args: &[&str]) -> silica_cron_tests::Out {
        let mut a = vec!["--config", self.cfg.as_str()];
        a.extend_from_slice(args);
        self.env.cli(&a)
    }

    /// `silica-cron ARGS` running on, its stdout lines arriving on the receiver.
    fn spawn(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self.spawn_unread(args);
        let rx = read_lines(&mut child);
        (child, rx)
    }

    /// `silica-cron ARGS` running on, its stdout a pipe that nobody reads yet.
    fn spawn_unread(&self, args: &[&str]) -> Child {
        self.env
            .command("silica-cron")
            .arg("--config")
            .arg(&self.cfg)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Threads of the daemon that serve a control connection.
    fn control_threads(&self) -> usize {
        let dir = format!("/proc/{}/task", self.daemon.pid());
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "control")
            })
            .count()
    }

    fn wait_control_threads(&self, want: usize) {
        wait_until(Duration::from_secs(10), "control connections", || {
            self.control_threads() == want
        });
    }

    fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        out.ok();
        serde_json::from_str(&out.stdout).unwrap()
    }
}

/// From now on, `child`'s stdout lines arrive on the receiver.
fn read_lines(child: &mut Child) -> mpsc::Receiver<String> {
    lines_of(BufReader::new(child.stdout.take().unwrap()))
}

fn lines_of(out: BufReader<ChildStdout>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Lines from `rx` until one contains `needle` (returned with those before it).
#[track_caller]
fn expect_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let found = l.contains(needle);
                seen.push(l);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!("no line with {needle:?} within {limit:?} ({e}); saw {seen:#?}"),
        }
    }
}

#[test]
fn recent_lines_by_count_level_job_and_execution() {
    let s = Setup::new("echo \"hello $1\"; echo 'to stderr' >&2");
    s.cli(&["prompts", "add", "p", "world"]).ok();
    s.cli(&[
        "jobs",
        "add",
        "nightly",
        "--prompt",
        "p",
        "--cron",
        "0 3 * * *",
    ])
    .ok();
    s.cli(&["jobs", "run", "nightly", "--wait"]).ok();
    // A warning: SIGHUP with a broken file (the client would refuse the file itself).
    let good = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(&s.cfg, "runner = 7\n").unwrap();
    s.daemon.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload to fail", || {
        s.daemon.log().contains("configuration not reloaded")
    });
    std::fs::write(&s.cfg, good).unwrap();

    let all = s.cli(&["logs"]);
    all.ok()
        .stdout_has(" INFO silica-crond ")
        .stdout_has(" INFO run started execution=1 job=nightly")
        .stdout_has(" WARN configuration not reloaded");
    // `<UTC time> <LEVEL> <message> <fields>`, as in the log files.
    assert!(
        all.lines().iter().all(|l| l
            .split(' ')
            .next()
            .is_some_and(|t| t.len() == 27 && t.ends_with('Z'))),
        "{all}"
    );
    assert_eq!(s.cli(&["logs", "-n", "2"]).ok().lines().len(), 2);

    let warn = s.cli(&["logs", "--level", "warn"]);
    warn.ok().stdout_has("configuration not reloaded");
    assert!(
        warn.lines()
            .iter()
            .all(|l| l.contains(" WARN ") || l.contains(" ERROR ")),
        "{warn}"
    );

    for key in ["nightly", "1"] {
        let job = s.cli(&["logs", "--job", key]);
        job.ok()
            .stdout_has("run started")
            .stdout_has("run finished");
        assert!(
            job.lines().iter().all(|l| l.contains("job=nightly")),
            "{job}"
        );
    }
    s.cli(&["logs", "--job", "nope"])
        .code(1)
        .stderr_has("no job named 'nope'");
    s.cli(&["logs", "--level", "loud"]).code(2);

    let json = s.cli(&["logs", "--json", "-n", "3", "--job", "nightly"]);
    json.ok();
    let lines: Vec<serde_json::Value> = json
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{json}");
    assert_eq!(lines[0]["job"], "nightly");
    assert_eq!(lines[0]["execution"], 1);
    assert_eq!(lines[0]["level"], "info");

    // An ended execution: its recorded output, stdout and stderr as the job wrote them.
    let recorded = s.cli(&["logs", "--execution", "1"]);
    recorded.ok().stderr_has("to stderr");
    assert_eq!(recorded.stdout, "hello world\n");
    s.cli(&["logs", "--execution", "99"])
        .code(1)
        .stderr_has("no execution with id 99");
}

#[test]
fn a_follower_sees_new_lines_and_live_output_and_ctrl_c_frees_it() {
    let s = Setup::new("for i in 1 2 3 4 5 6 7 8; do echo \"tick $i\"; sleep 0.3; done");
    s.cli(&["prompts", "add", "p", "x"]).ok();
    s.cli(&[
        "jobs",
        "add",
        "slow",
        "--prompt",
        "p",
        "--cron",
        "0 3 * * *",
    ])
    .ok();
    // The ring's last line shows that the follower is attached.
    let (mut follower, lines) = s.spawn(&["logs", "-f", "-n", "1"]);
    expect_line(&lines, " INFO ", Duration::from_secs(10));

    s.cli(&["reload"]).ok();
    expect_line(
        &lines,
        "INFO configuration reloaded",
        Duration::from_secs(10),
    );
    s.cli(&["jobs", "run", "slow"])
        .ok()
        .stdout_has("started execution 1");
    expect_line(
        &lines,
        "INFO run started execution=1 job=slow",
        Duration::from_secs(10),
    );
    expect_line(&lines, "OUT slow#1: tick 2", Duration::from_secs(10));

    // One execution, attached while it runs: its output, as written, until it ends.
    let t = Instant::now();
    let one = s.cli(&["logs", "-f", "--execution", "1"]);
    one.ok().stdout_has("tick 8\n");
    assert!(!one.stdout.contains("run started"), "{one}");
    assert!(t.elapsed() < Duration::from_secs(10));
    expect_line(
        &lines,
        "run finished execution=1 job=slow status=\"completed\"",
        Duration::from_secs(10),
    );
    let recorded = s.cli(&["logs", "--execution", "1"]);
    assert_eq!(
        recorded.ok().stdout,
        (1..=8).map(|i| format!("tick {i}\n")).collect::<String>()
    );

    // Ctrl-C: the client ends at once and quietly; the daemon frees the follower.
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(follower.id() as i32, libc::SIGINT) };
    let status = silica_cron_tests::upgrade::wait_bounded(
        &mut follower,
        Duration::from_secs(10),
        "the follower after SIGINT",
    );
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err, "");
    s.wait_control_threads(0);
    s.cli(&["status"]).ok();
}

/// A follower that does not read: the daemon neither waits for it nor stops answering others;
/// the lines it could not take are dropped and counted, and it is told the count.
#[test]
fn a_follower_that_never_reads_is_not_waited_for_and_hears_what_it_missed() {
    let s = Setup::new("seq 1 20000");
    s.cli(&["prompts", "add", "flood", "x"]).ok();
    let mut follower = s.spawn_unread(&["logs", "-f", "-n", "1"]);
    // One line read shows that the follower is attached; then nobody reads.
    let mut out = BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains(" INFO "), "{first}");
    // The client's stdout pipe, then its socket, then the daemon's queue for it fill up.
    s.cli(&["prompts", "run", "flood"]).ok();
    wait_until(Duration::from_secs(60), "the flood to end", || {
        // Other clients are answered meanwhile. No run left means its output was all offered.
        s.status()["running_count"] == 0
            && s.cli(&["executions", "show", "1", "--json"])
                .stdout
                .contains("\"completed\"")
    });
    let lines = lines_of(out);
    // Reloads until one is heard: one made while the follower still catches up is dropped too.
    let mut seen = Vec::new();
    let mut reloads = 0;
    while !seen
        .iter()
        .any(|l: &String| l.contains("configuration reloaded"))
    {
        assert!(
            reloads < 20,
            "no reload heard; last lines {:?}",
            &seen[seen.len().saturating_sub(5)..]
        );
        s.cli(&["reload"]).ok();
        reloads += 1;
        let until = Instant::now() + Duration::from_secs(3);
        while let Ok(l) = lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
            seen.push(l);
        }
    }
    let missed: u64 = seen
        .iter()
        .filter_map(|l| l.strip_prefix("… "))
        .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|l| l.split("OUT manual:flood#1: ").nth(1))
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        missed > 0,
        "nothing was missed: the test did not fill the queue"
    );
    assert_eq!(numbers.first(), Some(&1));
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order");
    // Every line is either shown or counted: the flood's, plus at most its two log lines
    // (run started, finished) and the reloads.
    let accounted = numbers.len() as u64 + missed;
    assert!(
        (20_000..=20_000 + 2 + reloads).contains(&accounted),
        "{} shown + {missed} missed",
        numbers.len()
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
    s.wait_control_threads(0);
}

#[test]
fn status_shows_active_jobs_running_executions_and_next_fires() {
    let s = Setup::new("echo begun; sleep 30");
    s.cli(&["prompts", "add", "p", "x"]).ok();
    s.cli(&[
        "jobs",
        "add",
        "yearly",
        "--prompt",
        "p",
        "--cron",
        "0 3 1 1 *",
    ])
    .ok();
    s.cli(&[
        "jobs",
        "add",
        "hourly",
        "--prompt",
        "p",
        "--cron",
        "0 * * * *",
    ])
    .ok();
    wait_until(Duration::from_secs(10), "the scheduler's plan", || {
        s.status()["active_jobs"] == 2
    });
    let v = s.status();
    assert_eq!(v["scheduler"], "running");
    assert_eq!(v["running_count"], 0);
    let fires = v["next_fires"].as_array().unwrap();
    assert_eq!(fires.len(), 2, "{v}");
    assert_eq!(fires[0]["job"], "hourly", "{v}");
    assert_eq!(fires[1]["job"], "yearly", "{v}");
    assert!(fires[0]["at"].as_str().unwrap().contains(":00:00"), "{v}");

    s.cli(&["jobs", "run", "yearly"]).ok();
    wait_until(Duration::from_secs(10), "the run in status", || {
        s.status()["running_count"] == 1
    });
    let v = s.status();
    assert_eq!(v["running"][0]["execution"], 1);
    assert_eq!(v["running"][0]["job"], "yearly");
    let text = s.cli(&["status"]);
    text.ok()
        .stdout_has("jobs:        2 active\n")
        .stdout_has("running:     1: 1 (yearly)\n")
        .stdout_has("next fires:  ")
        .stdout_has(" hourly\n");
    // Disabling a job changes the plan.
    s.cli(&["jobs", "disable", "hourly"]).ok();
    wait_until(Duration::from_secs(10), "the new plan", || {
        s.status()["active_jobs"] == 1
    });
    assert_eq!(s.status()["next_fires"][0]["job"], "yearly");
}
