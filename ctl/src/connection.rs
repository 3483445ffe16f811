//! A blocking connection to the daemon: hello, one request, replies until the final frame.

use std::io::Write;
use std::path::Path;

use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use proto::frame::{self, FrameError};
use proto::message::{
    ClientMsg, ErrorReply, Exit, LogItem, LogsRequest, Output, Request, ServerMsg, StatusInfo,
};
use proto::records::Reply;
use proto::PROTOCOL_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no daemon socket at {0}")]
    Missing(String),
    #[error("nothing listens on {0} (a daemon that stopped left it behind)")]
    Refused(String),
    #[error("cannot connect to {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("protocol mismatch: client {PROTOCOL_VERSION}, daemon {0}; use a silica-cron matching the running silica-crond")]
    Version(u32),
    #[error(
        "the daemon at {0} did not answer within {1} s (stopped with SIGSTOP, or overloaded?)"
    )]
    Timeout(String, u64),
    #[error("the daemon closed the connection (it refuses connections beyond its limit, from other users, and while stopping)")]
    Closed,
    #[error("talking to the daemon: {0}")]
    Frame(FrameError),
    #[error("unexpected reply from the daemon")]
    Unexpected,
}

impl ConnectError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConnectError::Missing(_) | ConnectError::Refused(_))
    }
}

impl Connection {
    /// A read that timed out becomes a clear message naming the socket.
    fn timed<T>(&self, r: Result<T, ConnectError>) -> Result<T, ConnectError> {
        match r {
            Err(ConnectError::Frame(FrameError::Io(e)))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ConnectError::Timeout(
                    self.shown.clone(),
                    ANSWER_TIMEOUT.as_secs(),
                ))
            }
            other => other,
        }
    }
}

impl From<FrameError> for ConnectError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed | FrameError::Truncated => ConnectError::Closed,
            // A daemon that refuses a connection closes it unread: the write of the request
            // may then fail with EPIPE, the read with ECONNRESET.
            FrameError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                ConnectError::Closed
            }
            other => ConnectError::Frame(other),
        }
    }
}

/// How long the daemon may take to answer the hello and a quick request; a migration's stream
/// has no limit (a long rebuild may print nothing for minutes).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Connection {
    stream: Stream,
    hello_pending: bool,
    shown: String,
}

