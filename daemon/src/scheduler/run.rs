//! One execution: the row says `running` (with its session id) before the process starts, and
//! holds the outcome after it ends.

use std::sync::Arc;
use std::time::Duration;

use proto::message::{LineKind, LogLevel, LogLine};
use rusqlite::{params, OptionalExtension};
use schedule::jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use super::sql_time_ms;
use crate::logbus::LineSplitter;
use crate::metrics;
use crate::state::Shared;

/// What a run needs from the database.
pub struct Prepared {
    prompt: String,
    model: String,
    persona: String,
    job_name: String,
    timeout: Option<i64>,
    execution: i64,
    session_id: String,
    /// For the firing-lag metric: the row's instant and trigger, and when it was marked running.
    scheduled_for: Option<String>,
    trigger: String,
    marked_at: Timestamp,
}

/// Environment variables a job inherits from the daemon (everything else is dropped).
const INHERITED: [&str; 9] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// Marks `executions` running, with a fresh session id each, in one transaction (one commit,
/// one fsync, however many are due at once) before any of their processes starts, and returns
/// what each run needs. A crash from here on leaves `running`, which the next start turns
/// into `interrupted`.
pub fn start_batch(
    c: &mut rusqlite::Connection,
    executions: &[i64],
) -> rusqlite::Result<Vec<Prepared>> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = mark_running(&tx, executions)?;
    tx.commit()?;
    Ok(out)
}

/// [`start_batch`] inside a transaction of the caller's (the scheduler inserts due rows and
/// starts them in one commit).
pub fn mark_running(
    tx: &rusqlite::Transaction<'_>,
    executions: &[i64],
) -> rusqlite::Result<Vec<Prepared>> {
    let now = Timestamp::now();
    let started = sql_time_ms(now);
    let mut out = Vec::with_capacity(executions.len());
    {
        let mut select = tx.prepare_cached(
            "SELECT p.prompt_text, p.model, p.persona, coalesce(j.name, 'manual:' || p.name), j.timeout_seconds, e.scheduled_for, e.trigger_kind
             FROM job_executions e
             JOIN prompts p ON p.id = coalesce(e.prompt_id, (SELECT prompt_id FROM scheduled_jobs WHERE id = e.scheduled_job_id))
             LEFT JOIN scheduled_jobs j ON j.id = e.scheduled_job_id
             WHERE e.id = ?1 AND e.status = 'pending'",
        )?;
        let mut mark = tx.prepare_cached(
            "UPDATE job_executions SET status = 'running', started_at = ?2, last_seen_at = ?2, session_id = ?3 WHERE id = ?1",
        )?;
        for &execution in executions {
            let session_id = new_uuid();
            let found = select
                .query_row([execution], |r| {
                    Ok(Prepared {
                        prompt: r.get(0)?,
                        model: r.get(1)?,
                        persona: r.get(2)?,
                        job_name: r.get(3)?,
                        timeout: r.get(4)?,
                        execution,
                        session_id: session_id.clone(),
                        scheduled_for: r.get(5)?,
                        trigger: r.get(6)?,
                        marked_at: now,
                    })
                })
                .optional()?;
            match found {
                Some(p) => {
                    mark.execute(params![execution, started, session_id])?;
                    out.push(p);
                }
                None => warn!(execution, "execution vanished before it started"),
            }
        }
    }
    Ok(out)
}

/// Reads what firing `jobs` at `instant` will read and write (see `Scheduler::warm`): their
/// prompts, the unique index entry of each (job, instant), the last execution row.
pub fn warm(c: &mut rusqlite::Connection, jobs: &[i64], instant: &str) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut read = tx.prepare_cached(
            "SELECT p.prompt_text, p.model, p.persona, j.name, j.timeout_seconds,
                    (SELECT id FROM job_executions WHERE scheduled_job_id = j.id AND scheduled_for = ?2)
             FROM scheduled_jobs j JOIN prompts p ON p.id = j.prompt_id WHERE j.id = ?1",
        )?;
        for job in jobs {
            let mut rows = read.query(params![job, instant])?;
            while rows.next()?.is_some() {}
        }
        tx.query_row("SELECT max(id) FROM job_executions", [], |_| Ok(()))?;
    }
    tx.finish()
}

impl Prepared {
    pub fn execution(&self) -> i64 {
        self.execution
    }

