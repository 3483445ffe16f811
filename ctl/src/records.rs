//! `silica-cron prompts|jobs|executions`: arguments, the request they become, and how replies look.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use proto::message::{exit_code, Request};
use proto::records::{
    ExecutionInfo, ExecutionOp, JobFields, JobInfo, JobOp, PromptFields, PromptInfo, PromptOp,
    Reply,
};

#[derive(Subcommand)]
pub enum PromptsCmd {
    /// Add a prompt; its text is TEXT, the contents of --file, or standard input.
    Add {
        name: String,
        text: Option<String>,
        #[command(flatten)]
        fields: PromptArgs,
    },
    /// List prompts (highest priority first).
    List,
    /// Show one prompt (by name or id).
    Show { prompt: String },
    /// Change a prompt's fields.
    Edit {
        prompt: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New text.
        #[arg(long)]
        text: Option<String>,
        #[command(flatten)]
        fields: PromptArgs,
    },
    /// Remove a prompt; --force also removes the jobs that use it and their history.
    Rm {
        prompt: String,
        #[arg(long)]
        force: bool,
    },
    /// Run a prompt now (a manual execution); prints its id.
    Run {
        prompt: String,
        /// Follow its output to the end and exit with its result (0 completed, 1 otherwise).
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Args)]
pub struct PromptArgs {
    /// Read the prompt text from this file ("-" for standard input).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    #[arg(long)]
    description: Option<String>,
    /// Model (default haiku).
    #[arg(long)]
    model: Option<String>,
    /// Persona (default basic_agent).
    #[arg(long)]
    persona: Option<String>,
    /// 1 low (default), 2 medium, 3 high: orders starts when more jobs are due than may run.
    #[arg(long)]
    priority: Option<i64>,
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Add a job: run PROMPT at the times of a cron expression.
    Add {
        name: String,
        #[command(flatten)]
        fields: JobArgs,
    },
    /// List jobs with their next fire instant.
    List,
    /// Show one job (by name or id).
    Show { job: String },
    /// Change a job's fields.
    Edit {
        job: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: JobArgs,
    },
    /// Let a job fire again.
    Enable { job: String },
    /// Stop a job from firing (its history stays).
    Disable { job: String },
    /// Remove a job; --force also removes its execution history.
    Rm {
        job: String,
        #[arg(long)]
        force: bool,
    },
    /// Run a job's prompt now (a manual execution of the job); prints its id.
    Run {
        job: String,
        /// Follow its output to the end and exit with its result (0 completed, 1 otherwise).
        #[arg(long)]
        wait: bool,
    },
    /// The job's next fire instants, with their UTC offsets.
    Next {
        job: String,
        #[arg(short = 'n', long, default_value_t = 5)]
        count: usize,
    },
}

#[derive(Args)]
pub struct JobArgs {
    /// The prompt to run (name or id).
    #[arg(long)]
    prompt: Option<String>,
    /// Cron expression (Vixie syntax: 5 fields or a @macro).
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// IANA time zone of the expression (default: the daemon's local zone; "" clears it).
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Seconds a run may take (default from the configuration; 0 clears it).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<i64>,
    /// When the previous run still runs: skip (default), allow, replace.
    #[arg(long, value_name = "POLICY")]
    overlap: Option<String>,
    /// Runs missed while the daemon was down: skip (default), catch-up.
    #[arg(long, value_name = "POLICY")]
    missed: Option<String>,
}

#[derive(Subcommand)]
pub enum ExecutionsCmd {
    /// Recent executions, newest first.
    List {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        prompt: Option<String>,
        /// pending, running, completed, failed, timed_out, interrupted, skipped.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One execution with its output.
    Show { id: i64 },
}

fn prompt_text(
    text: Option<String>,
    file: Option<&PathBuf>,
    required: bool,
) -> Result<Option<String>, String> {
    match (text, file) {
        (Some(_), Some(_)) => {
            Err("give the prompt text as an argument or with --file, not both".into())
        }
        (Some(t), None) if t == "-" => read_stdin().map(Some),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(p)) if p.as_os_str() == "-" => read_stdin().map(Some),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", p.display())),
        (None, None) if required => {
            if std::io::stdin().is_terminal() {
                return Err("no prompt text: give it as an argument, with --file PATH, or on standard input".into());
            }
            read_stdin().map(Some)
        }
        (None, None) => Ok(None),
    }
}

fn read_stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(s)
}

fn prompt_fields(name: Option<String>, text: Option<String>, a: PromptArgs) -> PromptFields {
    PromptFields {
        name,
        description: a.description,
        text,
        model: a.model,
        persona: a.persona,
        priority: a.priority,
    }
}

