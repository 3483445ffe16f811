//! The service manager's notification protocol (sd_notify(3)), without libsystemd: one
//! datagram per message to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract address).
//!
//! What silica-crond says and when:
//! - `READY=1` once the control socket is bound and the database is ready;
//! - `STATUS=` the scheduler's state in `silica-cron status`'s words, sent when it changes;
//! - `RELOADING=1` with `MONOTONIC_USEC=` (as `Type=notify-reload` wants) when the
//!   configuration is re-read, then `READY=1` when done;
//! - `STOPPING=1` when told to stop;
//! - `WATCHDOG=1` from the scheduler loop at half of `$WATCHDOG_USEC`, only when systemd asked
//!   for a watchdog (and `$WATCHDOG_PID`, if set, is this process): otherwise nothing wakes.
//!
//! [`init`] takes the variables out of the environment, so nothing the daemon starts (jobs,
//! helpers) inherits the service plumbing. Sends are best-effort: without a service manager
//! every call is a no-op.

use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing::{debug, warn};

/// The variables [`init`] reads and removes.
const VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract address (@name); not notifying the service manager")]
    BadAddress(String),
    #[error("WATCHDOG_USEC={0:?} is not a positive number of microseconds; no watchdog pings")]
    BadWatchdog(String),
}

/// Where notifications go, as `$NOTIFY_SOCKET` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// What the environment asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub target: Option<Target>,
    /// `$WATCHDOG_USEC`, when the watchdog is meant for this process.
    pub watchdog: Option<Duration>,
    /// Problems worth a warning (the daemon runs on without what they concern).
    pub problems: Vec<NotifyError>,
}

impl Config {
    /// Interprets the variables as sd_notify(3) and sd_watchdog_enabled(3) do. `get` returns a
    /// variable's value; `pid` is this process's.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>, pid: u32) -> Config {
        let mut config = Config::default();
        match get("NOTIFY_SOCKET") {
            None => {}
            Some(v) if v.is_empty() => {}
            Some(v) => {
                let bytes = v.as_bytes();
                match bytes[0] {
                    b'/' => config.target = Some(Target::Path(PathBuf::from(v))),
                    b'@' => config.target = Some(Target::Abstract(bytes[1..].to_vec())),
                    _ => config
                        .problems
                        .push(NotifyError::BadAddress(v.to_string_lossy().into_owned())),
                }
            }
        }
        // A watchdog for another process (WATCHDOG_PID names it) is not ours to feed.
        let for_us = match get("WATCHDOG_PID") {
            Some(p) => p.to_str().and_then(|p| p.trim().parse::<u32>().ok()) == Some(pid),
            None => true,
        };
        if let Some(v) = get("WATCHDOG_USEC").filter(|_| for_us) {
            match v.to_str().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(us) if us > 0 => config.watchdog = Some(Duration::from_micros(us)),
                _ => config
                    .problems
                    .push(NotifyError::BadWatchdog(v.to_string_lossy().into_owned())),
            }
        }
        // Pings that cannot be sent are no watchdog.
        if config.target.is_none() {
            config.watchdog = None;
        }
        config
    }
}

struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    status: Mutex<Status>,
    warned: AtomicBool,
}

/// What STATUS= says: the daemon's state, plus why the last reload failed until one succeeds.
#[derive(Default)]
struct Status {
    state: String,
    reload_error: Option<String>,
    /// The last STATUS= sent, so an unchanged one is not sent again.
    sent: String,
    /// Once stopping, the scheduler's last words do not replace "stopping".
    stopping: bool,
}

impl Status {
    fn line(&self) -> String {
        match &self.reload_error {
            Some(e) => format!("{} (last reload failed: {e})", self.state),
            None => self.state.clone(),
        }
    }
}

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();
static WATCHDOG: OnceLock<Duration> = OnceLock::new();

