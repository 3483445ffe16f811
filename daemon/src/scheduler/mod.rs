//! The firing engine. It sleeps until the next due instant (an absolute wall-clock deadline, see
//! [`timer`]), fires what is due (see [`plan`]), and re-plans when jobs change, migrations run,
//! the configuration is reloaded or the wall clock jumps. Each firing is recorded before its
//! process starts, keyed uniquely by (job, scheduled instant), so nothing fires twice.

pub mod external;
pub mod plan;
pub mod run;
pub mod timer;

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use rusqlite::{params, Connection};
use schedule::jiff::{tz::TimeZone, Timestamp};
use schedule::Schedule;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::state::{Pause, Shared};
use plan::Plannable;

/// A job as the scheduler needs it.
#[derive(Clone)]
pub struct Job {
    pub id: i64,
    pub name: String,
    pub prompt_id: i64,
    pub priority: i64,
    pub schedule: Schedule,
    pub tz: TimeZone,
    pub overlap: String,
    pub missed: String,
}

impl Job {
    fn plannable(&self) -> Plannable<'_> {
        Plannable {
            schedule: &self.schedule,
            tz: &self.tz,
        }
    }
}

/// A run waiting for a free slot: highest priority first, then the earliest instant.
#[derive(PartialEq, Eq)]
struct Pending {
    priority: i64,
    instant: i64,
    execution_id: i64,
    job_id: Option<i64>,
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.instant.cmp(&self.instant))
            .then(other.execution_id.cmp(&self.execution_id))
    }
}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// UTC text as SQLite's CURRENT_TIMESTAMP writes it (seconds), so rows compare as text.
pub fn sql_time(t: Timestamp) -> String {
    t.to_zoned_datetime(TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The same with milliseconds, for start and end times.
pub fn sql_time_ms(t: Timestamp) -> String {
    format!("{}.{:03}", sql_time(t), t.subsec_millisecond())
}

fn parse_sql_time(s: &str) -> Option<Timestamp> {
    let civil: schedule::jiff::civil::DateTime = s.get(..19)?.replace(' ', "T").parse().ok()?;
    civil
        .to_zoned_datetime(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

pub struct Scheduler {
    shared: Arc<Shared>,
    /// Runs in progress per job (for overlap policies), with their cancel handles.
    running: HashMap<i64, Vec<(i64, runner::Cancel)>>,
    /// Every run in progress, by execution id (manual ones too).
    active: usize,
    queue: BinaryHeap<Pending>,
    finished_tx: mpsc::UnboundedSender<(i64, Option<i64>)>,
    finished_rx: mpsc::UnboundedReceiver<(i64, Option<i64>)>,
    /// The limit last used when the open-files limit lowered `max_concurrent_runs` (logged
    /// once per value).
    clamped_to: Option<usize>,
    /// How many runs the open-files limit has room for (`fdlimit::runs_allowed`).
    fd_runs: usize,
    /// Work for the scheduler's database thread (see `with_db`); it ends with the scheduler.
    db_thread: std::sync::mpsc::Sender<DbWork>,
}

type DbWork = Box<dyn FnOnce() + Send>;

fn start_db_thread() -> std::sync::mpsc::Sender<DbWork> {
    let (tx, rx) = std::sync::mpsc::channel::<DbWork>();
    let spawned = std::thread::Builder::new()
        .name("scheduler-db".into())
        .spawn(move || {
            while let Ok(work) = rx.recv() {
                work();
            }
        });
    if let Err(e) = spawned {
        // `with_db` then reports every call as failed, and the scheduler logs why.
        warn!(error = %e, "cannot start the scheduler's database thread");
    }
    tx
}

impl Scheduler {
    pub fn new(shared: Arc<Shared>) -> Scheduler {
        // The open-files limit is set at start, and connection slots change only with a restart.
        let fd_runs = crate::fdlimit::soft_limit().map_or(usize::MAX, |l| {
            crate::fdlimit::runs_allowed(shared.max_connections(), l)
        });
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        Scheduler {
            shared,
            running: HashMap::new(),
            active: 0,
            queue: BinaryHeap::new(),
            finished_tx,
            finished_rx,
            clamped_to: None,
            fd_runs,
            db_thread: start_db_thread(),
        }
    }

    /// Runs until `shutdown`; then stops the runs in progress (they are recorded as interrupted).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let timer = match timer::WallTimer::new() {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot create the wall-clock timer; jobs will not fire");
                let _ = shutdown.changed().await;
                return;
            }
        };
        let mut recovered = false;
        let mut since = Timestamp::now();
        // Parsed jobs, kept until something changes: a deadline wake with 10,000 jobs must not
        // re-read and re-parse them all.
        let mut jobs: Option<Vec<Job>> = None;
        // Each job's first instant after `since`, kept with `jobs`: a wake evaluates only the
        // jobs that are due, and the next deadline is a minimum over this list. Evaluating all
        // 10,000 jobs on every wake put milliseconds between the instant and the start.
        let mut next_at: Option<Vec<Option<Timestamp>>> = None;
        let mut deadline: Option<Timestamp> = None;
        // The deadline whose warm-up (see `warm`) is done: the timer then sleeps until it.
        let mut warmed_for: Option<Timestamp> = None;
        let mut plan_now = true;
        // Watchdog pings come from this loop, so a wedged loop stops them (systemd then
        // restarts the daemon); without a watchdog this never wakes.
        let mut watchdog = crate::notify::Ticker::new();
        let mut generation = self.shared.generation();
        // At start, after a pause and after a restore: catch-up jobs get their missed run and
        // planning starts from now (instants that passed meanwhile follow the missed-run
        // policy, as for a daemon that was down).
        let mut resume_pending = true;
        loop {
            if plan_now {
                plan_now = false;
                let (open, line) = self.shared.scheduler_state();
                let pause = self.shared.pause_state();
                crate::notify::status(&format!("scheduler: {line}"));
                let g = self.shared.generation();
                if g != generation {
                    // A restore swapped the database: runs queued for the old file are gone
                    // with it, and the new file's unfinished rows are recovered as at start.
                    generation = g;
                    self.queue.clear();
                    recovered = false;
                    resume_pending = true;
                }
                if open && !recovered && pause != Pause::Restoring {
                    self.recover().await;
                    recovered = true;
                }
                if pause != Pause::No {
                    resume_pending = true;
                }
                if !open || pause != Pause::No {
                    self.shared.publish_plan(crate::state::Planned::default());
                    jobs = None;
                    next_at = None;
                    deadline = None;
                    tokio::select! {
                        _ = self.shared.replan.notified() => { plan_now = true; continue }
                        _ = watchdog.tick() => {
                            crate::notify::watchdog();
                            plan_now = true;
                            continue;
                        }
                        _ = shutdown.changed() => break,
                    }
                }
                if resume_pending {
                    resume_pending = false;
                    self.catch_up().await;
                    since = Timestamp::now();
                    next_at = None;
                }
                if jobs.is_none() {
                    next_at = None;
                    jobs = Some(self.with_db(load_jobs).await.unwrap_or_else(|e| {
                        warn!(error = %e, "cannot read jobs; retrying when something changes");
                        vec![]
                    }));
                }
                let current = jobs.as_deref().unwrap_or_default();
                let now = Timestamp::now();
                // The clock went back: plan from now, whatever woke us. The kernel's cancel
                // notice is not enough: a clock set between the timer's expiry and this reading,
                // or a wall clock shifted without a set (libfaketime), wakes us as `Due`, and
                // the instants planned from `since` would then sleep through the repeated span.
                if now < since {
                    since = now;
                    next_at = None;
                }
                let nexts = next_at.get_or_insert_with(|| {
                    current
                        .iter()
                        .map(|j| j.schedule.next_timestamp_after(since, &j.tz))
                        .collect()
                });
                let mut due: Vec<(Job, Timestamp)> = Vec::new();
                for (j, next) in current.iter().zip(nexts.iter_mut()) {
                    if next.is_some_and(|t| t <= now) {
                        due.extend(
                            plan::due(&j.plannable(), since, now)
                                .into_iter()
                                .map(|i| (j.clone(), i)),
                        );
                        *next = j.schedule.next_timestamp_after(now, &j.tz);
                    }
                }
                since = now;
                // Before the runs start, so nothing delays them once they are spawned.
                deadline = nexts.iter().flatten().min().copied();
                if !due.is_empty() {
                    self.fire(&due, "schedule").await;
                }
                self.dispatch().await;
                // After the runs started: a pass over the jobs' next instants (tens of
                // microseconds with 10,000 jobs), so status reads the plan without the database.
                self.shared.publish_plan(planned(current, nexts));
            }
            // A due instant is approached in two wakes: WARM_LEAD before it to warm up, then at it.
            let wake_at = deadline.map(|at| match warmed_for {
                Some(w) if w == at => at,
                _ => at.checked_sub(WARM_LEAD).unwrap_or(at),
            });
            tokio::select! {
                wake = async {
                    match wake_at {
                        Some(at) => timer.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    match (wake, deadline) {
                        (Ok(timer::Wake::ClockChanged), _) => {
                            info!("the wall clock was set; planning again");
                            plan_now = true;
                        }
                        // The warm-up wake, where it was expected. Woken well before it, the
                        // wall clock went back without a set the kernel reports (libfaketime,
                        // scenario 8): that is for the planning pass, not a warm-up and an hour's
                        // sleep until the old instant.
                        (_, Some(at))
                            if warmed_for != Some(at)
                                && (wake_at.unwrap_or(at)..at).contains(&Timestamp::now()) =>
                        {
                            warmed_for = Some(at);
                            if let (Some(j), Some(n)) = (jobs.as_deref(), next_at.as_deref()) {
                                self.warm(j, n, at).await;
                            }
                        }
                        _ => plan_now = true,
                    }
                }
                _ = self.shared.replan.notified() => {
                    jobs = None;
                    next_at = None;
                    plan_now = true;
                }
                Some((execution, job)) = self.finished_rx.recv() => {
                    self.finished(execution, job);
                    self.dispatch().await;
                }
                _ = watchdog.tick() => crate::notify::watchdog(),
                _ = shutdown.changed() => break,
            }
        }
        self.stop_all().await;
    }

    /// Runs `f` on the scheduler's database thread. A thread of its own rather than tokio's
    /// blocking pool: the pool's idle threads exit after 10 s, so nearly every firing paid for
    /// a thread creation between the due instant and the process start (seen with strace).
    /// This thread waits in a blocking receive, so it adds no wake-ups.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = self.shared.clone();
        let work: DbWork = Box::new(move || {
            let _ = tx.send(shared.with_conn(f));
        });
        self.db_thread
            .send(work)
            .map_err(|_| "the scheduler's database thread is gone".to_string())?;
        rx.await
            .map_err(|_| "the scheduler's database thread stopped".to_string())?
    }

    /// Runs a moment before the due instant `at` what firing at it will run cold after a long
    /// sleep: the schema-state check, and on the database thread the reads of the due jobs'
    /// prompts and the index probes of their rows. Nothing is written and nothing decided: the
    /// pass at `at` reads everything again, and is then about a millisecond quicker (measured
    /// with `bench/firing.sh`: the same work took 0.3-0.6 ms more at each step after a minute
    /// asleep, on a machine whose caches and CPUs had cooled).
    async fn warm(&self, jobs: &[Job], nexts: &[Option<Timestamp>], at: Timestamp) {
        let _ = self.shared.scheduler_state();
        let due: Vec<i64> = jobs
            .iter()
            .zip(nexts)
            .filter(|(_, n)| **n == Some(at))
            .map(|(j, _)| j.id)
            .take(WARM_JOBS)
            .collect();
        let instant = sql_time(at);
        if let Err(e) = self.with_db(move |c| run::warm(c, &due, &instant)).await {
            tracing::debug!(error = %e, "warming up before a due instant failed");
        }
    }

    /// Executions left pending or running by a daemon that died become `interrupted`, their
    /// processes are killed.
    async fn recover(&mut self) {
        let prefix = self.shared.marker_prefix();
        let interrupted = self
            .with_db(|c| {
                let mut stmt = c.prepare("SELECT id FROM job_executions WHERE status IN ('pending', 'running')")?;
                let ids: Vec<i64> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
                c.execute(
                    "UPDATE job_executions SET status = 'interrupted', completed_at = coalesce(last_seen_at, started_at, CURRENT_TIMESTAMP),
                       error_message = 'interrupted: the daemon stopped while this ran (last seen ' || coalesce(last_seen_at, started_at, 'never') || ')'
                     WHERE status IN ('pending', 'running')",
                    [],
                )?;
                Ok(ids)
            })
            .await;
        match interrupted {
            Ok(ids) if !ids.is_empty() => {
                crate::metrics::executions_ended("interrupted", ids.len() as u64);
                let markers: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
                let killed = run::kill_marked(&markers);
                warn!(executions = ?ids, processes_killed = killed, "runs left by a previous daemon are marked interrupted");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot mark interrupted runs"),
        }
    }

    /// `catch-up` jobs run once for what they missed (the daemon was down or paused, or a
    /// restore brought back an older database): the latest instant since their last run.
    async fn catch_up(&mut self) {
        let jobs = self.with_db(load_jobs).await.unwrap_or_default();
        let now = Timestamp::now();
        for job in jobs.iter().filter(|j| j.missed == "catch-up") {
            let id = job.id;
            let last = self
                .with_db(move |c| {
                    c.query_row(
                        "SELECT coalesce((SELECT max(scheduled_for) FROM job_executions WHERE scheduled_job_id = ?1), created_at) FROM scheduled_jobs WHERE id = ?1",
                        [id],
                        |r| r.get::<_, Option<String>>(0),
                    )
                })
                .await
                .ok()
                .flatten()
                .and_then(|s| parse_sql_time(&s));
            if let Some(instant) =
                last.and_then(|l| plan::missed_run(&job.plannable(), &job.missed, l, now))
            {
                info!(job = %job.name, instant = %instant, "catching up a run missed while the daemon was down or paused");
                self.fire(&[(job.clone(), instant)], "catch-up").await;
            }
        }
    }

    /// Records the runs for (job, instant) pairs that do not exist yet, all in one transaction,
    /// applying each job's overlap policy; queues the ones to start.
    async fn fire(&mut self, due: &[(Job, Timestamp)], trigger: &'static str) {
        let mut rows: Vec<(i64, i64, String, &'static str)> = Vec::with_capacity(due.len());
        let policies: Vec<(i64, &str)> = due
            .iter()
            .map(|(j, _)| (j.id, j.overlap.as_str()))
            .collect();
        let queued: std::collections::HashSet<i64> =
            self.queue.iter().filter_map(|p| p.job_id).collect();
        let decisions = plan::overlap_decisions(&policies, |job| {
            self.running.get(&job).is_some_and(|r| !r.is_empty()) || queued.contains(&job)
        });
        for ((job, instant), decision) in due.iter().zip(decisions) {
            if decision == plan::Overlap::Replace {
                for (execution, cancel) in self.running.get(&job.id).cloned().unwrap_or_default() {
                    info!(job = %job.name, execution, "replacing the previous run");
                    cancel.cancel();
                }
            }
            let status = match decision {
                plan::Overlap::Skip => "skipped",
                plan::Overlap::Start | plan::Overlap::Replace => "pending",
            };
            rows.push((job.id, job.prompt_id, sql_time(*instant), status));
        }
        // When nothing older waits for a slot, the new runs that fit in the free slots are
        // marked running in the same transaction: one commit (one fsync) between the due
        // instant and the process start. Otherwise they queue behind the older ones.
        let free = if self.queue.is_empty() {
            self.limit().saturating_sub(self.active)
        } else {
            0
        };
        let order: Vec<(i64, i64)> = due
            .iter()
            .map(|(j, i)| (j.priority, i.as_second()))
            .collect();
        let inserted = self
            .with_db(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut ids = Vec::with_capacity(rows.len());
                {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR IGNORE INTO job_executions (scheduled_job_id, prompt_id, scheduled_for, trigger_kind, status, completed_at, error_message)
                         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?5 = 'skipped' THEN CURRENT_TIMESTAMP END,
                                 CASE WHEN ?5 = 'skipped' THEN 'skipped: the previous run of this job was still running' END)",
                    )?;
                    for (job_id, prompt_id, at, status) in &rows {
                        let n = stmt.execute(params![job_id, prompt_id, at, trigger, status])?;
                        ids.push((n == 1).then(|| tx.last_insert_rowid()).map(|id| (id, *status)));
                    }
                }
                // Highest priority first, then the earliest instant, then the first inserted.
                let mut new: Vec<(i64, i64, i64)> = ids
                    .iter()
                    .zip(&order)
                    .filter_map(|(id, &(priority, instant))| match id {
                        Some((id, "pending")) => Some((priority, instant, *id)),
                        _ => None,
                    })
                    .collect();
                new.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                let chosen: Vec<i64> = new.iter().take(free).map(|&(_, _, id)| id).collect();
                let prepared = run::mark_running(&tx, &chosen)?;
                tx.commit()?;
                Ok((ids, prepared))
            })
            .await;
        let (ids, prepared) = match inserted {
            Ok(ids) => ids,
            Err(e) => {
                warn!(runs = due.len(), error = %e, "cannot record due runs");
                return;
            }
        };
        let started: std::collections::HashSet<i64> =
            prepared.iter().map(|p| p.execution()).collect();
        let mut jobs: HashMap<i64, Option<i64>> = HashMap::new();
        for ((job, instant), id) in due.iter().zip(ids) {
            match id {
                Some((execution, "pending")) if started.contains(&execution) => {
                    jobs.insert(execution, Some(job.id));
                }
                Some((execution, "pending")) => self.queue.push(Pending {
                    priority: job.priority,
                    instant: instant.as_second(),
                    execution_id: execution,
                    job_id: Some(job.id),
                }),
                Some((execution, _)) => {
                    crate::metrics::executions_ended("skipped", 1);
                    info!(job = %job.name, execution, "skipped: the previous run is still running")
                }
                None => {} // already recorded: this (job, instant) fired before
            }
        }
        self.launch(prepared, &jobs);
    }

    /// The concurrency limit: `max_concurrent_runs`, lowered if the open-files limit needs it.
    fn limit(&mut self) -> usize {
        let file = &self.shared.settings().file;
        let configured = file.max_concurrent();
        let limit = configured.min(self.fd_runs);
        if limit < configured && self.clamped_to != Some(limit) {
            warn!(
                max_concurrent_runs = configured,
                allowed = limit,
                "the open-files limit (RLIMIT_NOFILE) allows fewer concurrent runs than max_concurrent_runs; the rest wait in the queue"
            );
        }
        self.clamped_to = (limit < configured).then_some(limit);
        limit
    }

    /// Starts the processes of runs already marked running.
    fn launch(&mut self, prepared: Vec<run::Prepared>, jobs: &HashMap<i64, Option<i64>>) {
        for p in prepared {
            let execution = p.execution();
            let job = jobs.get(&execution).copied().flatten();
            let cancel = runner::Cancel::new();
            if let Some(job) = job {
                self.running
                    .entry(job)
                    .or_default()
                    .push((execution, cancel.clone()));
            }
            self.active += 1;
            let shared = self.shared.clone();
            let done = self.finished_tx.clone();
            tokio::spawn(async move {
                run::run_prepared(shared, p, cancel, runner::Live::default()).await;
                let _ = done.send((execution, job));
            });
        }
    }

    /// Starts queued runs while slots are free: all of them marked running in one transaction,
    /// then their processes started.
    async fn dispatch(&mut self) {
        // Queued runs wait while paused; they start on resume.
        if self.shared.pause_state() != Pause::No {
            return;
        }
        let limit = self.limit();
        let mut batch = Vec::new();
        while self.active + batch.len() < limit {
            let Some(p) = self.queue.pop() else { break };
            batch.push(p);
        }
        if batch.is_empty() {
            return;
        }
        let ids: Vec<i64> = batch.iter().map(|p| p.execution_id).collect();
        let prepared = self.with_db(move |c| run::start_batch(c, &ids)).await;
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                warn!(runs = batch.len(), error = %e, "cannot mark due runs running; they stay pending");
                return;
            }
        };
        let jobs: HashMap<i64, Option<i64>> =
            batch.iter().map(|p| (p.execution_id, p.job_id)).collect();
        self.launch(prepared, &jobs);
    }

    fn finished(&mut self, execution: i64, job: Option<i64>) {
        self.active = self.active.saturating_sub(1);
        if let Some(runs) = job.and_then(|j| self.running.get_mut(&j)) {
            runs.retain(|(e, _)| *e != execution);
        }
    }

    /// Stops every run in progress and waits for them to be recorded.
    async fn stop_all(&mut self) {
        for (_, cancel) in self.running.values().flatten() {
            cancel.cancel();
        }
        while self.active > 0 {
            match self.finished_rx.recv().await {
                Some((e, j)) => self.finished(e, j),
                None => break,
            }
        }
    }
}

