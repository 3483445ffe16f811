//! What travels inside frames after the hello.
//!
//! The client sends one [`ClientMsg::Request`]; the daemon answers with any number of
//! [`ServerMsg::Output`] lines (streamed as they happen) and exactly one final frame:
//! [`ServerMsg::Status`] for `status`, otherwise [`ServerMsg::Done`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cli::MigrateCmd;
use crate::records::{ExecutionOp, JobOp, PromptOp, Reply};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientMsg {
    Request(Request),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Status,
    /// Re-read the configuration file (same as SIGHUP).
    Reload,
    Migrate(MigrateRequest),
    Prompt(PromptOp),
    Job(JobOp),
    Execution(ExecutionOp),
    /// Stop firing scheduled runs (kept across restarts) / fire again.
    Pause,
    Resume,
    Backup(BackupRequest),
    Restore(RestoreRequest),
}

/// `silica-cron backup [PATH] [--force]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRequest {
    /// Absolute (the client resolves it against its own directory); None = a timestamped file
    /// in the backup directory.
    pub path: Option<PathBuf>,
    pub force: bool,
    pub json: bool,
}

/// `silica-cron restore PATH [--force]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// Absolute, as for backups.
    pub path: PathBuf,
    /// Interrupt runs in progress instead of refusing.
    pub force: bool,
    /// As in [`MigrateRequest`]: the revision files the backup's revision is checked against.
    pub migrations_dir: Option<PathBuf>,
    pub production: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateRequest {
    pub cmd: MigrateCmd,
    /// The client's `--migrations-dir` / `SILICA_CRON_MIGRATIONS`, absolute: a developer's checkout
    /// wins over what the daemon was started with, so the create -> upgrade loop needs no restart.
    pub migrations_dir: Option<PathBuf>,
    /// The client's `SILICA_ENVIRONMENT=production`; the daemon treats the request as production
    /// when either side is.
    pub production: bool,
    /// `--json`: read commands answer with one JSON document.
    pub json: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerMsg {
    Output(Output),
    Status(Box<StatusInfo>),
    Reply(Box<Reply>),
    Done(Result<Exit, ErrorReply>),
}

/// One line for the client to print on its stdout or stderr, without the newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Stdout(String),
    Stderr(String),
}

/// A command that ran to its end. `code` is the process exit code: 0, or 1 for an answer that
/// is not an error but is not "ok" either (`migrate status` when migration is needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: u8,
}

impl Exit {
    pub const OK: Exit = Exit { code: 0 };
    pub const NOT_OK: Exit = Exit { code: 1 };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    Conflict,
    Refused,
    Busy,
    Database,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorReply {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

/// Process exit codes shared by both binaries (DESIGN §4).
pub mod exit_code {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub pid: u32,
    pub version: String,
    pub uptime_secs: u64,
    pub database: PathBuf,
    pub socket: PathBuf,
    pub environment: String,
    /// Rows of the version table (applied heads).
    pub revisions: Vec<String>,
    /// Heads of the revision graph the daemon knows.
    pub heads: Vec<String>,
    pub at_head: bool,
    /// Why the schema is not usable as is (behind head, unknown revision, several heads …).
    pub schema_note: Option<String>,
    pub scheduler: String,
    pub http: Option<String>,
}
