//! Prompts, jobs and executions in the database: the commands of `silica-cron prompts|jobs|
//! executions`. Every input is validated here (the client is not trusted to have done it), and
//! every error names the thing that was not found or is wrong.

use proto::message::{ErrorKind, ErrorReply};
use proto::records::{
    ExecutionInfo, ExecutionOp, JobFields, JobInfo, JobOp, PromptFields, PromptInfo, PromptOp,
    Reply,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use schedule::jiff::{tz::TimeZone, Timestamp};
use schedule::Schedule;

type Result<T> = std::result::Result<T, ErrorReply>;

/// The revision that gave the tables the columns these commands use.
pub const SCHEMA_REVISION: &str = "57249ff23536";

fn db_err(e: rusqlite::Error) -> ErrorReply {
    ErrorReply::new(ErrorKind::Database, format!("database: {e}"))
}

fn invalid(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::InvalidArgument, msg)
}

pub const POLICIES_OVERLAP: [&str; 3] = ["skip", "allow", "replace"];
pub const POLICIES_MISSED: [&str; 2] = ["skip", "catch-up"];

pub fn prompt(conn: &mut Connection, op: &PromptOp) -> Result<Reply> {
    match op {
        PromptOp::Add(f) => {
            let name = nonempty("prompt name", f.name.as_deref())?;
            let text = nonempty("prompt text", f.text.as_deref())?;
            if find_prompt(conn, name).is_ok() {
                return Err(ErrorReply::new(
                    ErrorKind::Conflict,
                    format!("a prompt named '{name}' exists already"),
                ));
            }
            let priority = priority(f.priority.unwrap_or(1))?;
            conn.execute(
                "INSERT INTO prompts (name, description, prompt_text, model, persona, priority) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    name,
                    f.description,
                    text,
                    nonempty("model", Some(f.model.as_deref().unwrap_or("haiku")))?,
                    nonempty("persona", Some(f.persona.as_deref().unwrap_or("basic_agent")))?,
                    priority
                ],
            )
            .map_err(db_err)?;
            Ok(Reply::Prompt(prompt_info(conn, conn.last_insert_rowid())?))
        }
        PromptOp::List => {
            let ids: Vec<i64> = ids(conn, "SELECT id FROM prompts ORDER BY priority DESC, name")?;
            Ok(Reply::Prompts(
                ids.into_iter()
                    .map(|id| prompt_info(conn, id))
                    .collect::<Result<_>>()?,
            ))
        }
        PromptOp::Show(key) => Ok(Reply::Prompt(prompt_info(conn, find_prompt(conn, key)?)?)),
        PromptOp::Edit { key, fields } => {
            let id = find_prompt(conn, key)?;
            edit_prompt(conn, id, fields)?;
            Ok(Reply::Prompt(prompt_info(conn, id)?))
        }
        PromptOp::Run { key, .. } => {
            let id = find_prompt(conn, key)?;
            Ok(Reply::Started {
                execution: record_manual(conn, None, id)?,
            })
        }
        PromptOp::Remove { key, force } => {
            let id = find_prompt(conn, key)?;
            let info = prompt_info(conn, id)?;
            let runs: i64 = count(conn, "SELECT count(*) FROM job_executions WHERE prompt_id = ?1 OR scheduled_job_id IN (SELECT id FROM scheduled_jobs WHERE prompt_id = ?1)", id)?;
            if (!info.jobs.is_empty() || runs > 0) && !force {
                return Err(ErrorReply::new(
                    ErrorKind::Conflict,
                    format!(
                        "prompt '{}' is used by {} job(s) ({}) with {runs} execution(s) of history; remove them first, or pass --force to remove them with it",
                        info.name,
                        info.jobs.len(),
                        info.jobs.join(", ")
                    ),
                ));
            }
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            tx.execute("DELETE FROM job_executions WHERE prompt_id = ?1 OR scheduled_job_id IN (SELECT id FROM scheduled_jobs WHERE prompt_id = ?1)", [id]).map_err(db_err)?;
            tx.execute("DELETE FROM scheduled_jobs WHERE prompt_id = ?1", [id])
                .map_err(db_err)?;
            tx.execute("DELETE FROM prompts WHERE id = ?1", [id])
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            let mut cascaded: Vec<String> = info.jobs.iter().map(|j| format!("job {j}")).collect();
            if runs > 0 {
                cascaded.push(format!("{runs} execution(s)"));
            }
            Ok(Reply::Removed {
                what: format!("prompt {}", info.name),
                cascaded,
            })
        }
    }
}

