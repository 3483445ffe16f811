//! The control socket: binding (with a probe before removing a stale file), accepting within a
//! connection limit, the per-connection protocol (hello, requests, streamed replies), and
//! graceful shutdown that lets requests in flight finish.
//!
//! Connections are accepted on the async runtime, and each is then answered on a thread of its
//! own with blocking I/O. Measured (README, "Control connections on threads"): on the runtime's
//! workers, a connection whose client sent its next request while the reply was being written
//! kept its worker for up to about 64 round trips (tokio's cooperative budget), and the other
//! connections queued behind it waited 1 to 8 ms. With a thread each, the kernel interleaves
//! them after every request.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::traits::StreamCommon;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use proto::frame::{self, FrameError};
use proto::message::{
    ClientMsg, ErrorKind, ErrorReply, Exit, LogItem, LogsRequest, Output, Request, ServerMsg,
};
use proto::records::{JobOp, PromptOp, Reply};
use proto::PROTOCOL_VERSION;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::logbus::Filter;
use crate::state::Shared;

/// A request is small; only replies may approach `frame::MAX_FRAME`.
const MAX_REQUEST: usize = 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Per connection: a request's header and payload usually arrive in one read. Small, because a
/// thousand idle connections each hold one.
const READ_BUFFER: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("socket path {0} exists and is not a socket; refusing to remove it")]
    NotASocket(String),
    #[error("socket path {0} is in use: another process accepts connections on it")]
    InUse(String),
    #[error("cannot bind control socket {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Binds the socket with owner-only permissions. A socket file left by a crash is removed only
/// after a connect to it is refused; a live one, or anything that is not a socket, is left alone.
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display().to_string();
    let io_err = |source| BindError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket(shown)),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(shown)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                info!(socket = %shown, "removing stale socket file left by a previous run");
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let name = path.to_fs_name::<GenericFilePath>().map_err(io_err)?;
    ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()
        .map_err(io_err)
}

/// Accepts until `shutdown` turns true, then waits for requests in flight.
pub async fn serve(listener: Listener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let max = shared.max_connections();
    if max < shared.configured_connections() {
        warn!(
            max_connections = shared.configured_connections(),
            allowed = max,
            "the open-files limit (RLIMIT_NOFILE) has room for fewer control connections than max_connections; more are refused"
        );
    }
    let slots = Arc::new(Semaphore::new(max));
    let open = Arc::new(Open::default());
    let runtime = Handle::current();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        if let Err(e) = start(stream, &shared, &runtime, &open, permit) {
                            debug!(error = %e, "control connection dropped");
                        }
                    }
                    Err(_) => warn!(limit = max, "too many control connections; refusing one"),
                },
                Err(e) => {
                    // Out of file descriptors and the like: refuse, wait a little, go on.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    // Idle connections end now; one with a request in flight ends once its reply is written.
    open.stop_reading();
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

/// The connections being served, so that a stopping daemon can end their reads.
#[derive(Default)]
struct Open {
    conns: Mutex<(u64, HashMap<u64, Arc<UnixStream>>)>,
}

impl Open {
    fn insert(self: &Arc<Self>, stream: Arc<UnixStream>) -> Registered {
        let mut g = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let id = g.0;
        g.0 += 1;
        g.1.insert(id, stream);
        Registered {
            open: self.clone(),
            id,
        }
    }

    /// A blocked read returns end-of-file; writes still work, so replies in flight complete.
    fn stop_reading(&self) {
        let g = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for s in g.1.values() {
            let _ = s.shutdown(Shutdown::Read);
        }
    }
}

/// Leaves the registry when the connection ends, however it ends (a panic included): the
/// registry holds the socket open.
struct Registered {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut g = self.open.conns.lock().unwrap_or_else(|p| p.into_inner());
        g.1.remove(&self.id);
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("peer uid {0} is neither the daemon's uid {1} nor root")]
    Peer(u32, u32),
    #[error("peer credentials unavailable: {0}")]
    Creds(io::Error),
    #[error("cannot take the connection off the runtime: {0}")]
    Detach(io::Error),
    #[error("cannot start a thread for the connection: {0}")]
    Thread(io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("timed out")]
    Timeout,
    #[error("client speaks protocol {0}, daemon {PROTOCOL_VERSION}")]
    Version(u32),
}

