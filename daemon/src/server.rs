//! The control socket: binding (with a probe before removing a stale file), accepting within a
//! connection limit, the per-connection protocol (hello, requests, streamed replies), and
//! graceful shutdown that lets requests in flight finish.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::traits::StreamCommon;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use proto::frame::{self, FrameError};
use proto::message::{ClientMsg, ErrorKind, ErrorReply, Exit, Output, Request, ServerMsg};
use proto::records::{JobOp, PromptOp, Reply};
use proto::PROTOCOL_VERSION;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use crate::state::Shared;

/// A request is small; only replies may approach `frame::MAX_FRAME`.
const MAX_REQUEST: usize = 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

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
    let slots = Arc::new(Semaphore::new(max));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = shared.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            if let Err(e) = connection(stream, &shared, shutdown).await {
                                debug!(error = %e, "control connection dropped");
                            }
                            drop(permit);
                        });
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
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("peer uid {0} is not the daemon's uid {1}")]
    Peer(u32, u32),
    #[error("peer credentials unavailable: {0}")]
    Creds(io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("timed out")]
    Timeout,
    #[error("client speaks protocol {0}, daemon {PROTOCOL_VERSION}")]
    Version(u32),
}

async fn connection(
    stream: Stream,
    shared: &Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let creds = stream.peer_creds().map_err(ConnError::Creds)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if creds.euid() != Some(me) {
        let uid = creds.euid().unwrap_or(u32::MAX);
        warn!(peer_uid = uid, peer_pid = ?creds.pid(), "refused a control connection from another user");
        return Err(ConnError::Peer(uid, me));
    }
    // Buffered: a request's header and payload usually arrive in one read.
    let mut rd = tokio::io::BufReader::with_capacity(16 * 1024, &stream);
    let hello = timed(HANDSHAKE_TIMEOUT, read_payload(&mut rd, frame::HELLO_LEN)).await??;
    let version = frame::parse_hello(&hello)?;
    write(&stream, &frame::hello(PROTOCOL_VERSION)).await?;
    if version != PROTOCOL_VERSION {
        warn!(
            "a client speaking protocol {version} connected; this daemon speaks {PROTOCOL_VERSION}"
        );
        return Err(ConnError::Version(version));
    }
    loop {
        let payload = tokio::select! {
            r = timed(IDLE_TIMEOUT, read_payload(&mut rd, MAX_REQUEST)) => r?,
            _ = shutdown.changed() => return Ok(()),
        };
        let payload = match payload {
            Err(FrameError::Closed) => return Ok(()),
            other => other?,
        };
        let msg: ClientMsg = match frame::decode(&payload) {
            Ok(m) => m,
            Err(e) => {
                let reply = ErrorReply::new(
                    ErrorKind::InvalidArgument,
                    format!("malformed request: {e}"),
                );
                send(&stream, &ServerMsg::Done(Err(reply))).await?;
                return Err(e.into());
            }
        };
        let ClientMsg::Request(req) = msg;
        respond(&stream, shared, req).await?;
    }
}

async fn respond(stream: &Stream, shared: &Arc<Shared>, req: Request) -> Result<(), ConnError> {
    match req {
        Request::Status => {
            let info = match shared.try_status() {
                Some(info) => info,
                None => {
                    let s = shared.clone();
                    tokio::task::spawn_blocking(move || s.status())
                        .await
                        .unwrap_or_else(|e| {
                            Err(ErrorReply::new(ErrorKind::Internal, e.to_string()))
                        })
                }
            };
            let msg = match info {
                Ok(info) => ServerMsg::Status(Box::new(info)),
                Err(e) => ServerMsg::Done(Err(e)),
            };
            send(stream, &msg).await
        }
        Request::Prompt(PromptOp::Run { wait, .. }) | Request::Job(JobOp::Run { wait, .. }) => {
            let s = shared.clone();
            let result = tokio::task::spawn_blocking(move || s.records(&req))
                .await
                .unwrap_or_else(|e| Err(ErrorReply::new(ErrorKind::Internal, e.to_string())));
            let execution = match result {
                Ok(Reply::Started { execution }) => execution,
                Ok(_) => {
                    return send(
                        stream,
                        &ServerMsg::Done(Err(ErrorReply::new(
                            ErrorKind::Internal,
                            "unexpected reply",
                        ))),
                    )
                    .await
                }
                Err(e) => return send(stream, &ServerMsg::Done(Err(e))).await,
            };
            send(
                stream,
                &ServerMsg::Reply(Box::new(Reply::Started { execution })),
            )
            .await?;
            manual_run(stream, shared, execution, wait).await
        }
        Request::Prompt(_) | Request::Job(_) | Request::Execution(_) => {
            let s = shared.clone();
            let result = tokio::task::spawn_blocking(move || s.records(&req))
                .await
                .unwrap_or_else(|e| Err(ErrorReply::new(ErrorKind::Internal, e.to_string())));
            match result {
                Ok(reply) => {
                    send(stream, &ServerMsg::Reply(Box::new(reply))).await?;
                    send(stream, &ServerMsg::Done(Ok(Exit::OK))).await
                }
                Err(e) => send(stream, &ServerMsg::Done(Err(e))).await,
            }
        }
        Request::Reload => {
            let reply = shared.reload().map(|()| Exit::OK);
            send(stream, &ServerMsg::Done(reply)).await
        }
        Request::Migrate(m) => {
            // Lines flow through a bounded channel; if the client goes away the migration still
            // runs to its end (a step is never abandoned half way), its lines are dropped.
            let (tx, mut rx) = mpsc::channel(256);
            let s = shared.clone();
            let job = tokio::task::spawn_blocking(move || s.migrate(&m, tx));
            let mut client_ok = true;
            while let Some(line) = rx.recv().await {
                if client_ok && send(stream, &ServerMsg::Output(line)).await.is_err() {
                    client_ok = false;
                }
            }
            let result = job
                .await
                .unwrap_or_else(|e| Err(ErrorReply::new(ErrorKind::Internal, e.to_string())));
            if !client_ok {
                return Err(ConnError::Timeout);
            }
            send(stream, &ServerMsg::Done(result)).await
        }
    }
}

