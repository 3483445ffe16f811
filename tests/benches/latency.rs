//! Request latency over the control socket (DESIGN §9: p99 under 250 µs with 16 clients), beside
//! an anchor measured in the same run: a raw Unix-socket server that answers length-framed
//! requests with a frame of the same size as the daemon's reply, one thread per connection.
//!
//! Each client opens one persistent connection, says hello once, warms up, then times
//! `Request::Status` round trips (write the request frame, read and decode the reply frame).
//! The anchor's clients run the same code with the same frame sizes and skip only the decode, so
//! the difference is what the daemon adds on top of the kernel's socket round trip. A second
//! anchor runs the same server in a process of its own (this binary, started again), because
//! the daemon is one: switching between the client's and the server's address spaces costs
//! what the in-process anchor never pays.
//!
//! Environment:
//! - `SILICA_CRON_BENCH_SOCKET`: socket of a running daemon (bench/run.sh sets it). Unset: a
//!   daemon is started from `target/release` on a temp directory, and stopped at the end.
//! - `SILICA_CRON_BENCH_ITERS`: timed round trips per client (default 2000).
//! - `SILICA_CRON_BENCH_CLIENTS`: concurrent clients of the second pass (default 16).
//! - `SILICA_CRON_BENCH_JSON`: also write the figures to this file (bench/report.py reads it).
//!
//! Run: `cargo bench -p silica-cron-tests --bench latency` (after `cargo build --release`).

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use proto::frame::{self, FrameError};
use proto::message::{ClientMsg, Request, ServerMsg};
use proto::PROTOCOL_VERSION;

const WARMUP: usize = 200;
/// Microseconds; DESIGN §9.
const TARGET_P99_US: f64 = 250.0;

/// Set (to `REPLY_LEN SOCKET`) in the anchor's own process: serve, nothing else.
const ECHO_PROCESS: &str = "SILICA_CRON_BENCH_ECHO_PROCESS";