/// Reads the notification variables and removes them from the environment. Call once, before
/// the daemon starts any thread (changing the environment is not thread-safe).
pub fn init() {
    let config = Config::from_vars(|k| std::env::var_os(k), std::process::id());
    for var in VARS {
        std::env::remove_var(var);
    }
    for problem in &config.problems {
        warn!("{problem}");
    }
    let Some(target) = config.target else { return };
    let addr = match &target {
        Target::Path(p) => SocketAddr::from_pathname(p),
        Target::Abstract(name) => SocketAddr::from_abstract_name(name),
    };
    let socket = UnixDatagram::unbound().and_then(|s| {
        // A service manager that stops reading must not stall the daemon's threads.
        s.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(s)
    });
    match (socket, addr) {
        (Ok(socket), Ok(addr)) => {
            let _ = NOTIFIER.set(Notifier {
                socket,
                addr,
                status: Mutex::new(Status::default()),
                warned: AtomicBool::new(false),
            });
            if let Some(w) = config.watchdog {
                let _ = WATCHDOG.set(w);
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, target = ?target, "cannot notify the service manager")
        }
    }
}

/// Sends one message (`KEY=value` lines). Best-effort: a failure is logged once.
fn send(message: &str) {
    let Some(n) = NOTIFIER.get() else { return };
    if let Err(e) = n.socket.send_to_addr(message.as_bytes(), &n.addr) {
        if !n.warned.swap(true, Ordering::Relaxed) {
            warn!(error = %e, "cannot notify the service manager");
        } else {
            debug!(error = %e, "cannot notify the service manager");
        }
    }
}

/// One line, as STATUS= must be.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn status_of(n: &Notifier) -> std::sync::MutexGuard<'_, Status> {
    n.status.lock().unwrap_or_else(|p| p.into_inner())
}

/// The daemon is ready (the control socket is bound and the database is ready); `state` is
/// its state for STATUS=.
pub fn ready(state: &str) {
    let Some(n) = NOTIFIER.get() else { return };
    let mut st = status_of(n);
    st.state = one_line(state);
    st.sent = st.line();
    send(&format!("READY=1\nSTATUS={}", st.sent));
}

/// The daemon's state for `systemctl status`; not sent again while it stays the same.
pub fn status(state: &str) {
    let Some(n) = NOTIFIER.get() else { return };
    let mut st = status_of(n);
    if st.stopping {
        return;
    }
    st.state = one_line(state);
    let line = st.line();
    if st.sent != line {
        send(&format!("STATUS={line}"));
        st.sent = line;
    }
}

/// The configuration is being re-read; [`reloaded`] follows.
pub fn reloading() {
    let Some(n) = NOTIFIER.get() else { return };
    let mut st = status_of(n);
    st.sent = "reloading the configuration".into();
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={}",
        monotonic_usec(),
        st.sent
    ));
}

/// The reload is over: READY=1 again. A failure stays in the status line until a reload
/// succeeds (the previous configuration is still in force).
pub fn reloaded(error: Option<&str>) {
    let Some(n) = NOTIFIER.get() else { return };
    let mut st = status_of(n);
    st.reload_error = error.map(one_line);
    st.sent = st.line();
    send(&format!("READY=1\nSTATUS={}", st.sent));
}

/// The daemon is stopping.
pub fn stopping(state: &str) {
    let Some(n) = NOTIFIER.get() else { return };
    let mut st = status_of(n);
    st.stopping = true;
    st.state = one_line(state);
    st.sent = st.state.clone();
    send(&format!("STOPPING=1\nSTATUS={}", st.sent));
}

/// Feeds the watchdog.
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// How often to feed the watchdog (half its timeout), or `None` when there is none.
pub fn watchdog_interval() -> Option<Duration> {
    WATCHDOG.get().map(|w| *w / 2)
}

/// CLOCK_MONOTONIC in microseconds, which `RELOADING=1` carries so systemd ≥ 253 can tell this
/// reload from an earlier one.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid, owned timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The scheduler loop's watchdog clock: ticks at [`watchdog_interval`], and never when there
/// is no watchdog, so an idle daemon without one has no wake-ups.
pub struct Ticker(Option<tokio::time::Interval>);

impl Ticker {
    pub fn new() -> Ticker {
        Ticker(watchdog_interval().map(|every| {
            let mut t = tokio::time::interval(every);
            // After a long busy stretch, one ping, then the regular rhythm again.
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        }))
    }