    /// What the firing lag is measured from: a scheduled run's instant; for manual and
    /// catch-up runs (whose instant is not when they were asked for), when it was marked
    /// running. Parsed only after the process started, off the path to it.
    fn due(&self) -> (metrics::Trigger, Option<std::time::SystemTime>) {
        let trigger = metrics::Trigger::from_kind(&self.trigger);
        let due = match trigger {
            metrics::Trigger::Schedule => self
                .scheduled_for
                .as_deref()
                .and_then(super::parse_sql_time),
            _ => Some(self.marked_at),
        };
        let since_epoch = due.and_then(|t| u64::try_from(t.as_nanosecond()).ok());
        (
            trigger,
            since_epoch.map(|n| std::time::UNIX_EPOCH + Duration::from_nanos(n)),
        )
    }
}

/// One run from the start (manual runs): marked running, then executed.
pub async fn execute(
    shared: Arc<Shared>,
    execution: i64,
    cancel: runner::Cancel,
    live: runner::Live,
) {
    let s = shared.clone();
    let prepared =
        tokio::task::spawn_blocking(move || s.with_conn(move |c| start_batch(c, &[execution])))
            .await;
    let error = match prepared {
        Ok(Ok(mut p)) => match p.pop() {
            Some(p) => return run_prepared(shared, p, cancel, live).await,
            None => return, // deleted before it started: `start_batch` said so
        },
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    // The row was recorded and the client told, so it must not stay `pending`: it ends
    // `failed`, written (or retried, as any end) by the end recorder.
    warn!(
        execution,
        error, "cannot start the execution; recording it failed"
    );
    let error = format!("could not start: {error}");
    finish(&shared, execution, "failed", None, "", &error, false).await;
}

/// Runs an execution already marked running, records its end, then applies retention.
pub async fn run_prepared(
    shared: Arc<Shared>,
    prepared: Prepared,
    cancel: runner::Cancel,
    live: runner::Live,
) {
    let execution = prepared.execution;
    let job = prepared.job_name.clone();
    shared.register_run(execution, &job, cancel.clone());
    // Every run's output is offered to `logs -f` followers, who may attach at any time.
    let mut live = live;
    let output = live
        .output
        .get_or_insert_with(|| broadcast::channel(OUTPUT_CHUNKS).0)
        .subscribe();
    let forward = tokio::spawn(forward_output(output, execution, job.clone()));
    let status = run_marked(&shared, prepared, cancel, live).await;
    // The output ends with the process; the end follows its last line and the recorded row.
    let _ = forward.await;
    crate::logbus::bus().live(crate::logbus::Entry {
        line: output_line(&job, execution, LineKind::Log, status.to_string()),
        run_ended: true,
    });
    shared.unregister_run(execution);
    prune(&shared).await;
}

/// Output chunks (up to 64 KiB each) a slow forwarder may fall behind by before it loses some.
const OUTPUT_CHUNKS: usize = 64;

fn output_line(job: &str, execution: i64, kind: LineKind, text: String) -> LogLine {
    LogLine {
        time: crate::logging::now(),
        level: LogLevel::Info,
        kind,
        target: String::new(),
        job: Some(job.to_string()),
        execution: Some(execution),
        text,
    }
}

/// Hands a run's output to the log bus as lines, while anyone follows it.
async fn forward_output(mut rx: broadcast::Receiver<runner::Chunk>, execution: i64, job: String) {
    let bus = crate::logbus::bus();
    let mut out = LineSplitter::default();
    let mut err = LineSplitter::default();
    let send = |kind, text| {
        bus.live(crate::logbus::Entry {
            line: output_line(&job, execution, kind, text),
            run_ended: false,
        })
    };
    loop {
        match rx.recv().await {
            Ok(chunk) => {
                if !bus.wants_output(&job, execution) {
                    // A follower attaching later starts at a line boundary (more or less).
                    out.clear();
                    err.clear();
                    continue;
                }
                let (splitter, kind) = match chunk.stream {
                    runner::Stream::Stdout => (&mut out, LineKind::Stdout),
                    runner::Stream::Stderr => (&mut err, LineKind::Stderr),
                };
                splitter.push(&chunk.data, |l| send(kind, l));
            }
            Err(broadcast::error::RecvError::Lagged(n)) => send(
                LineKind::Stderr,
                format!("[silica-crond: {n} chunks of this run's output were not forwarded]"),
            ),
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    for (splitter, kind) in [(&mut out, LineKind::Stdout), (&mut err, LineKind::Stderr)] {
        if let Some(rest) = splitter.finish() {
            send(kind, rest);
        }
    }
}

/// Returns the status recorded.
async fn run_marked(
    shared: &Arc<Shared>,
    prepared: Prepared,
    cancel: runner::Cancel,
    live: runner::Live,
) -> &'static str {
    let execution = prepared.execution;
    let settings = shared.settings();
    let session_id = prepared.session_id.clone();
    let marker = format!("{}{execution}", shared.marker_prefix());
    let workdir = match runner::make_fresh_dir(&std::env::temp_dir(), &format!("{execution}")) {
        Ok(d) => d,
        Err(e) => {
            finish(
                shared,
                execution,
                "failed",
                None,
                "",
                &format!("cannot create a work directory: {e}"),
                false,
            )
            .await;
            return "failed";
        }
    };
    let values = [
        ("prompt", prepared.prompt.as_str()),
        ("model", prepared.model.as_str()),
        ("persona", prepared.persona.as_str()),
        ("session_id", session_id.as_str()),
        ("workdir", &workdir.to_string_lossy()),
        ("job_name", prepared.job_name.as_str()),
    ]
    .map(|(k, v)| (k, v.to_string()));
    let argv: Vec<String> = settings
        .file
        .runner_argv()
        .iter()
        .map(|arg| {
            values
                .iter()
                .fold(arg.clone(), |a, (k, v)| a.replace(&format!("{{{k}}}"), v))
        })
        .collect();
    let mut env: Vec<(String, String)> = INHERITED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.extend(
        values
            .iter()
            .map(|(k, v)| (format!("SILICA_CRON_{}", k.to_uppercase()), v.clone())),
    );
    let timeout = prepared
        .timeout
        .filter(|&t| t > 0)
        .map_or(settings.file.job_timeout_secs(), |t| t as u64);
    let mut spec = runner::Spec::new(argv, marker);
    spec.env = env;
    spec.workdir = runner::Workdir::Owned(workdir);
    spec.timeout = Duration::from_secs(timeout);
    spec.grace = Duration::from_secs(settings.file.kill_grace_secs());
    spec.output_cap = settings.file.output_cap_bytes();
    spec.nofile = crate::ORIGINAL_NOFILE.get().copied();

    info!(execution, job = %prepared.job_name, session = %session_id, "run started");
    let heartbeat = tokio::spawn(heartbeat(shared.clone(), execution));
    // The lag is recorded as soon as the process has started, not when the run ends.
    let (started_tx, started_rx) = oneshot::channel();
    let live = runner::Live {
        started: Some(started_tx),
        ..live
    };
    let lag = async {
        let at = started_rx.await.ok()?.at;
        if let (trigger, Some(due)) = prepared.due() {
            metrics::firing_lag(trigger, at.duration_since(due).unwrap_or_default());
        }
        Some(at)
    };
    let (outcome, spawned_at) = tokio::join!(runner::run(spec, live, cancel), lag);
    heartbeat.abort();
    if let Some(at) = spawned_at {
        metrics::run_duration(outcome.finished.duration_since(at).unwrap_or_default());
    }
    let (status, code, note) = match &outcome.status {
        runner::Status::Exited(0) => ("completed", Some(0), String::new()),
        runner::Status::Exited(c) => ("failed", Some(*c as i64), format!("exited with code {c}")),
        runner::Status::Signaled(s) => ("failed", None, format!("killed by signal {s}")),
        runner::Status::TimedOut => (
            "timed_out",
            None,
            format!("timed out after {timeout} s; every process of the run was stopped"),
        ),
        runner::Status::Cancelled => (
            "interrupted",
            None,
            "stopped: replaced by a newer run, or the daemon stopped".to_string(),
        ),
        runner::Status::SpawnFailed(e) => ("failed", None, e.clone()),
    };
    let error = [note.as_str(), outcome.stderr.trim_end()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    info!(execution, job = %prepared.job_name, status, exit_code = ?code, "run finished");
    finish(
        shared,
        execution,
        status,
        code,
        &outcome.stdout,
        &error,
        outcome.truncated,
    )
    .await;
    status
}

/// Records the end of a run and returns once it is committed. Ends are written by one task in
/// batches (one transaction, one fsync for all that ended meanwhile): with a commit per run, a
/// burst of thousands of runs queued behind the fsyncs.
async fn finish(
    shared: &Arc<Shared>,
    execution: i64,
    status: &str,
    code: Option<i64>,
    output: &str,
    error: &str,
    truncated: bool,
) {
    metrics::executions_ended(status, 1);
    let (done, committed) = oneshot::channel();
    let record = End {
        execution,
        status: status.to_string(),
        completed_at: sql_time_ms(Timestamp::now()),
        code,
        output: output.to_string(),
        error: error.to_string(),
        truncated,
        done,
    };
    if recorder(shared).send(record).is_err() || !matches!(committed.await, Ok(true)) {
        warn!(execution, "cannot record the end of a run");
    }
}

/// The end of a run, waiting to be written.
pub struct End {
    execution: i64,
    status: String,
    completed_at: String,
    code: Option<i64>,
    output: String,
    error: String,
    truncated: bool,
    /// Told whether the row was updated.
    done: oneshot::Sender<bool>,
}

fn recorder(shared: &Arc<Shared>) -> &mpsc::UnboundedSender<End> {
    shared.ends.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record_ends(shared.clone(), rx));
        tx
    })
}