fn main() {
    if let Some(spec) = std::env::var_os(ECHO_PROCESS) {
        serve_echo_process(&spec.to_string_lossy());
    }
    let iters = env_usize("SILICA_CRON_BENCH_ITERS", 2000);
    let clients = env_usize("SILICA_CRON_BENCH_CLIENTS", 16);

    // Keeps a daemon we started (and its directory) alive until the end.
    let mut _owned: Option<OwnDaemon> = None;
    let socket = match std::env::var_os("SILICA_CRON_BENCH_SOCKET") {
        Some(s) => PathBuf::from(s),
        None => match OwnDaemon::start() {
            Some(d) => {
                let s = d.socket();
                _owned = Some(d);
                s
            }
            None => return,
        },
    };

    let request = frame::encode(&ClientMsg::Request(Request::Status)).expect("encode request");
    // One probe for the reply size, so the anchor moves the same bytes, and for the daemon's pid,
    // to read its CPU time.
    let (reply_len, pid) = {
        let mut s = connect(&socket);
        s.write_all(&request).expect("status request to the daemon");
        let payload = frame::read_payload(&mut s).expect("status reply from the daemon");
        match frame::decode::<ServerMsg>(&payload).expect("status reply") {
            ServerMsg::Status(info) => (payload.len(), info.pid),
            other => panic!("expected a status reply, got {other:?}"),
        }
    };

    let anchor_dir = tempfile::Builder::new()
        .prefix("scb")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let anchor = anchor_dir.path().join("echo.sock");
    start_echo_server(&anchor, reply_len);
    let anchor_request = zero_frame(request.len() - frame::HEADER_LEN);
    let process_anchor = anchor_dir.path().join("echo-process.sock");
    let echo_process = EchoProcess::start(&process_anchor, reply_len);

    println!(
        "request latency: persistent connections, hello once, {WARMUP} warm-up then {iters} timed round trips per client"
    );
    println!("daemon socket: {}", socket.display());
    println!(
        "frames: request {} B, reply {} B (payload + 4-byte header); anchor: raw Unix socket, thread per connection, same sizes, in this process and in one of its own",
        request.len(),
        reply_len + frame::HEADER_LEN
    );
    println!();

    // Anchor and daemon alternate, so a burst of load from elsewhere is less likely to land on
    // one side only.
    let echo_1 = run(&anchor, &anchor_request, 1, iters, roundtrip_raw);
    let cpu = cpu_secs(pid);
    let daemon_1 = run(&socket, &request, 1, iters, roundtrip_daemon);
    let cpu_1 = cpu_per_request(pid, cpu, WARMUP + iters);
    let echo_pid = echo_process.0.id();
    let cpu = cpu_secs(echo_pid);
    let process_1 = run(&process_anchor, &anchor_request, 1, iters, roundtrip_raw);
    let echo_cpu_1 = cpu_per_request(echo_pid, cpu, WARMUP + iters);
    let echo_n = run(&anchor, &anchor_request, clients, iters, roundtrip_raw);
    let cpu = cpu_secs(pid);
    let daemon_n = run(&socket, &request, clients, iters, roundtrip_daemon);
    let cpu_n = cpu_per_request(pid, cpu, clients * (WARMUP + iters));
    let cpu = cpu_secs(echo_pid);
    let process_n = run(
        &process_anchor,
        &anchor_request,
        clients,
        iters,
        roundtrip_raw,
    );
    let echo_cpu_n = cpu_per_request(echo_pid, cpu, clients * (WARMUP + iters));

    println!(
        "| {:<31} | {:>9} | {:>9} | {:>9} | {:>13} |",
        "", "p50 µs", "p99 µs", "max µs", "round trips/s"
    );
    println!(
        "|{:-<33}|{:->11}|{:->11}|{:->11}|{:->15}|",
        "", "", "", "", ""
    );
    for (name, r) in [
        ("daemon, 1 client".to_string(), &daemon_1),
        ("anchor (echo), 1 client".to_string(), &echo_1),
        ("anchor, own process, 1 client".to_string(), &process_1),
        (format!("daemon, {clients} clients"), &daemon_n),
        (format!("anchor (echo), {clients} clients"), &echo_n),
        (
            format!("anchor, own process, {clients} clients"),
            &process_n,
        ),
    ] {
        println!(
            "| {:<31} | {:>9.1} | {:>9.1} | {:>9.1} | {:>13.0} |",
            name, r.p50_us, r.p99_us, r.max_us, r.per_sec
        );
    }
    println!();
    if let (Some(c1), Some(cn)) = (cpu_1, cpu_n) {
        println!(
            "daemon CPU (user+sys, all threads) per status request: {c1:.0} µs with 1 client, {cn:.0} µs with {clients} clients"
        );
    }
    if let (Some(c1), Some(cn)) = (echo_cpu_1, echo_cpu_n) {
        println!(
            "anchor in its own process, CPU per request: {c1:.0} µs with 1 client, {cn:.0} µs with {clients} clients"
        );
    }
    let met = daemon_n.p99_us < TARGET_P99_US;
    println!(
        "target: daemon p99 with {clients} clients under {TARGET_P99_US} µs: {} ({:.1} µs; anchor {:.1} µs, in its own process {:.1} µs)",
        if met { "met" } else { "MISSED" },
        daemon_n.p99_us,
        echo_n.p99_us,
        process_n.p99_us
    );

    if let Some(path) = std::env::var_os("SILICA_CRON_BENCH_JSON") {
        let doc = serde_json::json!({
            "iters_per_client": iters,
            "clients": clients,
            "request_bytes": request.len(),
            "reply_bytes": reply_len + frame::HEADER_LEN,
            "daemon_1": daemon_1.json(),
            "anchor_1": echo_1.json(),
            "daemon_n": daemon_n.json(),
            "anchor_n": echo_n.json(),
            "anchor_process_1": process_1.json(),
            "anchor_process_n": process_n.json(),
            "target_p99_us": TARGET_P99_US,
            "daemon_cpu_us_per_request_1": cpu_1,
            "daemon_cpu_us_per_request_n": cpu_n,
            "anchor_process_cpu_us_per_request_1": echo_cpu_1,
            "anchor_process_cpu_us_per_request_n": echo_cpu_n,
        });
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).expect("json") + "\n",
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", Path::new(&path).display()));
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?}: expected a positive integer")),
        Err(_) => default,
    }
}

/// User + system CPU seconds of process `pid` (all its threads), from /proc; None elsewhere.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 from the state (field 3).
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// Microseconds of daemon CPU per request since `before`.
fn cpu_per_request(pid: u32, before: Option<f64>, requests: usize) -> Option<f64> {
    Some((cpu_secs(pid)? - before?) * 1e6 / requests as f64)
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    per_sec: f64,
}

impl Figures {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "round_trips_per_s": self.per_sec,
        })
    }
}

type RoundTrip = fn(&mut Stream, &[u8]) -> Result<usize, FrameError>;