fn job_fields(name: Option<String>, a: JobArgs) -> JobFields {
    JobFields {
        name,
        prompt: a.prompt,
        cron: a.cron,
        timezone: a.tz,
        timeout_seconds: a.timeout,
        overlap: a.overlap,
        missed: a.missed,
    }
}

/// The request a command becomes, or a usage problem found before asking the daemon.
pub fn prompts_request(cmd: PromptsCmd) -> Result<Request, String> {
    Ok(Request::Prompt(match cmd {
        PromptsCmd::Add { name, text, fields } => {
            let text = prompt_text(text, fields.file.as_ref(), true)?;
            PromptOp::Add(prompt_fields(Some(name), text, fields))
        }
        PromptsCmd::List => PromptOp::List,
        PromptsCmd::Show { prompt } => PromptOp::Show(prompt),
        PromptsCmd::Edit {
            prompt,
            name,
            text,
            fields,
        } => {
            let text = prompt_text(text, fields.file.as_ref(), false)?;
            PromptOp::Edit {
                key: prompt,
                fields: prompt_fields(name, text, fields),
            }
        }
        PromptsCmd::Rm { prompt, force } => PromptOp::Remove { key: prompt, force },
        PromptsCmd::Run { prompt, wait } => PromptOp::Run { key: prompt, wait },
    }))
}

pub fn jobs_request(cmd: JobsCmd) -> Request {
    Request::Job(match cmd {
        JobsCmd::Add { name, fields } => JobOp::Add(job_fields(Some(name), fields)),
        JobsCmd::List => JobOp::List,
        JobsCmd::Show { job } => JobOp::Show(job),
        JobsCmd::Edit { job, name, fields } => JobOp::Edit {
            key: job,
            fields: job_fields(name, fields),
        },
        JobsCmd::Enable { job } => JobOp::SetActive {
            key: job,
            active: true,
        },
        JobsCmd::Disable { job } => JobOp::SetActive {
            key: job,
            active: false,
        },
        JobsCmd::Rm { job, force } => JobOp::Remove { key: job, force },
        JobsCmd::Next { job, count } => JobOp::Next { key: job, count },
        JobsCmd::Run { job, wait } => JobOp::Run { key: job, wait },
    })
}

pub fn executions_request(cmd: ExecutionsCmd) -> Request {
    Request::Execution(match cmd {
        ExecutionsCmd::List {
            job,
            prompt,
            status,
            limit,
        } => ExecutionOp::List {
            job,
            prompt,
            status,
            limit,
        },
        ExecutionsCmd::Show { id } => ExecutionOp::Show(id),
    })
}

pub fn render(reply: &Reply, json: bool) -> i32 {
    let mut out = std::io::stdout().lock();
    let _ = if json {
        writeln!(out, "{}", to_json(reply))
    } else {
        write!(out, "{}", to_text(reply))
    };
    exit_code::OK
}

fn to_json(reply: &Reply) -> String {
    let v = match reply {
        Reply::Prompt(p) => prompt_json(p),
        Reply::Prompts(ps) => serde_json::Value::Array(ps.iter().map(prompt_json).collect()),
        Reply::Job(j) => job_json(j),
        Reply::Jobs(js) => serde_json::Value::Array(js.iter().map(job_json).collect()),
        Reply::Execution(e) => execution_json(e),
        Reply::Executions(es) => serde_json::Value::Array(es.iter().map(execution_json).collect()),
        Reply::Instants(v) => serde_json::json!(v),
        Reply::Removed { what, cascaded } => {
            serde_json::json!({ "removed": what, "cascaded": cascaded })
        }
        Reply::Started { execution } => serde_json::json!({ "execution": execution }),
    };
    serde_json::to_string_pretty(&v).expect("json values serialize")
}

fn prompt_json(p: &PromptInfo) -> serde_json::Value {
    serde_json::json!({
        "id": p.id, "name": p.name, "description": p.description, "prompt_text": p.prompt_text,
        "model": p.model, "persona": p.persona, "priority": p.priority,
        "created_at": p.created_at, "updated_at": p.updated_at, "jobs": p.jobs,
    })
}

fn job_json(j: &JobInfo) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "name": j.name, "prompt": j.prompt, "cron_expression": j.cron_expression,
        "is_active": j.is_active, "timezone": j.timezone, "timeout_seconds": j.timeout_seconds,
        "overlap_policy": j.overlap_policy, "missed_policy": j.missed_policy, "next_fire": j.next_fire,
        "created_at": j.created_at, "updated_at": j.updated_at, "executions": j.executions,
    })
}

fn execution_json(e: &ExecutionInfo) -> serde_json::Value {
    serde_json::json!({
        "id": e.id, "job": e.job, "prompt": e.prompt, "session_id": e.session_id, "status": e.status,
        "trigger": e.trigger_kind, "scheduled_for": e.scheduled_for, "started_at": e.started_at,
        "completed_at": e.completed_at, "exit_code": e.exit_code, "duration_ms": e.duration_ms,
        "output": e.output, "error_message": e.error_message, "output_truncated": e.output_truncated,
    })
}