/// Starts a recorded manual run (outside the concurrency limit: a person asked for it). With
/// `wait`, its output is streamed as lines, and the final frame carries its result.
async fn manual_run(
    stream: &Stream,
    shared: &Arc<Shared>,
    execution: i64,
    wait: bool,
) -> Result<(), ConnError> {
    if !wait {
        tokio::spawn(crate::scheduler::run::execute(
            shared.clone(),
            execution,
            runner::Cancel::new(),
            runner::Live::default(),
        ));
        return send(stream, &ServerMsg::Done(Ok(Exit::OK))).await;
    }
    let (tx, mut rx) = tokio::sync::broadcast::channel(1024);
    let live = runner::Live {
        output: Some(tx),
        ..Default::default()
    };
    let run = tokio::spawn(crate::scheduler::run::execute(
        shared.clone(),
        execution,
        runner::Cancel::new(),
        live,
    ));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut client_ok = true;
    loop {
        match rx.recv().await {
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
                    if client_ok && send(stream, &ServerMsg::Output(o)).await.is_err() {
                        client_ok = false;
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let note = Output::Stderr(format!(
                    "[silica-cron: {n} chunks of output skipped: this client read too slowly]"
                ));
                if client_ok && send(stream, &ServerMsg::Output(note)).await.is_err() {
                    client_ok = false;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    for (rest, stdout) in [(out, true), (err, false)] {
        if !rest.is_empty() && client_ok {
            let line = String::from_utf8_lossy(&rest).into_owned();
            let _ = send(
                stream,
                &ServerMsg::Output(if stdout {
                    Output::Stdout(line)
                } else {
                    Output::Stderr(line)
                }),
            )
            .await;
        }
    }
    let _ = run.await;
    let s = shared.clone();
    let status = tokio::task::spawn_blocking(move || {
        s.with_conn(move |c| {
            c.query_row(
                "SELECT status FROM job_executions WHERE id = ?1",
                [execution],
                |r| r.get::<_, Option<String>>(0),
            )
        })
    })
    .await
    .ok()
    .and_then(Result::ok)
    .flatten()
    .unwrap_or_default();
    if !client_ok {
        return Err(ConnError::Timeout);
    }
    let exit = if status == "completed" {
        Exit::OK
    } else {
        Exit::NOT_OK
    };
    send(stream, &ServerMsg::Done(Ok(exit))).await
}

async fn timed<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Result<T, ConnError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| ConnError::Timeout)
}

async fn send(stream: &Stream, msg: &ServerMsg) -> Result<(), ConnError> {
    write(stream, &frame::encode(msg)?).await
}

async fn write(mut stream: &Stream, bytes: &[u8]) -> Result<(), ConnError> {
    timed(WRITE_TIMEOUT, stream.write_all(bytes))
        .await?
        .map_err(|e| ConnError::Frame(e.into()))
}

/// One frame's payload. Memory grows with the bytes that actually arrive, never with the length
/// a client claims.
async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; frame::HEADER_LEN];
    if r.read(&mut header[..1]).await? == 0 {
        return Err(FrameError::Closed);
    }
    r.read_exact(&mut header[1..])
        .await
        .map_err(eof_is_truncation)?;
    let len = frame::payload_len(header)?;
    if len > limit {
        return Err(FrameError::TooLarge(len as u64));
    }
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let n = r.take(len as u64).read_to_end(&mut buf).await?;
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