fn edit_prompt(conn: &Connection, id: i64, f: &PromptFields) -> Result<()> {
    if let Some(name) = &f.name {
        let name = nonempty("prompt name", Some(name))?;
        if find_prompt(conn, name).is_ok_and(|other| other != id) {
            return Err(ErrorReply::new(
                ErrorKind::Conflict,
                format!("a prompt named '{name}' exists already"),
            ));
        }
    }
    if let Some(p) = f.priority {
        priority(p)?;
    }
    for (what, v) in [
        ("prompt text", &f.text),
        ("model", &f.model),
        ("persona", &f.persona),
    ] {
        if v.is_some() {
            nonempty(what, v.as_deref())?;
        }
    }
    conn.execute(
        "UPDATE prompts SET name = coalesce(?2, name), description = coalesce(?3, description), prompt_text = coalesce(?4, prompt_text), model = coalesce(?5, model), persona = coalesce(?6, persona), priority = coalesce(?7, priority), updated_at = CURRENT_TIMESTAMP WHERE id = ?1",
        params![id, f.name, f.description, f.text, f.model, f.persona, f.priority],
    )
    .map_err(db_err)?;
    Ok(())
}

pub fn job(conn: &mut Connection, op: &JobOp) -> Result<Reply> {
    match op {
        JobOp::Add(f) => {
            let name = nonempty("job name", f.name.as_deref())?;
            if find_job(conn, name).is_ok() {
                return Err(ErrorReply::new(
                    ErrorKind::Conflict,
                    format!("a job named '{name}' exists already"),
                ));
            }
            let prompt_id = find_prompt(conn, nonempty("prompt", f.prompt.as_deref())?)?;
            let cron = nonempty("cron expression", f.cron.as_deref())?;
            check_cron(cron)?;
            let tz = f.timezone.as_deref().filter(|z| !z.is_empty());
            if let Some(z) = tz {
                zone(z)?;
            }
            let timeout = f.timeout_seconds.filter(|&t| t != 0);
            if let Some(t) = timeout {
                positive_timeout(t)?;
            }
            let overlap = policy(
                "overlap",
                f.overlap.as_deref().unwrap_or("skip"),
                &POLICIES_OVERLAP,
            )?;
            let missed = policy(
                "missed-run",
                f.missed.as_deref().unwrap_or("skip"),
                &POLICIES_MISSED,
            )?;
            conn.execute(
                "INSERT INTO scheduled_jobs (name, prompt_id, cron_expression, is_active, timezone, timeout_seconds, overlap_policy, missed_policy) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)",
                params![name, prompt_id, cron.trim(), tz, timeout, overlap, missed],
            )
            .map_err(db_err)?;
            Ok(Reply::Job(job_info(conn, conn.last_insert_rowid())?))
        }
        JobOp::List => {
            let ids = ids(conn, "SELECT id FROM scheduled_jobs ORDER BY name")?;
            Ok(Reply::Jobs(
                ids.into_iter()
                    .map(|id| job_info(conn, id))
                    .collect::<Result<_>>()?,
            ))
        }
        JobOp::Show(key) => Ok(Reply::Job(job_info(conn, find_job(conn, key)?)?)),
        JobOp::Edit { key, fields } => {
            let id = find_job(conn, key)?;
            edit_job(conn, id, fields)?;
            Ok(Reply::Job(job_info(conn, id)?))
        }
        JobOp::SetActive { key, active } => {
            let id = find_job(conn, key)?;
            conn.execute("UPDATE scheduled_jobs SET is_active = ?2, updated_at = CURRENT_TIMESTAMP WHERE id = ?1", params![id, active])
                .map_err(db_err)?;
            Ok(Reply::Job(job_info(conn, id)?))
        }
        JobOp::Remove { key, force } => {
            let id = find_job(conn, key)?;
            let info = job_info(conn, id)?;
            if info.executions > 0 && !force {
                return Err(ErrorReply::new(
                    ErrorKind::Conflict,
                    format!(
                        "job '{}' has {} execution(s) of history; pass --force to remove them with it, or disable the job instead",
                        info.name, info.executions
                    ),
                ));
            }
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            tx.execute(
                "DELETE FROM job_executions WHERE scheduled_job_id = ?1",
                [id],
            )
            .map_err(db_err)?;
            tx.execute("DELETE FROM scheduled_jobs WHERE id = ?1", [id])
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            let cascaded = if info.executions > 0 {
                vec![format!("{} execution(s)", info.executions)]
            } else {
                vec![]
            };
            Ok(Reply::Removed {
                what: format!("job {}", info.name),
                cascaded,
            })
        }
        JobOp::Run { key, .. } => {
            let id = find_job(conn, key)?;
            let prompt: i64 = conn
                .query_row(
                    "SELECT prompt_id FROM scheduled_jobs WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            Ok(Reply::Started {
                execution: record_manual(conn, Some(id), prompt)?,
            })
        }
        JobOp::Next { key, count } => {
            let info = job_info(conn, find_job(conn, key)?)?;
            let (schedule, tz) = job_schedule(&info)?;
            let instants = schedule
                .iter_after(Timestamp::now(), &tz)
                .take(*count)
                .map(|z| rfc3339(&z))
                .collect();
            Ok(Reply::Instants(instants))
        }
    }
}