/// Checks the peer, then serves the connection on a thread of its own, which holds `permit`
/// until the connection ends.
fn start(
    stream: Stream,
    shared: &Arc<Shared>,
    runtime: &Handle,
    open: &Arc<Open>,
    permit: OwnedSemaphorePermit,
) -> Result<(), ConnError> {
    let creds = stream.peer_creds().map_err(ConnError::Creds)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    // Root is let in too: it can read the database file anyway, and operators of a system
    // service (which runs as its own user) use `sudo silica-cron ...`.
    if creds.euid() != Some(me) && creds.euid() != Some(0) {
        let uid = creds.euid().unwrap_or(u32::MAX);
        warn!(peer_uid = uid, peer_pid = ?creds.pid(), "refused a control connection from another user");
        return Err(ConnError::Peer(uid, me));
    }
    let stream = Arc::new(into_blocking(stream).map_err(ConnError::Detach)?);
    let registered = open.insert(stream.clone());
    let (shared, runtime) = (shared.clone(), runtime.clone());
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            if let Err(e) = connection(&stream, &shared, &runtime) {
                debug!(error = %e, "control connection dropped");
            }
            // Closed before its slot is given back.
            drop(registered);
            drop(stream);
            drop(permit);
        })
        .map_err(|e| {
            warn!(error = %e, "cannot start a thread for a control connection; refusing it");
            ConnError::Thread(e)
        })?;
    Ok(())
}

/// The accepted socket as a blocking stream, out of the runtime's reactor.
fn into_blocking(stream: Stream) -> io::Result<UnixStream> {
    let Stream::UdSocket(s) = stream;
    let s = UnixStream::from(OwnedFd::try_from(s)?);
    s.set_nonblocking(false)?;
    Ok(s)
}

fn connection(sock: &UnixStream, shared: &Arc<Shared>, runtime: &Handle) -> Result<(), ConnError> {
    let mut conn = Conn::new(sock);
    let hello = conn.read_payload(frame::HELLO_LEN, HANDSHAKE_TIMEOUT)?;
    let version = frame::parse_hello(&hello)?;
    conn.write(&frame::hello(PROTOCOL_VERSION))?;
    if version != PROTOCOL_VERSION {
        warn!(
            "a client speaking protocol {version} connected; this daemon speaks {PROTOCOL_VERSION}"
        );
        return Err(ConnError::Version(version));
    }
    loop {
        let payload = match conn.read_payload(MAX_REQUEST, IDLE_TIMEOUT) {
            Err(ConnError::Frame(FrameError::Closed)) => return Ok(()),
            other => other?,
        };
        let msg: ClientMsg = match frame::decode(&payload) {
            Ok(m) => m,
            Err(e) => {
                let reply = ErrorReply::new(
                    ErrorKind::InvalidArgument,
                    format!("malformed request: {e}"),
                );
                conn.send(&ServerMsg::Done(Err(reply)))?;
                return Err(e.into());
            }
        };
        let ClientMsg::Request(req) = msg;
        crate::metrics::socket_request(&req);
        respond(&mut conn, shared, runtime, req)?;
    }
}

/// Runs `f`; a panic becomes an internal error reply instead of ending the connection unanswered.
fn contained<T>(f: impl FnOnce() -> Result<T, ErrorReply>) -> Result<T, ErrorReply> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(ErrorReply::new(ErrorKind::Internal, what))
    })
}

