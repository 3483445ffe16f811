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
    /// The daemon's recent log lines, and with `follow` new ones and live job output.
    Logs(LogsRequest),
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Keep the stream open: new lines as they happen (with `execution`: until the run ends).
    pub follow: bool,
    /// Recent lines first sent from the in-memory ring (ignored with `execution`).
    pub lines: u32,
    /// Lines at this level or more severe.
    pub level: LogLevel,
    /// Only lines about this job (name or id), and the live output of its runs.
    pub job: Option<String>,
    /// Only this execution's output: the recorded output if it has ended, else (with
    /// `follow`) its live output until it ends.
    pub execution: Option<i64>,
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
    /// One item of a `logs` reply (the stream still ends with `Done`).
    Log(LogItem),
}

/// Most severe first, so `a <= b` reads "a is at least as severe as b".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineKind {
    /// A line of the daemon's log.
    Log,
    /// A line a job's process wrote on its stdout.
    Stdout,
    /// A line a job's process wrote on its stderr.
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// UTC, RFC 3339 with microseconds, as in the log files.
    pub time: String,
    pub level: LogLevel,
    pub kind: LineKind,
    /// The module that logged it (`silica_crond::scheduler`); empty for job output.
    pub target: String,
    /// The job the line is about (its `job` field), or whose run wrote it.
    pub job: Option<String>,
    /// The execution the line is about, or whose process wrote it.
    pub execution: Option<i64>,
    /// For log lines: the message and its other fields (`key=value`); for output: the line.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogItem {
    Line(LogLine),
    /// This many lines were dropped here because the client read too slowly.
    Missed(u64),
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
    /// Active jobs the scheduler has planned; None while it is held (it has not read them).
    pub active_jobs: Option<u64>,
    /// Runs in progress (scheduled and manual).
    pub running_count: u64,
    /// The oldest few of them.
    pub running: Vec<RunningExecution>,
    /// The next few fire instants over all jobs, soonest first.
    pub next_fires: Vec<NextFire>,
}

/// A run in progress, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningExecution {
    pub execution: i64,
    /// The job's name, or `manual:<prompt>` for a manual run of a prompt.
    pub job: String,
}

/// A coming fire instant, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextFire {
    pub job: String,
    /// RFC 3339 in the job's time zone.
    pub at: String,
}
