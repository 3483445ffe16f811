//! A blocking connection to the daemon: hello, one request, replies until the final frame.

use std::io::Write;
use std::path::Path;

use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use proto::frame::{self, FrameError};
use proto::message::{ClientMsg, ErrorReply, Exit, Output, Request, ServerMsg, StatusInfo};
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

impl From<FrameError> for ConnectError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed | FrameError::Truncated => ConnectError::Closed,
            FrameError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => {
                ConnectError::Closed
            }
            other => ConnectError::Frame(other),
        }
    }
}

pub struct Connection {
    stream: Stream,
    hello_pending: bool,
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
        Ok(Connection {
            stream,
            hello_pending: true,
        })
    }

    /// Sends hello and the request in one write (one round trip), then reads replies,
    /// handing streamed lines to `on_line`.
    fn send(&mut self, req: Request) -> Result<(), ConnectError> {
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
        self.send(req)?;
        loop {
            match frame::read_frame::<_, ServerMsg>(&mut self.stream)? {
                ServerMsg::Output(line) => on_line(line),
                ServerMsg::Done(result) => return Ok(result),
                ServerMsg::Status(_) => return Err(ConnectError::Unexpected),
            }
        }
    }

    pub fn status(&mut self) -> Result<StatusInfo, ConnectError> {
        self.send(Request::Status)?;
        match frame::read_frame::<_, ServerMsg>(&mut self.stream)? {
            ServerMsg::Status(info) => Ok(*info),
            ServerMsg::Done(Err(e)) => Err(ConnectError::Frame(FrameError::Io(
                std::io::Error::other(e.message),
            ))),
            _ => Err(ConnectError::Unexpected),
        }
    }
}
