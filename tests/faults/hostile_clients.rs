//! Scenario 6: Hostile control clients: random bytes, huge length prefixes, half-open, idle and
//! slowloris connections, 1,000 concurrent clients, a client of another uid, and a daemon
//! whose open-files limit is 64 (as `prlimit --nofile=64` sets it). Each is refused or dropped
//! cleanly while others are served, and the daemon's memory stays bounded.

use std::io::{Cursor, ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::frame;
use proto::message::{ErrorKind, ServerMsg};
use silica_cron_tests::client::{
    assert_serving, finish, hello_connection, hold_connections, limit_nofile, noise,
    raise_own_fd_limit, request_status, wait_until, Spawned,
};
use silica_cron_tests::jobs::status_kb;
use silica_cron_tests::report::Scenario;
use silica_cron_tests::users::{is_root, test_user, USER};
use silica_cron_tests::{bin, hello_frame, raw_exchange, Env};

#[test]
fn random_bytes_are_dropped() {
    let mut sc = Scenario::start("6a", "random bytes, HTTP and a 4 GiB hello");
    sc.tried("40 connections of random bytes (12 B to 4 KB), an HTTP request, 0xff x 16");
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    for seed in 1..=40u64 {
        // At least 12 bytes, so a header announcing up to 8 bytes is followed by its payload and
        // the daemon decides at once; at most a socket buffer, so the write never blocks.
        let bytes = noise(seed, 12 + (seed as usize * 97) % 4000);
        let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
        assert!(
            reply.is_empty(),
            "seed {seed}: the daemon answered a non-hello with {reply:?}"
        );
    }
    // HTTP, and a 4 GiB hello.
    let reply = raw_exchange(
        &env.socket(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(reply.is_empty());
    let reply = raw_exchange(&env.socket(), &[0xff; 16], Duration::from_secs(10)).unwrap();
    assert!(reply.is_empty());
    assert_serving(&env, &mut d);
    sc.iterations(42);
    sc.held("no reply to any, each connection closed; the daemon serves status after");
    sc.pass();
}

#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    let mut sc = Scenario::start("6b", "huge length prefixes after a valid hello");
    sc.tried("20 frames announcing 4 GiB, one of 1 MiB + 1 really sent");
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    let before = status_kb(d.pid(), "VmRSS:");
    for _ in 0..20 {
        let mut bytes = hello_frame(proto::PROTOCOL_VERSION);
        bytes.extend_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 64]);
        let started = Instant::now();
        let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the daemon did not close the connection"
        );
        // Its hello, then nothing: closed.
        assert_eq!(reply, hello_frame(proto::PROTOCOL_VERSION));
    }
    // Just over the request limit, with the bytes really sent.
    let mut s = hello_connection(&env.socket());
    let len = 1024 * 1024 + 1;
    s.write_all(&(len as u32).to_be_bytes()).unwrap();
    let _ = s.write_all(&vec![0u8; len]);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    drop(s);

    let after = status_kb(d.pid(), "VmRSS:");
    assert!(
        after < 100 * 1024,
        "daemon RSS {after} KiB after oversized frames (before: {before} KiB)"
    );
    assert_serving(&env, &mut d);
    sc.iterations(21);
    sc.held(format!("each closed after the hello without a reply, within 5 s; RSS {after} KiB (before {before} KiB); serving"));
    sc.pass();
}