/// `clients` threads, each on its own connection, all timing at once after a barrier.
fn run(socket: &Path, request: &[u8], clients: usize, iters: usize, rt: RoundTrip) -> Figures {
    let barrier = Barrier::new(clients);
    let per_client: Vec<(Vec<u32>, Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut s = connect(socket);
                    for _ in 0..WARMUP {
                        rt(&mut s, request).expect("warm-up round trip");
                    }
                    let mut lat = Vec::with_capacity(iters);
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        let t = Instant::now();
                        rt(&mut s, request).expect("round trip");
                        lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
                    }
                    (lat, start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let start = per_client.iter().map(|c| c.1).min().expect("a client");
    let end = per_client.iter().map(|c| c.2).max().expect("a client");
    let mut all: Vec<u32> = per_client.into_iter().flat_map(|c| c.0).collect();
    all.sort_unstable();
    let pct = |p: f64| {
        let k = ((p / 100.0 * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1;
        all[k] as f64 / 1000.0
    };
    Figures {
        p50_us: pct(50.0),
        p99_us: pct(99.0),
        max_us: *all.last().expect("samples") as f64 / 1000.0,
        per_sec: all.len() as f64 / (end - start).as_secs_f64(),
    }
}

/// Connects and exchanges hellos, the way `silica-cron` does.
fn connect(path: &Path) -> Stream {
    let name = path.to_fs_name::<GenericFilePath>().expect("socket name");
    let mut s = Stream::connect(name)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
    s.write_all(&frame::hello(PROTOCOL_VERSION))
        .expect("send hello");
    let hello = frame::read_payload(&mut s).expect("hello reply");
    let v = frame::parse_hello(&hello).expect("hello");
    assert_eq!(
        v,
        PROTOCOL_VERSION,
        "protocol version of {}",
        path.display()
    );
    s
}

/// A status request: the reply must decode to `ServerMsg::Status`. Returns the payload length.
fn roundtrip_daemon(s: &mut Stream, request: &[u8]) -> Result<usize, FrameError> {
    s.write_all(request)?;
    let payload = frame::read_payload(s)?;
    match frame::decode::<ServerMsg>(&payload)? {
        ServerMsg::Status(_) => Ok(payload.len()),
        other => panic!("expected a status reply, got {other:?}"),
    }
}

fn roundtrip_raw(s: &mut Stream, request: &[u8]) -> Result<usize, FrameError> {
    s.write_all(request)?;
    Ok(frame::read_payload(s)?.len())
}

fn zero_frame(payload_len: usize) -> Vec<u8> {
    let mut v = (payload_len as u32).to_be_bytes().to_vec();
    v.resize(frame::HEADER_LEN + payload_len, 0);
    v
}

/// The anchor: hello back, then one `reply_len` frame per request frame. Threads end when their
/// client hangs up; the accept loop ends with the process.
fn start_echo_server(path: &Path, reply_len: usize) {
    let listener = UnixListener::bind(path).expect("bind anchor socket");
    let reply = zero_frame(reply_len);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let reply = reply.clone();
            std::thread::spawn(move || {
                let Ok(hello) = frame::read_payload(&mut conn) else {
                    return;
                };
                let Ok(v) = frame::parse_hello(&hello) else {
                    return;
                };
                if conn.write_all(&frame::hello(v)).is_err() {
                    return;
                }
                while frame::read_payload(&mut conn).is_ok() {
                    if conn.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The anchor's server alone, in the process [`EchoProcess`] starts; never returns.
fn serve_echo_process(spec: &str) -> ! {
    let (len, path) = spec
        .split_once(' ')
        .unwrap_or_else(|| panic!("{ECHO_PROCESS}={spec:?}: expected REPLY_LEN SOCKET"));
    let len = len.parse().expect("reply length");
    start_echo_server(Path::new(path), len);
    loop {
        std::thread::park();
    }
}

/// This binary again, as the anchor in a process of its own; stopped when dropped.
struct EchoProcess(Child);

impl EchoProcess {
    fn start(socket: &Path, reply_len: usize) -> EchoProcess {
        let exe = std::env::current_exe().expect("path of this bench");
        let child = Command::new(exe)
            .env(ECHO_PROCESS, format!("{reply_len} {}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the anchor's own process");
        let mut p = EchoProcess(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = p.0.try_wait() {
                panic!("the anchor's own process exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the anchor's own process did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A release daemon on a temp directory, for runs without bench/run.sh.
struct OwnDaemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl OwnDaemon {
    fn start() -> Option<OwnDaemon> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_owned();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("release/silica-crond");
        if !bin.is_file() {
            println!(
                "latency bench skipped: {} is missing. Build it first (`cargo build --release --workspace --bins`), \
                 or run bench/run.sh, or point SILICA_CRON_BENCH_SOCKET at a running daemon's socket.",
                bin.display()
            );
            return None;
        }
        // Short path: a Unix socket path must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("scb")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("daemon log");
        let mut cmd = Command::new(&bin);
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for k in [
            "DATABASE_URL",
            "CRON_DATABASE_URL",
            "SILICA_CRON_SOCKET",
            "SILICA_CRON_CONFIG",
            "SILICA_CRON_MIGRATIONS",
            "SILICA_ENVIRONMENT",
            "LOG_LEVEL",
            "JOURNAL_STREAM",
        ] {
            cmd.env_remove(k);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut d = OwnDaemon { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(d.socket()).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    bin.display(),
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen within 20 s:\n{}",
                bin.display(),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("started {} in {}", bin.display(), d.dir.path().display());
        Some(d)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("silica-cron.db.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