/// How long before a due instant the scheduler wakes to warm up (`Scheduler::warm`); well
/// above the warm-up's own length, so the instant itself is not delayed.
const WARM_LEAD: schedule::jiff::SignedDuration = schedule::jiff::SignedDuration::from_millis(5);

/// Due jobs whose rows are warmed up; a burst beyond this is bound by spawning anyway.
const WARM_JOBS: usize = 64;

/// Fire instants status lists.
const STATUS_NEXT_FIRES: usize = 5;

/// The job count and the soonest few (job, instant) pairs, from the per-job next instants.
fn planned(jobs: &[Job], nexts: &[Option<Timestamp>]) -> crate::state::Planned {
    let mut soonest: Vec<(Timestamp, usize)> = Vec::with_capacity(STATUS_NEXT_FIRES + 1);
    for (i, t) in nexts.iter().enumerate() {
        let Some(t) = *t else { continue };
        if soonest.len() == STATUS_NEXT_FIRES && soonest.last().is_some_and(|l| l.0 <= t) {
            continue;
        }
        let at = soonest.partition_point(|s| s.0 <= t);
        soonest.insert(at, (t, i));
        soonest.truncate(STATUS_NEXT_FIRES);
    }
    crate::state::Planned {
        active_jobs: Some(jobs.len() as u64),
        next_fires: soonest
            .into_iter()
            .map(|(t, i)| proto::message::NextFire {
                job: jobs[i].name.clone(),
                at: t
                    .to_zoned_datetime(jobs[i].tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            })
            .collect(),
    }
}

fn load_jobs(c: &mut Connection) -> rusqlite::Result<Vec<Job>> {
    let mut stmt = c.prepare(
        "SELECT j.id, j.name, j.prompt_id, coalesce(p.priority, 1), j.cron_expression, j.timezone, j.overlap_policy, j.missed_policy
         FROM scheduled_jobs j JOIN prompts p ON p.id = j.prompt_id WHERE coalesce(j.is_active, 0)",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut jobs = Vec::new();
    for row in rows {
        let (id, name, prompt_id, priority, expr, zone, overlap, missed) = row?;
        // Rows written by other tools may hold what this daemon refuses: say so, skip the job.
        let schedule = match Schedule::parse(&expr) {
            Ok(s) if s.never_reason().is_none() => s,
            Ok(s) => {
                warn!(job = %name, reason = ?s.never_reason(), "job can never fire; skipped");
                continue;
            }
            Err(e) => {
                warn!(job = %name, expression = %expr, error = %e, "job has an invalid cron expression; skipped");
                continue;
            }
        };
        let tz = match zone.as_deref() {
            None | Some("") => TimeZone::system(),
            Some(z) => match schedule::time_zone(z) {
                Ok(tz) => tz,
                Err(e) => {
                    warn!(job = %name, zone = %z, error = %e, "job names an unknown time zone; skipped");
                    continue;
                }
            },
        };
        jobs.push(Job {
            id,
            name,
            prompt_id,
            priority,
            schedule,
            tz,
            overlap,
            missed,
        });
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(priority: i64, instant: i64, execution_id: i64) -> Pending {
        Pending {
            priority,
            instant,
            execution_id,
            job_id: Some(execution_id),
        }
    }

    #[test]
    fn the_queue_starts_high_priority_first_then_the_earliest_instant() {
        let mut q = BinaryHeap::new();
        for p in [
            pending(1, 100, 1),
            pending(3, 160, 2),
            pending(2, 100, 3),
            pending(3, 100, 5),
            pending(3, 100, 4),
            pending(1, 40, 6),
        ] {
            q.push(p);
        }
        let order: Vec<i64> = std::iter::from_fn(|| q.pop().map(|p| p.execution_id)).collect();
        // priority 3: instant 100 (ids 4, 5 in id order), then 160; priority 2; priority 1:
        // instant 40, then 100.
        assert_eq!(order, vec![4, 5, 2, 3, 6, 1]);
    }
}