#[test]
fn stalled_clients_do_not_block_others() {
    let mut sc = Scenario::start(
        "6c",
        "half-open clients: half a hello, half a request, half a payload",
    );
    sc.tried("3 connections stopped mid-frame, status from others meanwhile");
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    // Half a hello.
    let mut half_hello = UnixStream::connect(env.socket()).unwrap();
    half_hello
        .write_all(&hello_frame(proto::PROTOCOL_VERSION)[..6])
        .unwrap();
    // A hello, then half a request frame.
    let mut half_request = hello_connection(&env.socket());
    let request = frame::encode(&proto::message::ClientMsg::Request(
        proto::message::Request::Status,
    ))
    .unwrap();
    half_request.write_all(&request[..2]).unwrap();
    // A hello, then a header and part of the payload.
    let mut half_payload = hello_connection(&env.socket());
    half_payload.write_all(&100u32.to_be_bytes()).unwrap();
    half_payload.write_all(&[0u8; 10]).unwrap();

    let started = Instant::now();
    for _ in 0..5 {
        assert_serving(&env, &mut d);
    }
    assert!(started.elapsed() < Duration::from_secs(4));

    // The half hello is dropped after the handshake timeout (5 s), not kept forever.
    half_hello
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 16];
    let started = Instant::now();
    let n = loop {
        // A stop and continue of this process interrupts a read with a timeout (signal(7)).
        match half_hello.read(&mut buf) {
            Err(e)
                if e.kind() == IoErrorKind::Interrupted
                    && started.elapsed() < Duration::from_secs(15) => {}
            other => break other,
        }
    };
    assert!(
        matches!(n, Ok(0)),
        "expected the daemon to close a stalled handshake, got {n:?} after {:?}",
        started.elapsed()
    );
    // The others are still held (idle timeout is longer) and everyone else is served.
    assert_serving(&env, &mut d);
    drop((half_request, half_payload));
    sc.iterations(3);
    sc.held("status answered 5 times meanwhile within 4 s; the half hello dropped at the 5 s handshake timeout");
    sc.pass();
}

/// The daemon starts with the usual soft limit of 1024 open files (systemd's default too), so it
/// must raise it itself to reach its default `max_connections` of 1024.
#[test]
fn a_thousand_held_connections_do_not_lock_out_status() {
    let mut sc = Scenario::start(
        "6d",
        "1,000 idle connections, then the limit of 1024 and one more",
    );
    sc.tried("1,024 greeted idle connections from a daemon started with a soft limit of 1024 files, then a 1,025th client");
    raise_own_fd_limit(1200);
    let env = Env::new();
    let mut d = Spawned::start(&env, &[], limit_nofile(1024, false));
    // Opened at once, then greeted.
    let mut held = hold_connections(&env.socket(), 1000);
    let started = Instant::now();
    d.assert_serving(&env);
    d.assert_serving(&env);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "status took {:?} with 1,000 idle connections",
        started.elapsed()
    );
    // A held connection still works.
    let s = &mut held[500];
    s.write_all(&request_status()).unwrap();
    let payload = frame::read_payload(s).unwrap();
    let msg: ServerMsg = frame::decode(&payload).unwrap();
    assert!(matches!(msg, ServerMsg::Status(ref i) if i.pid == d.child.id()));

    // Up to the limit of 1024, all held; one more is refused at once, not left hanging.
    held.extend(hold_connections(&env.socket(), 24));
    let client = env
        .command("silica-cron")
        .arg("status")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(client, Duration::from_secs(10))
        .code(1)
        .stderr_has("the daemon closed the connection");
    assert!(
        d.log().contains("too many control connections"),
        "{}",
        d.log()
    );
    let rss = status_kb(d.pid(), "VmRSS:");
    assert!(
        rss < 100 * 1024,
        "daemon RSS {rss} KiB with 1024 connections"
    );

    // One leaves: a place is free again.
    drop(held.pop());
    wait_until(
        Duration::from_secs(10),
        "a freed slot serves status",
        || env.cli(&["status"]).code == 0,
    );
    drop(held);
    d.assert_serving(&env);
    sc.iterations(1025);
    sc.held(format!("status served with 1,000 held; the 1,025th refused at once ('too many control connections' logged); RSS {rss} KiB; a freed slot serves again"));
    sc.pass();
}