fn edit_job(conn: &Connection, id: i64, f: &JobFields) -> Result<()> {
    if let Some(name) = &f.name {
        let name = nonempty("job name", Some(name))?;
        if find_job(conn, name).is_ok_and(|other| other != id) {
            return Err(ErrorReply::new(
                ErrorKind::Conflict,
                format!("a job named '{name}' exists already"),
            ));
        }
    }
    let prompt_id = f
        .prompt
        .as_deref()
        .map(|p| find_prompt(conn, p))
        .transpose()?;
    if let Some(c) = &f.cron {
        check_cron(c)?;
    }
    if let Some(z) = f.timezone.as_deref().filter(|z| !z.is_empty()) {
        zone(z)?;
    }
    if let Some(t) = f.timeout_seconds.filter(|&t| t != 0) {
        positive_timeout(t)?;
    }
    if let Some(p) = &f.overlap {
        policy("overlap", p, &POLICIES_OVERLAP)?;
    }
    if let Some(p) = &f.missed {
        policy("missed-run", p, &POLICIES_MISSED)?;
    }
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    tx.execute(
        "UPDATE scheduled_jobs SET name = coalesce(?2, name), prompt_id = coalesce(?3, prompt_id), cron_expression = coalesce(?4, cron_expression), overlap_policy = coalesce(?5, overlap_policy), missed_policy = coalesce(?6, missed_policy), updated_at = CURRENT_TIMESTAMP WHERE id = ?1",
        params![id, f.name, prompt_id, f.cron.as_deref().map(str::trim), f.overlap, f.missed],
    )
    .map_err(db_err)?;
    if let Some(z) = &f.timezone {
        tx.execute(
            "UPDATE scheduled_jobs SET timezone = ?2 WHERE id = ?1",
            params![id, Some(z).filter(|z| !z.is_empty())],
        )
        .map_err(db_err)?;
    }
    if let Some(t) = f.timeout_seconds {
        tx.execute(
            "UPDATE scheduled_jobs SET timeout_seconds = ?2 WHERE id = ?1",
            params![id, Some(t).filter(|&t| t != 0)],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

pub fn execution(conn: &Connection, op: &ExecutionOp) -> Result<Reply> {
    match op {
        ExecutionOp::List {
            job,
            prompt,
            status,
            limit,
        } => {
            let job_id = job.as_deref().map(|j| find_job(conn, j)).transpose()?;
            let prompt_id = prompt
                .as_deref()
                .map(|p| find_prompt(conn, p))
                .transpose()?;
            let mut stmt = conn
                .prepare(
                    "SELECT e.id FROM job_executions e LEFT JOIN scheduled_jobs j ON j.id = e.scheduled_job_id
                     WHERE (?1 IS NULL OR e.scheduled_job_id = ?1)
                       AND (?2 IS NULL OR coalesce(e.prompt_id, j.prompt_id) = ?2)
                       AND (?3 IS NULL OR e.status = ?3)
                     ORDER BY e.id DESC LIMIT ?4",
                )
                .map_err(db_err)?;
            let ids: Vec<i64> = stmt
                .query_map(params![job_id, prompt_id, status, *limit as i64], |r| {
                    r.get(0)
                })
                .map_err(db_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db_err)?;
            Ok(Reply::Executions(
                ids.into_iter()
                    .map(|id| execution_info(conn, id, false))
                    .collect::<Result<_>>()?,
            ))
        }
        ExecutionOp::Show(id) => Ok(Reply::Execution(execution_info(conn, *id, true)?)),
    }
}

/// A manual run: recorded now (no scheduled instant, as in the original), started by the caller.
fn record_manual(conn: &Connection, job: Option<i64>, prompt: i64) -> Result<i64> {
    conn.execute(
        "INSERT INTO job_executions (scheduled_job_id, prompt_id, trigger_kind, status) VALUES (?1, ?2, 'manual', 'pending')",
        params![job, prompt],
    )
    .map_err(db_err)?;
    Ok(conn.last_insert_rowid())
}

// ---- lookups and validation

/// A prompt by exact name, else by id.
fn find_prompt(conn: &Connection, key: &str) -> Result<i64> {
    find(conn, "prompts", "prompt", key)
}

fn find_job(conn: &Connection, key: &str) -> Result<i64> {
    find(conn, "scheduled_jobs", "job", key)
}

fn find(conn: &Connection, table: &str, what: &str, key: &str) -> Result<i64> {
    let by_name: Vec<i64> = {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT id FROM {table} WHERE name = ?1 ORDER BY id"
            ))
            .map_err(db_err)?;
        let rows = stmt.query_map([key], |r| r.get(0)).map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)?
    };
    match by_name.as_slice() {
        [one] => return Ok(*one),
        [] => {}
        many => {
            return Err(invalid(format!(
                "several {what}s are named '{key}' (ids {}); name one by its id",
                many.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
    if let Ok(id) = key.parse::<i64>() {
        let found: Option<i64> = conn
            .query_row(
                &format!("SELECT id FROM {table} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if let Some(id) = found {
            return Ok(id);
        }
    }
    Err(ErrorReply::new(
        ErrorKind::NotFound,
        format!("no {what} named '{key}'"),
    ))
}

fn nonempty<'a>(what: &str, v: Option<&'a str>) -> Result<&'a str> {
    match v.map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!("{what} must not be empty"))),
    }
}

fn priority(p: i64) -> Result<i64> {
    if (1..=3).contains(&p) {
        Ok(p)
    } else {
        Err(invalid(format!(
            "priority {p} is out of range: 1 (low), 2 (medium) or 3 (high)"
        )))
    }
}

fn positive_timeout(t: i64) -> Result<()> {
    if t > 0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "timeout {t} s must be a positive number of seconds"
        )))
    }
}