impl Connection {
    pub fn open(path: &Path) -> Result<Connection, ConnectError> {
        let shown = path.display().to_string();
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|source| ConnectError::Io {
                path: shown.clone(),
                source,
            })?;
        let stream = Stream::connect(name).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ConnectError::Missing(shown.clone()),
            std::io::ErrorKind::ConnectionRefused => ConnectError::Refused(shown.clone()),
            _ => ConnectError::Io {
                path: shown.clone(),
                source,
            },
        })?;
        stream
            .set_recv_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| stream.set_send_timeout(Some(ANSWER_TIMEOUT)))
            .map_err(|source| ConnectError::Io {
                path: shown.clone(),
                source,
            })?;
        Ok(Connection {
            stream,
            hello_pending: true,
            shown,
        })
    }

    /// Sends hello and the request in one write (one round trip), then reads replies,
    /// handing streamed lines to `on_line`.
    fn send(&mut self, req: Request) -> Result<(), ConnectError> {
        let r = self.send_inner(req);
        self.timed(r)
    }

    /// Drops the answer timeout, for replies that may take long to come.
    fn wait_indefinitely(&mut self) -> Result<(), ConnectError> {
        self.stream
            .set_recv_timeout(None)
            .map_err(|e| ConnectError::from(FrameError::from(e)))
    }

    fn send_inner(&mut self, req: Request) -> Result<(), ConnectError> {
        let mut bytes = Vec::new();
        if self.hello_pending {
            bytes.extend(frame::hello(PROTOCOL_VERSION));
        }
        bytes.extend(frame::encode(&ClientMsg::Request(req))?);
        self.stream
            .write_all(&bytes)
            .map_err(|e| ConnectError::from(FrameError::from(e)))?;
        if std::mem::take(&mut self.hello_pending) {
            let payload = frame::read_payload(&mut self.stream)?;
            let version = frame::parse_hello(&payload)?;
            if version != PROTOCOL_VERSION {
                return Err(ConnectError::Version(version));
            }
        }
        Ok(())
    }

    pub fn request(
        &mut self,
        req: Request,
        mut on_line: impl FnMut(Output),
    ) -> Result<Result<Exit, ErrorReply>, ConnectError> {
        // These may run long (a migration, a backup of a large database): no read timeout.
        let streams = matches!(
            req,
            Request::Migrate(_) | Request::Backup(_) | Request::Restore(_)
        );
        self.send(req)?;
        if streams {
            self.wait_indefinitely()?;
        }
        loop {
            let frame =
                frame::read_frame::<_, ServerMsg>(&mut self.stream).map_err(ConnectError::from);
            match self.timed(frame)? {
                ServerMsg::Output(line) => on_line(line),
                ServerMsg::Done(result) => return Ok(result),
                ServerMsg::Status(_) | ServerMsg::Reply(_) | ServerMsg::Log(_) => {
                    return Err(ConnectError::Unexpected)
                }
            }
        }
    }

    /// A manual run: the started reply, then (with --wait) output lines, then the final frame.
    pub fn run(
        &mut self,
        req: Request,
        mut on_reply: impl FnMut(&Reply),
        mut on_line: impl FnMut(Output),
    ) -> Result<Result<Exit, ErrorReply>, ConnectError> {
        self.send(req)?;
        // The run may take long: no read timeout from here on.
        self.wait_indefinitely()?;
        loop {
            match frame::read_frame::<_, ServerMsg>(&mut self.stream)? {
                ServerMsg::Reply(r) => on_reply(&r),
                ServerMsg::Output(line) => on_line(line),
                ServerMsg::Done(result) => return Ok(result),
                ServerMsg::Status(_) | ServerMsg::Log(_) => return Err(ConnectError::Unexpected),
            }
        }
    }

    /// `logs`: items until the final frame, or until `on_item` says to stop (its output is
    /// gone), which reads as success.
    pub fn logs(
        &mut self,
        req: LogsRequest,
        mut on_item: impl FnMut(&LogItem) -> bool,
        mut on_line: impl FnMut(Output),
    ) -> Result<Result<Exit, ErrorReply>, ConnectError> {
        let follow = req.follow;
        self.send(Request::Logs(req))?;
        if follow {
            // A follower may hear nothing for hours.
            self.wait_indefinitely()?;
        }
        loop {
            let frame =
                frame::read_frame::<_, ServerMsg>(&mut self.stream).map_err(ConnectError::from);
            match self.timed(frame)? {
                ServerMsg::Log(item) => {
                    if !on_item(&item) {
                        return Ok(Ok(Exit::OK));
                    }
                }
                ServerMsg::Output(line) => on_line(line),
                ServerMsg::Done(result) => return Ok(result),
                ServerMsg::Status(_) | ServerMsg::Reply(_) => return Err(ConnectError::Unexpected),
            }
        }
    }

    /// A prompt, job or execution request: one reply, then the final frame.
    pub fn record(&mut self, req: Request) -> Result<Result<Reply, ErrorReply>, ConnectError> {
        self.send(req)?;
        let mut reply = None;
        loop {
            let frame =
                frame::read_frame::<_, ServerMsg>(&mut self.stream).map_err(ConnectError::from);
            match self.timed(frame)? {
                ServerMsg::Reply(r) => reply = Some(*r),
                ServerMsg::Done(Ok(_)) => return reply.map(Ok).ok_or(ConnectError::Unexpected),
                ServerMsg::Done(Err(e)) => return Ok(Err(e)),
                _ => return Err(ConnectError::Unexpected),
            }
        }
    }

    pub fn status(&mut self) -> Result<StatusInfo, ConnectError> {
        self.send(Request::Status)?;
        let frame = frame::read_frame::<_, ServerMsg>(&mut self.stream).map_err(ConnectError::from);
        match self.timed(frame)? {
            ServerMsg::Status(info) => Ok(*info),
            ServerMsg::Done(Err(e)) => Err(ConnectError::Frame(FrameError::Io(
                std::io::Error::other(e.message),
            ))),
            _ => Err(ConnectError::Unexpected),
        }
    }
}