#[test]
fn garbage_after_a_valid_hello_gets_an_error_reply() {
    let mut sc = Scenario::start("6e", "garbage payloads after a valid hello");
    sc.tried("5 malformed request payloads (random, truncated, trailing byte, u64::MAX string length), an empty frame");
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    for (i, payload) in [
        vec![0xff; 16],
        noise(7, 200),
        vec![0u8; 1],
        // A valid request followed by a trailing byte.
        {
            let mut p = request_status()[4..].to_vec();
            p.push(0);
            p
        },
        // Migrate with a string claiming u64::MAX bytes.
        {
            let mut p = vec![0u8, 2];
            p.extend_from_slice(&[0xff; 9]);
            p
        },
    ]
    .into_iter()
    .enumerate()
    {
        let mut bytes = hello_frame(proto::PROTOCOL_VERSION);
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
        let mut r = Cursor::new(reply);
        let hello = frame::read_payload(&mut r).expect("hello");
        assert_eq!(frame::parse_hello(&hello).unwrap(), proto::PROTOCOL_VERSION);
        match frame::read_payload(&mut r) {
            // An error reply, then the close.
            Ok(p) => match frame::decode::<ServerMsg>(&p) {
                Ok(ServerMsg::Done(Err(e))) => {
                    assert_eq!(e.kind, ErrorKind::InvalidArgument, "case {i}: {e:?}");
                    assert!(e.message.contains("malformed request"), "case {i}: {e:?}");
                    assert!(
                        matches!(frame::read_payload(&mut r), Err(frame::FrameError::Closed)),
                        "case {i}: more after the error"
                    );
                }
                other => panic!("case {i}: expected Done(Err), got {other:?}"),
            },
            // Or just the close.
            Err(frame::FrameError::Closed) => {}
            Err(e) => panic!("case {i}: {e}"),
        }
        assert_serving(&env, &mut d);
    }
    // An empty frame after the hello: closed.
    let mut bytes = hello_frame(proto::PROTOCOL_VERSION);
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    let reply = raw_exchange(&env.socket(), &bytes, Duration::from_secs(10)).unwrap();
    assert_eq!(reply, hello_frame(proto::PROTOCOL_VERSION));
    assert_serving(&env, &mut d);
    sc.iterations(6);
    sc.held("an invalid-argument 'malformed request' reply or a close for each, never more; serving after each");
    sc.pass();
}

#[test]
fn another_user_is_refused_even_through_an_open_socket_file() {
    let mut sc = Scenario::start("6f", "a client of another uid");
    if !is_root() {
        sc.tried("nothing: needs root for useradd and runuser");
        sc.pass();
        return;
    }
    sc.tried("silica-cron status as another user (useradd + runuser), the socket file opened to everyone (0666)");
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
    sc.iteration();
    sc.held(format!(
        "refused (exit {:?}), the refusal logged with peer_uid={uid}; the owner still served",
        out.status.code()
    ));
    sc.pass();
}