fn respond(
    conn: &mut Conn<'_>,
    shared: &Arc<Shared>,
    runtime: &Handle,
    req: Request,
) -> Result<(), ConnError> {
    match req {
        Request::Status => {
            let msg = match contained(|| shared.status()) {
                Ok(info) => ServerMsg::Status(Box::new(info)),
                Err(e) => ServerMsg::Done(Err(e)),
            };
            conn.send(&msg)
        }
        Request::Prompt(PromptOp::Run { wait, .. }) | Request::Job(JobOp::Run { wait, .. }) => {
            let execution = match contained(|| shared.records(&req)) {
                Ok(Reply::Started { execution }) => execution,
                Ok(_) => {
                    return conn.send(&ServerMsg::Done(Err(ErrorReply::new(
                        ErrorKind::Internal,
                        "unexpected reply",
                    ))))
                }
                Err(e) => return conn.send(&ServerMsg::Done(Err(e))),
            };
            conn.send(&ServerMsg::Reply(Box::new(Reply::Started { execution })))?;
            manual_run(conn, shared, runtime, execution, wait)
        }
        Request::Prompt(_) | Request::Job(_) | Request::Execution(_) => {
            match contained(|| shared.records(&req)) {
                Ok(reply) => {
                    conn.send(&ServerMsg::Reply(Box::new(reply)))?;
                    conn.send(&ServerMsg::Done(Ok(Exit::OK)))
                }
                Err(e) => conn.send(&ServerMsg::Done(Err(e))),
            }
        }
        Request::Logs(r) => logs(conn, shared, &r),
        Request::Reload => {
            let reply = shared.reload().map(|()| Exit::OK);
            conn.send(&ServerMsg::Done(reply))
        }
        Request::Pause | Request::Resume => {
            let result = contained(|| {
                if matches!(req, Request::Pause) {
                    shared.pause()
                } else {
                    shared.resume()
                }
            });
            match result {
                Ok(line) => {
                    conn.send(&ServerMsg::Output(Output::Stdout(line)))?;
                    conn.send(&ServerMsg::Done(Ok(Exit::OK)))
                }
                Err(e) => conn.send(&ServerMsg::Done(Err(e))),
            }
        }
        Request::Backup(b) => match contained(|| shared.backup(&b)) {
            Ok(written) => {
                let line = crate::backup::report(&written, b.json);
                conn.send(&ServerMsg::Output(Output::Stdout(line)))?;
                conn.send(&ServerMsg::Done(Ok(Exit::OK)))
            }
            Err(e) => conn.send(&ServerMsg::Done(Err(e))),
        },
        Request::Restore(r) => {
            // As for migrations: lines go out as they come, and a client that goes away does
            // not stop the restore half way.
            let mut client_ok = true;
            let result = contained(|| {
                shared.restore(&r, runtime, &mut |line| {
                    if client_ok && conn.send(&ServerMsg::Output(line)).is_err() {
                        client_ok = false;
                    }
                })
            });
            if !client_ok {
                return Err(ConnError::Timeout);
            }
            conn.send(&ServerMsg::Done(result))
        }
        Request::Migrate(m) => {
            // Lines go out as they come. If the client goes away (or stalls past the write
            // timeout), the migration still runs to its end (a step is never abandoned half
            // way), and its lines are dropped.
            let mut client_ok = true;
            let result = contained(|| {
                shared.migrate(&m, &mut |line| {
                    if client_ok && conn.send(&ServerMsg::Output(line)).is_err() {
                        client_ok = false;
                    }
                })
            });
            if !client_ok {
                return Err(ConnError::Timeout);
            }
            conn.send(&ServerMsg::Done(result))
        }
    }
}

