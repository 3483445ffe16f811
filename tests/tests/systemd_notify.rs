//! The service-manager notifications (sd_notify) of the real daemon, received on a fake
//! NOTIFY_SOCKET: a Unix datagram socket in the test's directory (or an abstract one) that
//! records each message with the sender's pid, as systemd sees it with NotifyAccess=main.

use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use silica_cron_tests::jobs::{self, script};
use silica_cron_tests::{Daemon, Env};

/// One datagram: what it said and which process sent it.
#[derive(Debug, Clone)]
struct Message {
    pid: i32,
    text: String,
}

impl Message {
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
    fn value(&self, key: &str) -> Option<String> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    }
}

/// A fake service manager's notification socket.
struct Listener {
    messages: Arc<Mutex<Vec<Message>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn bind(addr: &SocketAddr) -> Listener {
        let socket = UnixDatagram::bind_addr(addr).expect("bind the notify socket");
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on our own socket with a valid int.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (messages, done) = (messages.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(m) = receive(&socket) {
                        messages.lock().unwrap().push(m);
                    }
                }
            })
        };
        Listener {
            messages,
            done,
            thread: Some(thread),
        }
    }

    fn all(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message after the first `from` satisfies `pred`; returns its index.
    #[track_caller]
    fn wait(&self, from: usize, what: &str, pred: impl Fn(&Message) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.all();
            if let Some(i) = all.iter().skip(from).position(&pred) {
                return from + i;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 20 s; received: {all:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One datagram with the sender's credentials (SCM_CREDENTIALS), or None on timeout.
fn receive(socket: &UnixDatagram) -> Option<Message> {
    let mut buf = vec![0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg into buffers we own, described by msg.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    let mut pid = -1;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                pid = cred.pid;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some(Message {
        pid,
        text: String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
    })
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn count(messages: &[Message], line: &str) -> usize {
    messages.iter().filter(|m| m.has(line)).count()
}

/// Every message must come from the daemon's main process: systemd's NotifyAccess=main drops
/// any other sender's.
#[track_caller]
fn all_from(listener: &Listener, d: &Daemon) {
    for m in listener.all() {
        assert_eq!(m.pid, d.pid(), "a message from another process: {m:?}");
    }
}

#[test]
fn ready_status_watchdog_reload_and_stopping_reach_the_service_manager() {
    let env = Env::built_in();
    let cfg = env.path().join("config.toml");
    std::fs::write(&cfg, "max_concurrent_runs = 2\n").unwrap();
    let notify = env.path().join("notify.sock");
    let listener = Listener::bind(&SocketAddr::from_pathname(&notify).unwrap());
    let env = env
        .with_var("NOTIFY_SOCKET", notify.to_str().unwrap())
        .with_var("WATCHDOG_USEC", "400000");
    let mut d = env.spawn_daemon(&["--config", cfg.to_str().unwrap()]);

    // READY=1 means the socket answers at once: no retry here.
    let ready = listener.wait(0, "READY=1", |m| m.has("READY=1"));
    UnixStream::connect(env.socket()).expect("the socket accepts once READY=1 was sent");
    let ready_msg = &listener.all()[ready];
    assert_eq!(
        ready_msg.value("STATUS").as_deref(),
        Some("scheduler: running"),
        "{ready_msg:?}"
    );
    env.cli(&["--config", cfg.to_str().unwrap(), "status"])
        .ok()
        .stdout_has("scheduler:   running");

    // Pings at about half of WATCHDOG_USEC, from the scheduler loop.
    let mut last = ready;
    for _ in 0..3 {
        last = listener.wait(last + 1, "WATCHDOG=1", |m| m.has("WATCHDOG=1"));
    }

    // SIGHUP: RELOADING=1 stamped with the monotonic clock, then READY=1.
    let before = monotonic_usec();
    d.signal(libc::SIGHUP);
    let reloading = listener.wait(last + 1, "RELOADING=1", |m| m.has("RELOADING=1"));
    let stamp: u64 = listener.all()[reloading]
        .value("MONOTONIC_USEC")
        .expect("MONOTONIC_USEC with RELOADING=1")
        .parse()
        .unwrap();
    assert!(
        before <= stamp && stamp <= monotonic_usec(),
        "MONOTONIC_USEC={stamp} is not the time of the reload (sent after {before})"
    );
    let done = listener.wait(reloading + 1, "READY=1 after the reload", |m| {
        m.has("READY=1")
    });
    assert_eq!(
        listener.all()[done].value("STATUS").as_deref(),
        Some("scheduler: running")
    );

    // `silica-cron reload` goes the same way.
    env.cli(&["--config", cfg.to_str().unwrap(), "reload"]).ok();
    let reloading = listener.wait(done + 1, "RELOADING=1", |m| m.has("RELOADING=1"));
    let done = listener.wait(reloading + 1, "READY=1", |m| m.has("READY=1"));
    // A bad file: the daemon keeps its configuration and says why in the status line.
    std::fs::write(&cfg, "max_concurrent_runs = 'many'\n").unwrap();
    d.signal(libc::SIGHUP);
    let reloading = listener.wait(done + 1, "RELOADING=1", |m| m.has("RELOADING=1"));
    let done = listener.wait(reloading + 1, "READY=1", |m| m.has("READY=1"));
    let status = listener.all()[done].value("STATUS").unwrap_or_default();
    assert!(
        status.starts_with("scheduler: running (last reload failed:")
            && status.contains("max_concurrent_runs"),
        "{status}"
    );

    // A good file again: the note goes.
    std::fs::write(&cfg, "max_concurrent_runs = 3\n").unwrap();
    d.signal(libc::SIGHUP);
    let reloading = listener.wait(done + 1, "RELOADING=1", |m| m.has("RELOADING=1"));
    let done = listener.wait(reloading + 1, "READY=1", |m| m.has("READY=1"));
    assert_eq!(
        listener.all()[done].value("STATUS").as_deref(),
        Some("scheduler: running")
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    d.signal(libc::SIGTERM);
    let stopping = listener.wait(done + 1, "STOPPING=1", |m| m.has("STOPPING=1"));
    assert!(listener.all()[stopping].value("STATUS").is_some());
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0), "{}", d.log());
    all_from(&listener, &d);
}

#[test]
fn status_says_held_until_migrated_and_nothing_pings_without_a_watchdog() {
    let env = Env::built_in();
    // Behind head: the daemon serves, and holds jobs.
    env.cli(&["migrate", "upgrade", "34065a4cc718"]).ok();
    let notify = env.path().join("notify.sock");
    let listener = Listener::bind(&SocketAddr::from_pathname(&notify).unwrap());
    let env = env.with_var("NOTIFY_SOCKET", notify.to_str().unwrap());
    let d = env.spawn_daemon(&[]);
    let ready = listener.wait(0, "READY=1", |m| m.has("READY=1"));
    assert_eq!(
        listener.all()[ready].value("STATUS").as_deref(),
        Some("scheduler: held: needs migration")
    );
    std::thread::sleep(Duration::from_millis(1500));
    env.cli(&["migrate", "upgrade"]).ok();
    listener.wait(ready + 1, "STATUS=scheduler: running", |m| {
        m.value("STATUS").as_deref() == Some("scheduler: running")
    });
    let all = listener.all();
    assert_eq!(
        count(&all, "WATCHDOG=1"),
        0,
        "no watchdog was asked for: {all:#?}"
    );
    assert_eq!(count(&all, "READY=1"), 1, "{all:#?}");
    all_from(&listener, &d);
    assert_eq!(d.stop(), 0);
}

#[test]
fn abstract_address_a_watchdog_for_another_pid_and_jobs_see_none_of_it() {
    let env = Env::built_in();
    let name = format!(
        "silica-cron-test-{}-{}",
        std::process::id(),
        env.path().display()
    );
    let listener = Listener::bind(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap());
    let agent = script(&env, "agent.sh", "env");
    let cfg = env.path().join("config.toml");
    std::fs::write(&cfg, format!("runner = [\"{agent}\", \"{{prompt}}\"]\n")).unwrap();
    let env = env
        .with_var("NOTIFY_SOCKET", &format!("@{name}"))
        .with_var("WATCHDOG_USEC", "200000")
        // systemd names the process the watchdog is for; this one is not us.
        .with_var("WATCHDOG_PID", "1");
    let d = env.start_daemon(&["--config", cfg.to_str().unwrap()]);
    let ready = listener.wait(0, "READY=1 on an abstract socket", |m| m.has("READY=1"));

    let cli = |args: &[&str]| jobs::cli(&env, cfg.to_str().unwrap(), args);
    cli(&["prompts", "add", "p", "hello"]).ok();
    let out = cli(&["prompts", "run", "p", "--wait"]);
    out.ok().stdout_has("SILICA_CRON_PROMPT=hello");
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(
            !out.stdout.contains(var),
            "the job saw {var}:\n{}",
            out.stdout
        );
    }

    // Pings every 100 ms would have come by now, were the watchdog ours.
    std::thread::sleep(Duration::from_millis(1000));
    let all = listener.all();
    assert_eq!(count(&all[ready..], "WATCHDOG=1"), 0, "{all:#?}");
    all_from(&listener, &d);
    assert_eq!(d.stop(), 0);
}