async fn record_ends(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<End>) {
    const MAX_BATCH: usize = 512;
    // Ends that could not be written (a full disk, an I/O error) are tried again after a pause
    // that grows to RETRY_MAX, for up to RETRY_FOR: a run that ended while the disk was full is
    // recorded once there is space again, instead of being left `running`.
    const RETRY_FIRST: Duration = Duration::from_millis(250);
    const RETRY_MAX: Duration = Duration::from_secs(30);
    const RETRY_FOR: Duration = Duration::from_secs(3600);
    let mut pending: Vec<(End, Option<std::time::Instant>)> = Vec::new();
    let mut pause = RETRY_FIRST;
    loop {
        let mut fresh = Vec::new();
        if pending.is_empty() {
            if rx.recv_many(&mut fresh, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
            while let Ok(end) = rx.try_recv() {
                fresh.push(end);
            }
        }
        pending.extend(fresh.into_iter().map(|e| (e, None)));
        let batch = std::mem::take(&mut pending);
        let s = shared.clone();
        let Ok(written) = tokio::task::spawn_blocking(move || write_or_keep(&s, batch)).await
        else {
            continue;
        };
        for (end, result, failing_since) in written {
            match result {
                Ok(updated) => {
                    let _ = end.done.send(updated);
                }
                Err(e) => {
                    let since = failing_since.unwrap_or_else(std::time::Instant::now);
                    if since.elapsed() >= RETRY_FOR {
                        error!(execution = end.execution, error = %e, "giving up recording the end of a run after an hour of failures; it is marked interrupted at the next start");
                        let _ = end.done.send(false);
                    } else {
                        if failing_since.is_none() {
                            warn!(execution = end.execution, error = %e, "cannot record the end of a run yet; trying again");
                        }
                        pending.push((end, Some(since)));
                    }
                }
            }
        }
        if pending.is_empty() {
            pause = RETRY_FIRST;
        }
    }
}

type Written = (End, Result<bool, String>, Option<std::time::Instant>);

/// Writes a batch of ends in one transaction; if that fails, each end alone, so one bad row
/// cannot keep the others from being recorded. Each end comes back with whether its row was
/// updated, or the error that kept it from being written.
fn write_or_keep(shared: &Shared, batch: Vec<(End, Option<std::time::Instant>)>) -> Vec<Written> {
    let (ends, since): (Vec<End>, Vec<_>) = batch.into_iter().unzip();
    let results: Vec<Result<bool, String>> = match shared.with_conn(|c| write_ends(c, &ends)) {
        Ok(oks) => oks.into_iter().map(Ok).collect(),
        Err(_) => ends
            .iter()
            .map(|end| {
                shared
                    .with_conn(|c| write_ends(c, std::slice::from_ref(end)))
                    .map(|v| v[0])
            })
            .collect(),
    };
    ends.into_iter()
        .zip(results)
        .zip(since)
        .map(|((e, r), s)| (e, r, s))
        .collect()
}

fn write_ends(c: &mut rusqlite::Connection, ends: &[End]) -> rusqlite::Result<Vec<bool>> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut oks = Vec::with_capacity(ends.len());
    {
        let mut update = tx.prepare_cached(
            "UPDATE job_executions SET status = ?2, completed_at = ?3, last_seen_at = ?3, exit_code = ?4, output = ?5,
               error_message = nullif(?6, ''), output_truncated = ?7 WHERE id = ?1",
        )?;
        for e in ends {
            let n = update.execute(params![
                e.execution,
                e.status,
                e.completed_at,
                e.code,
                e.output,
                e.error,
                e.truncated
            ])?;
            oks.push(n == 1);
        }
    }
    tx.commit()?;
    Ok(oks)
}