/// Starts a recorded manual run (outside the concurrency limit: a person asked for it). With
/// `wait`, its output is streamed as lines, and the final frame carries its result.
fn manual_run(
    conn: &mut Conn<'_>,
    shared: &Arc<Shared>,
    runtime: &Handle,
    execution: i64,
    wait: bool,
) -> Result<(), ConnError> {
    if !wait {
        runtime.spawn(crate::scheduler::run::execute(
            shared.clone(),
            execution,
            runner::Cancel::new(),
            runner::Live::default(),
        ));
        return conn.send(&ServerMsg::Done(Ok(Exit::OK)));
    }
    let (tx, mut rx) = broadcast::channel(1024);
    let live = runner::Live {
        output: Some(tx),
        ..Default::default()
    };
    let run = runtime.spawn(crate::scheduler::run::execute(
        shared.clone(),
        execution,
        runner::Cancel::new(),
        live,
    ));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut client_ok = true;
    loop {
        match rx.blocking_recv() {
            Ok(chunk) => {
                let (buf, stdout) = match chunk.stream {
                    runner::Stream::Stdout => (&mut out, true),
                    runner::Stream::Stderr => (&mut err, false),
                };
                buf.extend_from_slice(&chunk.data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line = String::from_utf8_lossy(&buf[..nl]).into_owned();
                    buf.drain(..=nl);
                    let o = if stdout {
                        Output::Stdout(line)
                    } else {
                        Output::Stderr(line)
                    };
                    if client_ok && conn.send(&ServerMsg::Output(o)).is_err() {
                        client_ok = false;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let note = Output::Stderr(format!(
                    "[silica-cron: {n} chunks of output skipped: this client read too slowly]"
                ));
                if client_ok && conn.send(&ServerMsg::Output(note)).is_err() {
                    client_ok = false;
                }
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    for (rest, stdout) in [(out, true), (err, false)] {
        if !rest.is_empty() && client_ok {
            let line = String::from_utf8_lossy(&rest).into_owned();
            let _ = conn.send(&ServerMsg::Output(if stdout {
                Output::Stdout(line)
            } else {
                Output::Stderr(line)
            }));
        }
    }
    // The output ends when the process does; the run records its outcome just after.
    let _ = runtime.block_on(run);
    let outcome = contained(|| {
        shared
            .with_conn(move |c| {
                c.query_row(
                    "SELECT status, coalesce(error_message, 'exit code ' || exit_code) FROM job_executions WHERE id = ?1",
                    [execution],
                    |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?)),
                )
            })
            .map_err(|e| ErrorReply::new(ErrorKind::Database, e))
    });
    if !client_ok {
        return Err(ConnError::Timeout);
    }
    let (status, detail) = outcome.unwrap_or_default();
    let status = status.unwrap_or_default();
    if status == "completed" {
        return conn.send(&ServerMsg::Done(Ok(Exit::OK)));
    }
    // The output alone does not say why the run did not complete (a start that could not be
    // recorded has none at all).
    let why = match (status.as_str(), detail) {
        ("", _) => format!("execution {execution}: its outcome could not be read"),
        (status, Some(detail)) => format!("execution {execution} {status}: {detail}"),
        (status, None) => format!("execution {execution} {status}"),
    };
    conn.send(&ServerMsg::Output(Output::Stderr(why)))?;
    conn.send(&ServerMsg::Done(Ok(Exit::NOT_OK)))
}

/// `silica-cron logs`: recent lines from the ring, then with `follow` new lines as they come
/// until the client goes away (or, with `execution`, until that run ends).
fn logs(conn: &mut Conn<'_>, shared: &Arc<Shared>, req: &LogsRequest) -> Result<(), ConnError> {
    let job = match &req.job {
        None => None,
        // Manual runs of a prompt are `manual:<prompt>` in the lines; no job row to look up.
        Some(key) if key.starts_with("manual:") => Some(key.clone()),
        Some(key) => {
            match contained(|| shared.read_records(|c| crate::records::job_name(c, key))) {
                Ok(name) => Some(name),
                // Not at head: no jobs to look up; the lines may still name it.
                Err(e) if e.kind == ErrorKind::Refused => Some(key.clone()),
                Err(e) => return conn.send(&ServerMsg::Done(Err(e))),
            }
        }
    };
    let filter = Filter {
        level: req.level,
        job,
        execution: req.execution,
    };
    let bus = crate::logbus::bus();
    let Some(execution) = req.execution else {
        let n = req.lines as usize;
        if !req.follow {
            for e in bus.recent(&filter, n) {
                conn.send(&ServerMsg::Log(LogItem::Line(e.line.clone())))?;
            }
            return conn.send(&ServerMsg::Done(Ok(Exit::OK)));
        }
        let (recent, sub) = match bus.follow(filter, n) {
            Ok(f) => f,
            Err(e) => return conn.send(&ServerMsg::Done(Err(cannot_follow(e)))),
        };
        for e in recent {
            conn.send(&ServerMsg::Log(LogItem::Line(e.line.clone())))?;
        }
        return follow(conn, sub);
    };
    // Attached before the row is read: a run that ends in between still ends the stream.
    let sub = match req.follow.then(|| bus.follow(filter, 0)).transpose() {
        Ok(s) => s.map(|(_, sub)| sub),
        Err(e) => return conn.send(&ServerMsg::Done(Err(cannot_follow(e)))),
    };
    let recorded =
        contained(|| shared.read_records(|c| crate::records::execution_output(c, execution)));
    match (recorded, sub) {
        (Err(e), _) => conn.send(&ServerMsg::Done(Err(e))),
        (Ok(Some(lines)), _) => {
            for l in lines {
                conn.send(&ServerMsg::Log(LogItem::Line(l)))?;
            }
            conn.send(&ServerMsg::Done(Ok(Exit::OK)))
        }
        (Ok(None), Some(sub)) => follow(conn, sub),
        (Ok(None), None) => {
            let note = format!("execution {execution} has not ended: its output is recorded when it does; follow it live with: silica-cron logs -f --execution {execution}");
            conn.send(&ServerMsg::Output(Output::Stderr(note)))?;
            conn.send(&ServerMsg::Done(Ok(Exit::OK)))
        }
    }
}

fn cannot_follow(e: io::Error) -> ErrorReply {
    ErrorReply::new(ErrorKind::Internal, format!("cannot follow the log: {e}"))
}

/// Streams what the subscription gets until the run it follows ends or the client goes away.
/// Only this thread waits on a slow client; the bus drops lines for it and counts them.
fn follow(conn: &mut Conn<'_>, sub: crate::logbus::Subscription) -> Result<(), ConnError> {
    use std::os::fd::AsFd;
    loop {
        let (items, missed) = sub.take();
        for e in items {
            if e.run_ended {
                return conn.send(&ServerMsg::Done(Ok(Exit::OK)));
            }
            conn.send(&ServerMsg::Log(LogItem::Line(e.line.clone())))?;
        }
        if missed > 0 {
            conn.send(&ServerMsg::Log(LogItem::Missed(missed)))?;
        }
        match sub.wait(Some(conn.sock.as_fd()), -1) {
            Ok(crate::logbus::Wake::Lines | crate::logbus::Wake::Timeout) => {}
            // The client hung up (Ctrl-C), or the daemon is stopping and shut the reading side.
            // A final frame for the latter; the former no longer hears it.
            Ok(crate::logbus::Wake::Peer) | Err(_) => break,
        }
    }
    drop(sub);
    let _ = conn.send(&ServerMsg::Done(Ok(Exit::OK)));
    // Nothing more is read from a connection that followed: end it.
    Err(ConnError::Frame(FrameError::Closed))
}

/// One connection's blocking socket. Each frame has a deadline as a whole (a client trickling a
/// byte at a time does not extend it); the socket's own timeouts (SO_RCVTIMEO, SO_SNDTIMEO) are
/// only re-armed when they would let a call block past that deadline, so the usual request
/// costs no extra system call.
struct Conn<'a> {
    rd: BufReader<DeadlineReader<'a>>,
    sock: &'a UnixStream,
    send_armed: Option<Duration>,
}

struct DeadlineReader<'a> {
    sock: &'a UnixStream,
    deadline: Instant,
    armed: Option<Duration>,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if self.armed.is_none_or(|a| a > left) {
                self.sock.set_read_timeout(Some(left))?;
                self.armed = Some(left);
            }
            match (&mut &*self.sock).read(buf) {
                // The socket's timeout ran out before the deadline (it was armed for an
                // earlier, shorter one): arm it for what is left.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.armed = None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl<'a> Conn<'a> {
    fn new(sock: &'a UnixStream) -> Conn<'a> {
        let rd = DeadlineReader {
            sock,
            deadline: Instant::now(),
            armed: None,
        };
        Conn {
            rd: BufReader::with_capacity(READ_BUFFER, rd),
            sock,
            send_armed: None,
        }
    }

    /// One frame's payload, all of it within `limit` from now. Memory grows with the bytes that
    /// actually arrive, never with the length a client claims.
    fn read_payload(&mut self, limit: usize, within: Duration) -> Result<Vec<u8>, ConnError> {
        self.rd.get_mut().deadline = Instant::now() + within;
        read_payload(&mut self.rd, limit).map_err(|e| match e {
            FrameError::Io(e) if e.kind() == io::ErrorKind::TimedOut => ConnError::Timeout,
            e => e.into(),
        })
    }

    fn send(&mut self, msg: &ServerMsg) -> Result<(), ConnError> {
        self.write(&frame::encode(msg)?)
    }

    /// The whole frame in one write when the socket buffer takes it, within the write timeout.
    fn write(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.write_within(bytes, WRITE_TIMEOUT)
    }

    fn write_within(&mut self, bytes: &[u8], within: Duration) -> Result<(), ConnError> {
        let deadline = Instant::now() + within;
        let mut rest = bytes;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnError::Timeout);
            }
            if self.send_armed.is_none_or(|a| a > left) {
                self.sock
                    .set_write_timeout(Some(left))
                    .map_err(|e| ConnError::Frame(e.into()))?;
                self.send_armed = Some(left);
            }
            match (&mut &*self.sock).write(rest) {
                Ok(0) => return Err(ConnError::Frame(FrameError::Truncated)),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.send_armed = None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Frame(e.into())),
            }
        }
        Ok(())
    }
}