fn policy<'a>(what: &str, p: &'a str, allowed: &[&str]) -> Result<&'a str> {
    if allowed.contains(&p) {
        Ok(p)
    } else {
        Err(invalid(format!(
            "{what} policy '{p}' is not one of: {}",
            allowed.join(", ")
        )))
    }
}

/// Parses and refuses expressions that are invalid or can never fire, with the reason.
pub fn check_cron(expr: &str) -> Result<Schedule> {
    let s = Schedule::parse(expr)
        .map_err(|e| invalid(format!("invalid cron expression '{expr}': {e}")))?;
    if let Some(reason) = s.never_reason() {
        return Err(invalid(format!(
            "cron expression '{expr}' can never fire: {reason}"
        )));
    }
    Ok(s)
}

fn zone(name: &str) -> Result<TimeZone> {
    schedule::time_zone(name).map_err(|e| invalid(format!("unknown time zone '{name}': {e}")))
}

/// The job's schedule and zone (its own, else the daemon's local zone).
pub fn job_schedule(job: &JobInfo) -> Result<(Schedule, TimeZone)> {
    let s = check_cron(&job.cron_expression)?;
    let tz = match &job.timezone {
        Some(z) => zone(z)?,
        None => TimeZone::system(),
    };
    Ok((s, tz))
}

fn rfc3339(z: &schedule::jiff::ZonedDateTime) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

fn ids(conn: &Connection, sql: &str) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare(sql).map_err(db_err)?;
    let rows = stmt.query_map([], |r| r.get(0)).map_err(db_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_err)
}

fn count(conn: &Connection, sql: &str, id: i64) -> Result<i64> {
    conn.query_row(sql, [id], |r| r.get(0)).map_err(db_err)
}

// ---- reading rows

fn prompt_info(conn: &Connection, id: i64) -> Result<PromptInfo> {
    let mut info = conn
        .query_row(
            "SELECT id, name, description, prompt_text, model, persona, priority, created_at, updated_at FROM prompts WHERE id = ?1",
            [id],
            |r| {
                Ok(PromptInfo {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    description: r.get(2)?,
                    prompt_text: r.get(3)?,
                    model: r.get(4)?,
                    persona: r.get(5)?,
                    priority: r.get(6)?,
                    created_at: r.get(7)?,
                    updated_at: r.get(8)?,
                    jobs: vec![],
                })
            },
        )
        .map_err(db_err)?;
    let mut stmt = conn
        .prepare("SELECT name FROM scheduled_jobs WHERE prompt_id = ?1 ORDER BY name")
        .map_err(db_err)?;
    info.jobs = stmt
        .query_map([id], |r| r.get(0))
        .map_err(db_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db_err)?;
    Ok(info)
}