/// History retention after a run ended: small batches, each its own short transaction, so the
/// scheduler and clients never wait long for the database.
async fn prune(shared: &Arc<Shared>) {
    let file = &shared.settings().file;
    let (per_job, days) = (file.keep_executions_per_job, file.keep_executions_days);
    if per_job.is_none() && days.is_none() {
        return;
    }
    const BATCH: i64 = 500;
    let mut total = 0;
    loop {
        let s = shared.clone();
        let removed = tokio::task::spawn_blocking(move || {
            s.with_conn(move |c| {
                let mut n = 0;
                if let Some(keep) = per_job {
                    n += c.execute(
                        "DELETE FROM job_executions WHERE id IN (
                           SELECT id FROM (
                             SELECT id, row_number() OVER (PARTITION BY coalesce(scheduled_job_id, -prompt_id) ORDER BY coalesce(started_at, scheduled_for) DESC, id DESC) AS rn
                             FROM job_executions WHERE status NOT IN ('pending', 'running'))
                           WHERE rn > ?1 LIMIT ?2)",
                        params![keep as i64, BATCH],
                    )?;
                }
                if let Some(days) = days {
                    n += c.execute(
                        "DELETE FROM job_executions WHERE id IN (
                           SELECT id FROM job_executions WHERE status NOT IN ('pending', 'running')
                             AND coalesce(completed_at, started_at, scheduled_for) < datetime('now', ?1) LIMIT ?2)",
                        params![format!("-{days} days"), BATCH],
                    )?;
                }
                Ok(n)
            })
        })
        .await;
        match removed {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                total += n;
                tokio::task::yield_now().await;
            }
            other => {
                warn!(result = ?other.map(|r| r.err()), "history retention failed; retried after the next run");
                break;
            }
        }
    }
    if total > 0 {
        info!(removed = total, "history retention pruned old executions");
    }
}