fn read_payload<R: Read>(r: &mut R, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; frame::HEADER_LEN];
    loop {
        match r.read(&mut header[..1]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    r.read_exact(&mut header[1..]).map_err(eof_is_truncation)?;
    let len = frame::payload_len(header)?;
    if len > limit {
        return Err(FrameError::TooLarge(len as u64));
    }
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let n = r.take(len as u64).read_to_end(&mut buf)?;
    if n < len {
        return Err(FrameError::Truncated);
    }
    Ok(buf)
}

fn eof_is_truncation(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client trickling a byte at a time does not extend a frame's deadline.
    #[test]
    fn a_frame_has_one_deadline_however_slowly_it_trickles() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let trickle = std::thread::spawn(move || {
            let mut frame = 10u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&[0; 10]);
            for b in frame {
                if (&theirs).write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut conn = Conn::new(&ours);
        let started = Instant::now();
        let r = conn.read_payload(MAX_REQUEST, Duration::from_millis(300));
        let took = started.elapsed();
        assert!(matches!(r, Err(ConnError::Timeout)), "{r:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(ours);
        trickle.join().unwrap();
    }

    /// A deadline longer than the one the socket was last armed for is still met: the read
    /// that the shorter socket timeout ends early is started again for what is left.
    #[test]
    fn a_longer_deadline_after_a_shorter_one_waits_its_full_length() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(&ours);
        (&theirs)
            .write_all(&frame::hello(PROTOCOL_VERSION))
            .unwrap();
        let hello = conn
            .read_payload(frame::HELLO_LEN, Duration::from_millis(100))
            .unwrap();
        assert_eq!(frame::parse_hello(&hello).unwrap(), PROTOCOL_VERSION);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            (&theirs).write_all(&[0, 0, 0, 2, 7, 7]).unwrap();
            theirs
        });
        let started = Instant::now();
        let payload = conn
            .read_payload(MAX_REQUEST, Duration::from_secs(5))
            .unwrap();
        assert_eq!(payload, [7, 7]);
        assert!(started.elapsed() >= Duration::from_millis(350));
        drop(late.join().unwrap());
        // The peer hung up: a clean close, not an error.
        assert!(matches!(
            conn.read_payload(MAX_REQUEST, Duration::from_secs(5)),
            Err(ConnError::Frame(FrameError::Closed))
        ));
    }

    /// A client that stops reading is dropped once a reply has waited the write timeout.
    #[test]
    fn a_reply_nobody_reads_gives_up_at_its_deadline() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(&ours);
        let started = Instant::now();
        let r = conn.write_within(&vec![0u8; 8 << 20], Duration::from_millis(300));
        let took = started.elapsed();
        assert!(matches!(r, Err(ConnError::Timeout)), "{r:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn oversized_frames_are_refused_before_their_payload() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (&theirs)
            .write_all(&((MAX_REQUEST + 1) as u32).to_be_bytes())
            .unwrap();
        let mut conn = Conn::new(&ours);
        assert!(matches!(
            conn.read_payload(MAX_REQUEST, Duration::from_secs(5)),
            Err(ConnError::Frame(FrameError::TooLarge(_)))
        ));
    }
}