/// A status request on a fresh connection, answered: the daemon's pid.
fn status_over_raw_socket(socket: &std::path::Path) -> Result<u32, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut bytes = hello_frame(proto::PROTOCOL_VERSION);
    bytes.extend_from_slice(&request_status());
    s.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
    let hello = frame::read_payload(&mut s).map_err(|e| format!("hello: {e}"))?;
    frame::parse_hello(&hello).map_err(|e| e.to_string())?;
    let payload = frame::read_payload(&mut s).map_err(|e| format!("reply: {e}"))?;
    match frame::decode::<ServerMsg>(&payload) {
        Ok(ServerMsg::Status(info)) => Ok(info.pid),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn slowloris_clients_are_dropped_and_others_served() {
    let mut sc = Scenario::start(
        "6g",
        "slowloris: hellos and requests trickled a byte at a time",
    );
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    let before = status_kb(d.pid(), "VmRSS:");
    sc.tried("20 connections trickling the hello one byte per 700 ms, 20 trickling a 1,000-byte request one byte per second, status from others meanwhile");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let socket = env.socket();
    let (hello_drops, served) = std::thread::scope(|scope| {
        let hellos: Vec<_> = (0..20)
            .map(|_| {
                let socket = socket.clone();
                scope.spawn(move || {
                    let mut s = UnixStream::connect(&socket).unwrap();
                    let started = Instant::now();
                    for b in hello_frame(proto::PROTOCOL_VERSION) {
                        if s.write_all(&[b]).is_err() {
                            return Some(started.elapsed());
                        }
                        std::thread::sleep(Duration::from_millis(700));
                    }
                    // All 12 bytes went into the socket buffer: was it closed meanwhile?
                    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let mut buf = [0u8; 16];
                    match s.read(&mut buf) {
                        Ok(0) => Some(started.elapsed()),
                        _ => None,
                    }
                })
            })
            .collect();
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let socket = socket.clone();
                let stop = &stop;
                scope.spawn(move || {
                    let mut s = hello_connection(&socket);
                    let _ = s.write_all(&1000u32.to_be_bytes());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if s.write_all(&[0]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })
            })
            .collect();
        let mut served = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(9) {
            let t1 = Instant::now();
            assert_eq!(status_over_raw_socket(&socket), Ok(d.child.id()));
            assert!(
                t1.elapsed() < Duration::from_secs(2),
                "a status took {:?} among slowloris clients",
                t1.elapsed()
            );
            served += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in requests {
            r.join().unwrap();
        }
        let drops: Vec<_> = hellos.into_iter().map(|h| h.join().unwrap()).collect();
        (drops, served)
    });
    sc.iterations(40);
    let worst = hello_drops
        .iter()
        .map(|d| d.unwrap_or_else(|| panic!("a trickled hello was not dropped: {hello_drops:?}")))
        .max()
        .unwrap();
    // The handshake deadline is 5 s for the whole hello, however it trickles.
    assert!(
        worst < Duration::from_secs(9),
        "a trickled hello was held {worst:?}"
    );
    let after = status_kb(d.pid(), "VmRSS:");
    assert!(after < before + 20 * 1024, "RSS {before} -> {after} KiB");
    assert_serving(&env, &mut d);
    sc.held(format!(
        "every trickled hello dropped by its 5 s handshake deadline (the last after {:.1} s); {served} status requests served meanwhile, each under 2 s; RSS {before} -> {after} KiB",
        worst.as_secs_f64()
    ));
    sc.pass();
}

#[test]
fn a_thousand_concurrent_clients_are_all_served() {
    let mut sc = Scenario::start("6h", "1,000 concurrent clients");
    raise_own_fd_limit(1200);
    let env = Env::new();
    let mut d = env.start_daemon(&[]);
    let pid = d.child.id();
    let socket = env.socket();
    let rounds = crate::common::iterations(1, 5);
    sc.tried(format!(
        "{rounds} x 1,000 threads released at once, each connecting, greeting and asking for status, while a silica-cron status process runs beside"
    ));
    let mut served = 0;
    for _ in 0..rounds {
        let barrier = std::sync::Barrier::new(1000);
        let results: Vec<Result<u32, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..1000)
                .map(|_| {
                    let socket = socket.clone();
                    let barrier = &barrier;
                    std::thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn_scoped(scope, move || {
                            barrier.wait();
                            status_over_raw_socket(&socket)
                        })
                        .unwrap()
                })
                .collect();
            let beside = env
                .command("silica-cron")
                .arg("status")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            finish(beside, Duration::from_secs(30)).ok();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let failed: Vec<_> = results.iter().filter(|r| **r != Ok(pid)).collect();
        assert!(
            failed.is_empty(),
            "{} of 1,000 failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        served += results.len();
        sc.iterations(1000);
    }
    let peak = status_kb(d.pid(), "VmHWM:");
    assert!(peak < 100 * 1024, "daemon peak RSS {peak} KiB");
    assert_serving(&env, &mut d);
    sc.held(format!(
        "all {served} answered with the daemon's status; daemon peak RSS {peak} KiB"
    ));
    sc.pass();
}

#[test]
fn an_open_files_limit_of_64_refuses_connections_without_dying() {
    let mut sc = Scenario::start(
        "6i",
        "a daemon limited to 64 open files (prlimit --nofile=64)",
    );
    let env = Env::new();
    let mut d = Spawned::start(&env, &[], limit_nofile(64, true));
    sc.tried(
        "100 connections held at once against a daemon whose hard limit is 64 files, then status",
    );
    let mut answered = 0;
    let mut refused = 0;
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = match UnixStream::connect(env.socket()) {
            Ok(s) => s,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&hello_frame(proto::PROTOCOL_VERSION));
        let mut reply = [0u8; 12];
        let t = Instant::now();
        match s.read_exact(&mut reply) {
            Ok(()) => {
                answered += 1;
                held.push(s);
            }
            Err(e) => {
                // Closed at once (refused), never left hanging until our timeout.
                assert!(
                    e.kind() == IoErrorKind::UnexpectedEof
                        || e.kind() == IoErrorKind::ConnectionReset,
                    "connection {} neither answered nor refused: {e} after {:?}",
                    answered + refused,
                    t.elapsed()
                );
                refused += 1;
            }
        }
    }
    sc.iterations(100);
    assert!(
        matches!(d.child.try_wait(), Ok(None)),
        "the daemon died:\n{}",
        d.log()
    );
    assert!(
        refused > 0 && answered > 0,
        "answered {answered}, refused {refused}"
    );
    drop(held);
    wait_until(
        Duration::from_secs(10),
        "status once the connections left",
        || env.cli(&["status"]).code == 0,
    );
    d.assert_serving(&env);
    sc.held(format!(
        "{answered} served, {refused} refused with a close (none left hanging); the daemon stayed up and serves once they left"
    ));
    sc.pass();
}