fn opt(v: &Option<impl ToString>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut s = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

fn to_text(reply: &Reply) -> String {
    match reply {
        Reply::Prompts(ps) if ps.is_empty() => "no prompts\n".into(),
        Reply::Prompts(ps) => table(
            &["ID", "NAME", "PRIORITY", "MODEL", "PERSONA", "JOBS"],
            ps.iter()
                .map(|p| vec![p.id.to_string(), p.name.clone(), p.priority.to_string(), p.model.clone(), p.persona.clone(), p.jobs.len().to_string()])
                .collect(),
        ),
        Reply::Prompt(p) => format!(
            "id:          {}\nname:        {}\ndescription: {}\nmodel:       {}\npersona:     {}\npriority:    {}\njobs:        {}\ncreated:     {}\nupdated:     {}\ntext:\n{}\n",
            p.id,
            p.name,
            opt(&p.description),
            p.model,
            p.persona,
            p.priority,
            if p.jobs.is_empty() { "-".into() } else { p.jobs.join(", ") },
            opt(&p.created_at),
            opt(&p.updated_at),
            p.prompt_text.trim_end()
        ),
        Reply::Jobs(js) if js.is_empty() => "no jobs\n".into(),
        Reply::Jobs(js) => table(
            &["ID", "NAME", "PROMPT", "CRON", "ZONE", "ACTIVE", "NEXT FIRE"],
            js.iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.name.clone(),
                        j.prompt.clone(),
                        j.cron_expression.clone(),
                        j.timezone.clone().unwrap_or_else(|| "local".into()),
                        if j.is_active { "yes" } else { "no" }.into(),
                        opt(&j.next_fire),
                    ]
                })
                .collect(),
        ),
        Reply::Job(j) => format!(
            "id:          {}\nname:        {}\nprompt:      {}\ncron:        {}\nzone:        {}\nactive:      {}\ntimeout:     {}\noverlap:     {}\nmissed runs: {}\nnext fire:   {}\nexecutions:  {}\ncreated:     {}\nupdated:     {}\n",
            j.id,
            j.name,
            j.prompt,
            j.cron_expression,
            j.timezone.clone().unwrap_or_else(|| "local (the daemon's)".into()),
            if j.is_active { "yes" } else { "no" },
            j.timeout_seconds.map_or_else(|| "default".to_string(), |t| format!("{t} s")),
            j.overlap_policy,
            j.missed_policy,
            opt(&j.next_fire),
            j.executions,
            opt(&j.created_at),
            opt(&j.updated_at)
        ),
        Reply::Executions(es) if es.is_empty() => "no executions\n".into(),
        Reply::Executions(es) => table(
            &["ID", "JOB", "PROMPT", "STATUS", "TRIGGER", "STARTED", "DURATION", "EXIT"],
            es.iter()
                .map(|e| {
                    vec![
                        e.id.to_string(),
                        opt(&e.job),
                        opt(&e.prompt),
                        opt(&e.status),
                        e.trigger_kind.clone(),
                        opt(&e.started_at),
                        e.duration_ms.map_or_else(|| "-".into(), |d| format!("{:.1} s", d as f64 / 1000.0)),
                        opt(&e.exit_code),
                    ]
                })
                .collect(),
        ),
        Reply::Execution(e) => format!(
            "id:          {}\njob:         {}\nprompt:      {}\nstatus:      {}\ntrigger:     {}\nscheduled:   {}\nstarted:     {}\ncompleted:   {}\nduration:    {}\nexit code:   {}\nsession id:  {}\nerror:       {}\noutput{}:\n{}\n",
            e.id,
            opt(&e.job),
            opt(&e.prompt),
            opt(&e.status),
            e.trigger_kind,
            opt(&e.scheduled_for),
            opt(&e.started_at),
            opt(&e.completed_at),
            e.duration_ms.map_or_else(|| "-".into(), |d| format!("{d} ms")),
            opt(&e.exit_code),
            opt(&e.session_id),
            opt(&e.error_message),
            if e.output_truncated { " (truncated)" } else { "" },
            e.output.as_deref().unwrap_or("").trim_end()
        ),
        Reply::Instants(v) => v.iter().map(|i| format!("{i}\n")).collect(),
        Reply::Started { execution } => format!("started execution {execution}\n"),
        Reply::Removed { what, cascaded } if cascaded.is_empty() => format!("removed {what}\n"),
        Reply::Removed { what, cascaded } => format!("removed {what}, with {}\n", cascaded.join(", ")),
    }
}