fn job_info(conn: &Connection, id: i64) -> Result<JobInfo> {
    let mut info = conn
        .query_row(
            "SELECT j.id, j.name, p.name, j.cron_expression, coalesce(j.is_active, 0), j.timezone, j.timeout_seconds, j.overlap_policy, j.missed_policy, j.created_at, j.updated_at,
                    (SELECT count(*) FROM job_executions e WHERE e.scheduled_job_id = j.id)
             FROM scheduled_jobs j LEFT JOIN prompts p ON p.id = j.prompt_id WHERE j.id = ?1",
            [id],
            |r| {
                Ok(JobInfo {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    prompt: r.get::<_, Option<String>>(2)?.unwrap_or_else(|| "<missing prompt>".into()),
                    cron_expression: r.get(3)?,
                    is_active: r.get(4)?,
                    timezone: r.get(5)?,
                    timeout_seconds: r.get(6)?,
                    overlap_policy: r.get(7)?,
                    missed_policy: r.get(8)?,
                    next_fire: None,
                    created_at: r.get(9)?,
                    updated_at: r.get(10)?,
                    executions: r.get(11)?,
                })
            },
        )
        .map_err(db_err)?;
    if info.is_active {
        // Rows written by other tools may hold expressions this daemon refuses: no next fire.
        if let Ok((s, tz)) = job_schedule(&info) {
            info.next_fire = s.next_after(Timestamp::now(), &tz).map(|z| rfc3339(&z));
        }
    }
    Ok(info)
}

fn execution_info(conn: &Connection, id: i64, with_output: bool) -> Result<ExecutionInfo> {
    conn.query_row(
        "SELECT e.id, j.name, coalesce(p.name, jp.name), e.session_id, e.status, e.trigger_kind, e.scheduled_for, e.started_at, e.completed_at, e.exit_code,
                CAST(round((julianday(e.completed_at) - julianday(e.started_at)) * 86400000) AS INTEGER),
                CASE WHEN ?2 THEN e.output END, e.error_message, e.output_truncated
         FROM job_executions e
         LEFT JOIN scheduled_jobs j ON j.id = e.scheduled_job_id
         LEFT JOIN prompts jp ON jp.id = j.prompt_id
         LEFT JOIN prompts p ON p.id = e.prompt_id
         WHERE e.id = ?1",
        params![id, with_output],
        |r| {
            Ok(ExecutionInfo {
                id: r.get(0)?,
                job: r.get(1)?,
                prompt: r.get(2)?,
                session_id: r.get(3)?,
                status: r.get(4)?,
                trigger_kind: r.get(5)?,
                scheduled_for: r.get(6)?,
                started_at: r.get(7)?,
                completed_at: r.get(8)?,
                exit_code: r.get(9)?,
                duration_ms: r.get(10)?,
                output: r.get(11)?,
                error_message: r.get(12)?,
                output_truncated: r.get(13)?,
            })
        },
    )
    .optional()
    .map_err(db_err)?
    .ok_or_else(|| ErrorReply::new(ErrorKind::NotFound, format!("no execution with id {id}")))
}

/// A job's name, from its name or id (`silica-cron logs --job`).
pub fn job_name(conn: &mut Connection, key: &str) -> Result<String> {
    let id = find_job(conn, key)?;
    conn.query_row("SELECT name FROM scheduled_jobs WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .map_err(db_err)
}

/// An ended execution's recorded output as lines (stdout, then the error message and stderr),
/// or None while it has not ended.
pub fn execution_output(
    conn: &mut Connection,
    id: i64,
) -> Result<Option<Vec<proto::message::LogLine>>> {
    use proto::message::{LineKind, LogLevel, LogLine};
    let e = execution_info(conn, id, true)?;
    if matches!(e.status.as_deref(), Some("pending" | "running")) {
        return Ok(None);
    }
    let job = e
        .job
        .clone()
        .or_else(|| e.prompt.as_ref().map(|p| format!("manual:{p}")));
    let time = e.completed_at.clone().unwrap_or_default();
    let line = |kind, text: &str| LogLine {
        time: time.clone(),
        level: LogLevel::Info,
        kind,
        target: String::new(),
        job: job.clone(),
        execution: Some(id),
        text: text.to_string(),
    };
    let mut lines: Vec<LogLine> = e
        .output
        .as_deref()
        .unwrap_or("")
        .lines()
        .map(|l| line(LineKind::Stdout, l))
        .collect();
    lines.extend(
        e.error_message
            .as_deref()
            .unwrap_or("")
            .lines()
            .map(|l| line(LineKind::Stderr, l)),
    );
    Ok(Some(lines))
}
