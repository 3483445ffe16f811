//! Prompts, jobs and executions as they travel between daemon and client, and the requests
//! that manage them. The client resolves everything local (a prompt's text from `--file` or
//! stdin) before sending; the daemon validates everything again.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptInfo {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub prompt_text: String,
    pub model: String,
    pub persona: String,
    pub priority: i64,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// Jobs that run this prompt.
    pub jobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: i64,
    pub name: String,
    pub prompt: String,
    pub cron_expression: String,
    pub is_active: bool,
    /// IANA zone; None = the daemon's local zone.
    pub timezone: Option<String>,
    /// None = the configured default.
    pub timeout_seconds: Option<i64>,
    pub overlap_policy: String,
    pub missed_policy: String,
    /// The next fire instant (RFC 3339), when active.
    pub next_fire: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub executions: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionInfo {
    pub id: i64,
    pub job: Option<String>,
    pub prompt: Option<String>,
    pub session_id: Option<String>,
    pub status: Option<String>,
    pub trigger_kind: String,
    pub scheduled_for: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    pub output: Option<String>,
    pub error_message: Option<String>,
    pub output_truncated: bool,
}

/// Fields of a prompt; `None` = unchanged (edit) or the default (add).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptFields {
    pub name: Option<String>,
    pub description: Option<String>,
    pub text: Option<String>,
    pub model: Option<String>,
    pub persona: Option<String>,
    pub priority: Option<i64>,
}

/// Fields of a job; `None` = unchanged (edit) or the default (add).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFields {
    pub name: Option<String>,
    pub prompt: Option<String>,
    pub cron: Option<String>,
    /// Some("") clears the zone (back to the daemon's local zone).
    pub timezone: Option<String>,
    /// Some(0) clears the timeout (back to the configured default).
    pub timeout_seconds: Option<i64>,
    pub overlap: Option<String>,
    pub missed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptOp {
    Add(PromptFields),
    List,
    Show(String),
    Edit {
        key: String,
        fields: PromptFields,
    },
    Remove {
        key: String,
        force: bool,
    },
    /// Start a manual execution now; with `wait`, its output streams back until it ends.
    Run {
        key: String,
        wait: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOp {
    Add(JobFields),
    List,
    Show(String),
    Edit { key: String, fields: JobFields },
    SetActive { key: String, active: bool },
    Remove { key: String, force: bool },
    Next { key: String, count: usize },
    Run { key: String, wait: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionOp {
    List {
        job: Option<String>,
        prompt: Option<String>,
        status: Option<String>,
        limit: usize,
    },
    Show(i64),
}

/// The answer to a prompt, job or execution request (then `Done`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Prompt(PromptInfo),
    Prompts(Vec<PromptInfo>),
    Job(JobInfo),
    Jobs(Vec<JobInfo>),
    Execution(ExecutionInfo),
    Executions(Vec<ExecutionInfo>),
    /// Fire instants, RFC 3339 with offsets.
    Instants(Vec<String>),
    /// What a removal took with it.
    Removed {
        what: String,
        cascaded: Vec<String>,
    },
    /// A manual execution was recorded and started.
    Started {
        execution: i64,
    },
}