    pub async fn tick(&mut self) {
        match &mut self.0 {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Pings from a helper thread while the daemon is busy with something long that is progress,
/// not a hang; stops when dropped.
pub struct Keepalive {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keepalive {
    /// While the daemon starts (waiting for a one-shot migration's lock, upgrading the
    /// database in production): extends the service manager's start timeout, so a long
    /// upgrade is not killed half way by `TimeoutStartSec=`.
    pub fn starting() -> Keepalive {
        Keepalive::every(NOTIFIER.get().map(|_| Duration::from_secs(10)), || {
            send("EXTEND_TIMEOUT_USEC=30000000")
        })
    }

    /// While a migration holds the database: the scheduler loop may wait for the database
    /// (legitimately) longer than the watchdog allows; the migration itself is the progress.
    pub fn migrating() -> Keepalive {
        Keepalive::every(watchdog_interval(), watchdog)
    }

    /// Calls `ping` at once and then every `period` until dropped; nothing without a period.
    fn every(period: Option<Duration>, ping: impl Fn() + Send + 'static) -> Keepalive {
        let Some(period) = period else {
            return Keepalive {
                stop: None,
                thread: None,
            };
        };
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keepalive".into())
            .spawn(move || {
                ping();
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(period)
                {
                    ping();
                }
            })
            .map_err(|e| warn!(error = %e, "cannot start the keepalive thread"))
            .ok();
        Keepalive {
            stop: Some(tx),
            thread,
        }
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn addresses() {
        let c = Config::from_vars(vars(&[("NOTIFY_SOCKET", "/run/systemd/notify")]), 7);
        assert_eq!(c.target, Some(Target::Path("/run/systemd/notify".into())));
        let c = Config::from_vars(vars(&[("NOTIFY_SOCKET", "@/org/x/notify")]), 7);
        assert_eq!(c.target, Some(Target::Abstract(b"/org/x/notify".to_vec())));
        let c = Config::from_vars(vars(&[("NOTIFY_SOCKET", "relative")]), 7);
        assert_eq!(c.target, None);
        assert_eq!(c.problems, vec![NotifyError::BadAddress("relative".into())]);
        assert_eq!(Config::from_vars(vars(&[]), 7), Config::default());
    }

    #[test]
    fn watchdog_is_ours_only_when_the_pid_matches() {
        let sock = ("NOTIFY_SOCKET", "/n");
        let c = Config::from_vars(vars(&[sock, ("WATCHDOG_USEC", "3000000")]), 7);
        assert_eq!(c.watchdog, Some(Duration::from_secs(3)));
        let c = Config::from_vars(
            vars(&[sock, ("WATCHDOG_USEC", "3000000"), ("WATCHDOG_PID", "7")]),
            7,
        );
        assert_eq!(c.watchdog, Some(Duration::from_secs(3)));
        let c = Config::from_vars(
            vars(&[sock, ("WATCHDOG_USEC", "3000000"), ("WATCHDOG_PID", "8")]),
            7,
        );
        assert_eq!(c.watchdog, None);
        assert!(c.problems.is_empty());
        let c = Config::from_vars(vars(&[sock, ("WATCHDOG_USEC", "0")]), 7);
        assert_eq!(c.watchdog, None);
        assert_eq!(c.problems, vec![NotifyError::BadWatchdog("0".into())]);
        // No socket to ping: no watchdog.
        let c = Config::from_vars(vars(&[("WATCHDOG_USEC", "3000000")]), 7);
        assert_eq!(c.watchdog, None);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn keepalive_pings_until_dropped() {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let k = {
            let count = count.clone();
            Keepalive::every(Some(Duration::from_millis(10)), move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(k);
        let at_drop = count.load(Ordering::SeqCst);
        assert!(at_drop >= 3, "{at_drop} pings in 100 ms at a 10 ms period");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            count.load(Ordering::SeqCst),
            at_drop,
            "pings after the drop"
        );
        // No period (no watchdog): no thread, no pings.
        let count2 = count.clone();
        drop(Keepalive::every(None, move || {
            count2.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(count.load(Ordering::SeqCst), at_drop);
    }

    #[test]
    fn a_failed_reload_stays_in_the_status_until_one_succeeds() {
        let mut st = Status {
            state: "scheduler: running".into(),
            ..Status::default()
        };
        assert_eq!(st.line(), "scheduler: running");
        st.reload_error = Some("bad key".into());
        assert_eq!(
            st.line(),
            "scheduler: running (last reload failed: bad key)"
        );
        st.state = "scheduler: held: needs migration".into();
        assert_eq!(
            st.line(),
            "scheduler: held: needs migration (last reload failed: bad key)"
        );
    }
}