/// While a run lasts, its row says when the daemon last saw it (for `interrupted` rows).
async fn heartbeat(shared: Arc<Shared>, execution: i64) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = shared.clone();
        let now = sql_time_ms(Timestamp::now());
        let _ = tokio::task::spawn_blocking(move || {
            s.with_conn(move |c| c.execute("UPDATE job_executions SET last_seen_at = ?2 WHERE id = ?1 AND status = 'running'", params![execution, now]))
        })
        .await;
    }
}

/// Kills every process whose environment carries one of `markers` (runs of a daemon that died:
/// their processes were reparented away from us, so only the marker finds them).
pub fn kill_marked(markers: &[String]) -> usize {
    let wanted: Vec<Vec<u8>> = markers
        .iter()
        .map(|m| format!("{}={m}", runner::EXECUTION_ID_VAR).into_bytes())
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| wanted.iter().any(|w| w.as_slice() == var))
        {
            // SAFETY: sending a signal; the pid was just read from /proc.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

/// A random (version 4) UUID, the session id the agent gets.
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(trigger: &str, scheduled_for: Option<&str>, marked_at: Timestamp) -> Prepared {
        Prepared {
            prompt: String::new(),
            model: String::new(),
            persona: String::new(),
            job_name: String::new(),
            timeout: None,
            execution: 1,
            session_id: String::new(),
            scheduled_for: scheduled_for.map(str::to_string),
            trigger: trigger.to_string(),
            marked_at,
        }
    }

    /// A scheduled run's lag counts from its instant; a manual or catch-up run's from when
    /// it was marked running (its row's instant is not when it was asked for).
    #[test]
    fn the_lag_of_a_scheduled_run_counts_from_its_instant() {
        let marked = Timestamp::from_second(1_800_000_000).unwrap();
        let epoch = |s: u64| Some(std::time::UNIX_EPOCH + Duration::from_secs(s));
        // 2026-01-15 08:00:00 UTC
        let (t, due) = prepared("schedule", Some("2026-01-15 08:00:00"), marked).due();
        assert_eq!(t, metrics::Trigger::Schedule);
        assert_eq!(due, epoch(1_768_464_000));
        let (t, due) = prepared("catch-up", Some("2026-01-15 08:00:00"), marked).due();
        assert_eq!(t, metrics::Trigger::CatchUp);
        assert_eq!(due, epoch(1_800_000_000));
        let (t, due) = prepared("manual", None, marked).due();
        assert_eq!(t, metrics::Trigger::Manual);
        assert_eq!(due, epoch(1_800_000_000));
        // A row whose instant cannot be read records no lag rather than a wrong one.
        assert_eq!(prepared("schedule", Some("garbage"), marked).due().1, None);
    }
}
