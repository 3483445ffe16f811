//! The HTTP side: /health and /metrics scraped over real TCP connections from the real daemon,
//! with a plain HTTP/1.1 client written on std's TcpStream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use silica_cron_tests::client::wait_until;
use silica_cron_tests::jobs::{self, script};
use silica_cron_tests::{Daemon, Env};

/// The revision that makes the scheduler's tables (built into silica-crond).
const BUILT_IN_HEAD: &str = "57249ff23536";
const ORIGINAL_HEAD: &str = "34065a4cc718";

struct Reply {
    code: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on a fresh connection (`Connection: close`), the whole reply read.
fn request(addr: &str, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Reply {
        code,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path)
}

/// The HTTP address the daemon reports in `silica-cron status --json`.
fn http_addr(env: &Env, config: Option<&str>) -> String {
    let mut args = vec!["status", "--json"];
    if let Some(c) = config {
        args.extend(["--config", c]);
    }
    let out = env.cli(&args);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["http"]
        .as_str()
        .unwrap_or_else(|| panic!("status has no http address: {v}"))
        .to_string()
}

/// The value of the sample whose line starts with `series` followed by a space.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
        .parse()
        .unwrap()
}

fn config(env: &Env, body: &str) -> String {
    let p = env.path().join("config.toml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn health_and_metrics_are_served_and_metrics_move_with_runs_and_requests() {
    let env = Env::built_in();
    let agent = script(
        &env,
        "agent.sh",
        "echo \"ran $1\"; [ \"$1\" = bad ] && exit 4; exit 0",
    );
    let cfg = config(
        &env,
        &format!("runner = [\"{agent}\", \"{{prompt}}\"]\nkill_grace = 1\n"),
    );
    // Port 0: any free port; the daemon reports the real one in status and in its log.
    let d: Daemon = env.start_daemon(&["--config", &cfg, "--bind-port", "0"]);
    let addr = http_addr(&env, Some(&cfg));
    let port: u16 = addr.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert!(d.log().contains(&format!("http={addr}")), "{}", d.log());

    let health = get(&addr, "/health");
    assert_eq!(health.code, 200, "{}", health.body);
    assert_eq!(
        health.header("content-type").as_deref(),
        Some("application/json")
    );
    let v = health.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["revision"], BUILT_IN_HEAD);
    assert_eq!(v["at_head"], true);
    assert_eq!(v["scheduler"], "running");
    assert_eq!(v["reason"], serde_json::Value::Null);

    // HEAD: the same status and headers, no body.
    let head = request(&addr, "HEAD", "/health");
    assert_eq!(head.code, 200);
    assert_eq!(head.body, "");

    let before = get(&addr, "/metrics");
    assert_eq!(before.code, 200);
    assert_eq!(
        before.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = &before.body;
    assert!(
        m.contains("# TYPE silica_cron_firing_lag_seconds histogram\n"),
        "{m}"
    );
    assert!(m.contains("# HELP silica_cron_executions_total "), "{m}");
    assert_eq!(sample(m, "silica_cron_jobs"), 0.0);
    assert_eq!(sample(m, "silica_cron_database_at_head"), 1.0);
    assert_eq!(sample(m, "silica_cron_scheduler_running"), 1.0);
    assert_eq!(
        sample(m, "silica_cron_executions_total{status=\"completed\"}"),
        0.0
    );
    assert_eq!(
        sample(
            m,
            "silica_cron_firing_lag_seconds_count{trigger=\"manual\"}"
        ),
        0.0
    );
    assert_eq!(sample(m, "silica_cron_run_duration_seconds_count"), 0.0);
    assert!(sample(m, "process_resident_memory_bytes") > 1e6, "{m}");
    let status_requests = sample(m, "silica_cron_socket_requests_total{kind=\"status\"}");
    assert!(status_requests >= 1.0, "{m}");

    let cli = |args: &[&str]| jobs::cli(&env, &cfg, args);
    cli(&["prompts", "add", "good", "good"]).ok();
    cli(&["prompts", "add", "bad", "bad"]).ok();
    cli(&[
        "jobs",
        "add",
        "nightly",
        "--prompt",
        "good",
        "--cron",
        "0 3 * * *",
    ])
    .ok();
    cli(&[
        "jobs",
        "add",
        "broken",
        "--prompt",
        "bad",
        "--cron",
        "0 4 * * *",
    ])
    .ok();
    cli(&["jobs", "disable", "broken"]).ok();
    cli(&["jobs", "run", "nightly", "--wait"])
        .ok()
        .stdout_has("ran good");
    cli(&["prompts", "run", "bad", "--wait"]).code(1);
    cli(&["status"]).ok();

    let m = get(&addr, "/metrics").body;
    assert_eq!(sample(&m, "silica_cron_jobs"), 2.0, "{m}");
    assert_eq!(sample(&m, "silica_cron_jobs_active"), 1.0, "{m}");
    assert_eq!(
        sample(&m, "silica_cron_executions_total{status=\"completed\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "silica_cron_executions_total{status=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "silica_cron_firing_lag_seconds_count{trigger=\"manual\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "silica_cron_firing_lag_seconds_bucket{trigger=\"manual\",le=\"+Inf\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "silica_cron_firing_lag_seconds_count{trigger=\"schedule\"}"
        ),
        0.0
    );
    assert_eq!(sample(&m, "silica_cron_run_duration_seconds_count"), 2.0);
    assert!(
        sample(&m, "silica_cron_run_duration_seconds_sum") > 0.0,
        "{m}"
    );
    // prompts add x2, jobs add x2, jobs disable, jobs run: six job/prompt requests at least.
    assert!(
        sample(&m, "silica_cron_socket_requests_total{kind=\"job\"}") >= 4.0,
        "{m}"
    );
    assert!(
        sample(&m, "silica_cron_socket_requests_total{kind=\"prompt\"}") >= 3.0,
        "{m}"
    );
    assert!(
        sample(&m, "silica_cron_socket_requests_total{kind=\"status\"}") > status_requests,
        "{m}"
    );
    assert_eq!(sample(&m, "silica_cron_runs_in_progress"), 0.0);

    // Unknown path, wrong method.
    assert_eq!(get(&addr, "/").code, 404);
    assert_eq!(get(&addr, "/healthz").code, 404);
    let post = request(&addr, "POST", "/health");
    assert_eq!(post.code, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
    assert_eq!(request(&addr, "DELETE", "/metrics").code, 405);

    // SIGTERM with an idle HTTP connection open: the daemon stops cleanly and the port is free.
    let idle = TcpStream::connect(&addr).unwrap();
    assert_eq!(d.stop(), 0);
    drop(idle);
    std::net::TcpListener::bind(&addr).expect("the port is released after the daemon stops");
}

#[test]
fn a_development_daemon_behind_head_is_unhealthy_with_the_reason_until_upgraded() {
    let env = Env::built_in();
    env.cli(&["migrate", "upgrade", ORIGINAL_HEAD]).ok();
    // The port from the config file.
    let cfg = config(&env, "bind_port = 0\n");
    let _d = env.start_daemon(&["--config", &cfg]);
    let addr = http_addr(&env, Some(&cfg));

    let health = get(&addr, "/health");
    assert_eq!(health.code, 503, "{}", health.body);
    let v = health.json();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["revision"], ORIGINAL_HEAD);
    assert_eq!(v["heads"], serde_json::json!([BUILT_IN_HEAD]));
    assert_eq!(v["at_head"], false);
    assert_eq!(v["scheduler"], "held: needs migration");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("needs migration")),
        "{v}"
    );
    let m = get(&addr, "/metrics");
    assert_eq!(
        m.code, 200,
        "metrics are served while the scheduler is held"
    );
    assert_eq!(sample(&m.body, "silica_cron_database_at_head"), 0.0);
    assert_eq!(sample(&m.body, "silica_cron_scheduler_running"), 0.0);
    assert!(!m.body.contains("silica_cron_jobs "), "{}", m.body);

    env.cli(&["--config", &cfg, "migrate", "upgrade"]).ok();
    wait_until(Duration::from_secs(10), "healthy after the upgrade", || {
        get(&addr, "/health").code == 200
    });
    let v = get(&addr, "/health").json();
    assert_eq!(v["revision"], BUILT_IN_HEAD);
    assert_eq!(v["scheduler"], "running");
}

#[test]
fn a_listener_that_cannot_bind_stops_the_daemon_with_the_address_named() {
    let env = Env::built_in();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = env.crond(&["--bind-port", &port]);
    out.code(1)
        .stderr_has(&format!("cannot listen for HTTP on 127.0.0.1:{port}: "))
        .stderr_has("in use");
    assert!(!env.socket().exists(), "control socket left behind");

    let out = env.crond(&["--bind-port", "8080", "--bind-host", "no-such-host.invalid"]);
    out.code(1)
        .stderr_has("cannot listen for HTTP on no-such-host.invalid:8080: cannot resolve");
}

#[test]
fn a_stalled_client_is_dropped_and_does_not_hold_up_others() {
    let env = Env::built_in();
    let _d = env.start_daemon(&["--bind-port", "0"]);
    let addr = http_addr(&env, None);
    // Half a request line, then nothing.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(b"GET /hea").unwrap();
    assert_eq!(
        get(&addr, "/health").code,
        200,
        "served beside a stalled client"
    );
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // The header deadline (5 s) ends it: end of file, or a 408 and then end of file.
    let mut got = Vec::new();
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "the stalled connection was not closed after {:?}: {e}",
                started.elapsed()
            ),
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
}
