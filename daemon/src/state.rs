//! What the daemon's tasks share: settings (reloadable), the database, the schema's state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use proto::cli::{GlobalArgs, ServeArgs};
use proto::message::{
    BackupRequest, ErrorKind, ErrorReply, Exit, MigrateRequest, NextFire, Output, Request,
    RestoreRequest, RunningExecution, StatusInfo,
};
use proto::paths::Settings;
use proto::records::Reply;
use tracing::{info, warn};

use crate::backup::{self, BackupError, Policy};
use crate::migrate::script::Source;
use crate::migrate::store::{DataVersion, Db};
use crate::migrate::{self, Ctx, Sink};

pub struct Shared {
    args: GlobalArgs,
    serve: ServeArgs,
    /// Swapped whole on reload; readers take a cheap reference.
    settings: RwLock<Arc<Settings>>,
    db: Mutex<Db>,
    started: Instant,
    /// The last schema state, valid while the database's data_version and the source stay the
    /// same (status is asked often; the answer changes rarely).
    schema_cache: Mutex<SchemaCache>,
    /// Writes to the database's files since status last looked: while there are none, the
    /// cached schema state is answered without asking SQLite (whose read transaction costs
    /// several fcntl locks under the database mutex). None when inotify is unavailable.
    writes: Option<crate::dirwatch::Writes>,
    pid: u32,
    /// Poked when jobs, the schema or the configuration change: the scheduler plans again.
    pub replan: tokio::sync::Notify,
    /// Every run in progress (scheduled and manual) with its job's name, so a stopping daemon
    /// can stop them all; ordered, so that status lists the oldest.
    runs: Mutex<std::collections::BTreeMap<i64, (runner::Cancel, String)>>,
    /// What the scheduler last planned, for status (which must not touch the database).
    planned: Mutex<Arc<Planned>>,
    /// The queue of run ends to the task that records them (started on first use).
    pub ends: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::scheduler::run::End>>,
    /// Where the HTTP side listens, once it does (the real port when 0 was asked for).
    http_bound: std::sync::OnceLock<std::net::SocketAddr>,
    /// The operator's pause (`silica-cron pause`), mirrored by a marker file beside the
    /// database so that it survives a restart.
    paused: AtomicBool,
    /// A restore is under way: nothing fires and record requests wait for it to end.
    restoring: AtomicBool,
    /// Counts database swaps (restores): the scheduler drops what it knew of the old file.
    generation: AtomicU64,
    /// Backups, restores and migrations, one at a time: a backup must not read a file that a
    /// restore or a rebuild is replacing. Taken before the database lock, never after it.
    maintenance: Mutex<()>,
}

#[derive(Default)]
struct SchemaCache {
    entry: Option<(DataVersion, Source, SchemaState)>,
    /// Polls of `writes` that saw a write, and how many of them a check of `data_version`
    /// has covered: the entry is answered without a check only when the two are equal.
    writes_seen: u64,
    writes_checked: u64,
}

/// Why the scheduler does not fire, apart from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    No,
    /// `silica-cron pause`, until `silica-cron resume` (kept across restarts).
    Operator,
    /// For the length of a restore.
    Restoring,
}

/// The scheduler's plan as status shows it, published after each planning pass.
#[derive(Default)]
pub struct Planned {
    /// None while the scheduler is held (it has not read the jobs).
    pub active_jobs: Option<u64>,
    pub next_fires: Vec<NextFire>,
}

/// Runs listed by name in status; the count covers all.
const STATUS_RUNS: usize = 5;

/// Where the database stands against the revision files.
#[derive(Clone)]
pub struct SchemaState {
    pub revisions: Vec<String>,
    pub heads: Vec<String>,
    pub at_head: bool,
    pub note: Option<String>,
}

impl Shared {
    pub fn new(args: GlobalArgs, serve: ServeArgs, settings: Settings, db: Db) -> Shared {
        let writes = crate::dirwatch::Writes::new(&settings.db)
            .inspect_err(|e| {
                warn!(error = %e, "cannot watch the database's directory; status asks SQLite every time")
            })
            .ok();
        let marker = settings.pause_marker();
        Shared {
            writes,
            args,
            serve,
            settings: RwLock::new(Arc::new(settings)),
            db: Mutex::new(db),
            started: Instant::now(),
            schema_cache: Mutex::new(SchemaCache::default()),
            pid: std::process::id(),
            replan: tokio::sync::Notify::new(),
            runs: Mutex::new(std::collections::BTreeMap::new()),
            planned: Mutex::new(Arc::default()),
            ends: std::sync::OnceLock::new(),
            http_bound: std::sync::OnceLock::new(),
            paused: AtomicBool::new(marker.exists()),
            restoring: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            maintenance: Mutex::new(()),
        }
    }

    pub fn pause_state(&self) -> Pause {
        if self.restoring.load(Ordering::SeqCst) {
            Pause::Restoring
        } else if self.paused.load(Ordering::SeqCst) {
            Pause::Operator
        } else {
            Pause::No
        }
    }

    /// Moves when a restore swapped the database file.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops firing until `resume`; the marker file keeps it so across restarts. Runs in
    /// progress go on.
    pub fn pause(&self) -> Result<String, ErrorReply> {
        let marker = self.settings().pause_marker();
        if self.paused.load(Ordering::SeqCst) {
            return Ok(crate::pause::ALREADY_PAUSED.into());
        }
        crate::pause::write(&marker).map_err(|e| ErrorReply::new(ErrorKind::Database, e))?;
        self.paused.store(true, Ordering::SeqCst);
        info!(marker = %marker.display(), "scheduler paused");
        self.replan.notify_one();
        Ok(crate::pause::PAUSED.into())
    }

    pub fn resume(&self) -> Result<String, ErrorReply> {
        let marker = self.settings().pause_marker();
        crate::pause::remove(&marker).map_err(|e| ErrorReply::new(ErrorKind::Database, e))?;
        if !self.paused.swap(false, Ordering::SeqCst) {
            return Ok(crate::pause::NOT_PAUSED.into());
        }
        info!("scheduler resumed");
        self.replan.notify_one();
        Ok(crate::pause::RESUMED.into())
    }

    /// `silica-cron backup`: a consistent copy while the scheduler keeps writing.
    pub fn backup(&self, req: &BackupRequest) -> Result<backup::Written, ErrorReply> {
        let _one = self.maintenance();
        let settings = self.settings();
        let policy = Policy::from_settings(&settings);
        let dest = match &req.path {
            Some(p) => p.clone(),
            None => {
                std::fs::create_dir_all(&policy.dir).map_err(|e| {
                    ErrorReply::new(
                        ErrorKind::Database,
                        format!(
                            "cannot create the backup directory {}: {e}",
                            policy.dir.display()
                        ),
                    )
                })?;
                backup::default_path(&policy)
            }
        };
        let written = backup::backup_to(&settings.db, &dest, req.force).map_err(backup_reply)?;
        info!(path = %written.path.display(), bytes = written.bytes, "backup written");
        Ok(written)
    }

    fn run_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        ids.sort();
        ids
    }

    /// `silica-cron restore PATH`: check the file, pause, deal with runs in progress, back up
    /// the current database, swap the file in, resume (unless the operator had paused).
    pub fn restore(
        &self,
        req: &RestoreRequest,
        runtime: &tokio::runtime::Handle,
        send: &mut dyn FnMut(Output),
    ) -> Result<Exit, ErrorReply> {
        let _one = self.maintenance();
        let _keepalive = crate::notify::Keepalive::migrating();
        let settings = self.settings();
        let source = crate::source_for(&settings, req.migrations_dir.clone());
        let production = settings.production || req.production;
        let shown = req.path.display().to_string();
        let (prepared, revisions, behind) =
            prepare_restore(&req.path, &settings.db, &source, production, send)?;
        self.restoring.store(true, Ordering::SeqCst);
        let _restoring = Restoring(self);
        self.replan.notify_one();
        let running = self.run_ids();
        if !running.is_empty() {
            let ids = join_ids(&running);
            if !req.force {
                return Err(ErrorReply::new(
                    ErrorKind::Conflict,
                    format!("{} run(s) in progress (executions {ids}); wait for them to end, or use --force to interrupt them (recorded as interrupted); nothing was changed", running.len()),
                ));
            }
            send(Output::Stderr(format!(
                "Interrupting {} run(s) in progress (executions {ids})",
                running.len()
            )));
            let grace = std::time::Duration::from_secs(settings.file.kill_grace_secs() + 5);
            runtime.block_on(self.stop_all_runs(grace));
        }
        backup_before_restore(&settings, send)?;
        {
            let mut db = self.db();
            // A run that started between the check above and now would write its end into
            // the new file; the scheduler fires nothing while restoring, so this is a race
            // with a run that was being started at the very moment of the pause.
            let late = self.run_ids();
            if !late.is_empty() {
                return Err(ErrorReply::new(
                    ErrorKind::Busy,
                    format!("run(s) {} started while the restore was being prepared; retry; nothing was changed", join_ids(&late)),
                ));
            }
            backup::swap(prepared, &mut db).map_err(backup_reply)?;
            self.forget_schema_state();
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        info!(from = %shown, database = %settings.db.display(), "database restored");
        restored(&settings, &shown, &revisions, behind && !production, send);
        Ok(Exit::OK)
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configured connection slots (`max_connections`, default 1024).
    pub fn configured_connections(&self) -> usize {
        self.settings().file.max_connections.unwrap_or(1024)
    }

    /// The connection slots in use: the configured ones, fewer when the open-files limit has
    /// no room for them (`fdlimit`).
    pub fn max_connections(&self) -> usize {
        let configured = self.configured_connections();
        crate::fdlimit::soft_limit().map_or(configured, |l| {
            crate::fdlimit::connections_allowed(configured, l)
        })
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the database cleanly (checkpoints the WAL and removes its files when last).
    pub fn close_db(&self) {
        self.db().shut();
    }

    /// Re-reads the configuration; a bad file keeps the running configuration.
    pub fn reload(&self) -> Result<(), ErrorReply> {
        crate::notify::reloading();
        let result = self.reread();
        crate::notify::reloaded(result.as_ref().err().map(|e| e.message.as_str()));
        result
    }

    fn reread(&self) -> Result<(), ErrorReply> {
        let old = self.settings();
        match Settings::resolve(&self.args) {
            Ok(new) => {
                if new.db != old.db || new.socket != old.socket {
                    warn!("the database and socket paths change only with a restart; keeping {} and {}", old.db.display(), old.socket.display());
                }
                if self.http_config_with(&new) != self.http_config_with(&old) {
                    warn!(
                        "the HTTP address changes only with a restart; keeping {}",
                        self.http_address()
                            .unwrap_or_else(|| "none (not listening)".into())
                    );
                }
                if new.file.max_connections != old.file.max_connections {
                    warn!(
                        "max_connections changes only with a restart; keeping {}",
                        old.file.max_connections.unwrap_or(1024)
                    );
                }
                let mut kept = Settings {
                    db: old.db.clone(),
                    socket: old.socket.clone(),
                    lock: old.lock.clone(),
                    ..new
                };
                // The server's connection slots were counted at start; the settings say so too.
                kept.file.max_connections = old.file.max_connections;
                crate::logbus::bus().set_capacity(kept.file.log_buffer());
                *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(kept);
                info!("configuration reloaded");
                self.replan.notify_one();
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "configuration not reloaded; the previous one stays in force");
                Err(ErrorReply::new(
                    ErrorKind::InvalidArgument,
                    format!("configuration not reloaded, the previous one stays in force: {e}"),
                ))
            }
        }
    }

    pub fn schema_state(&self) -> SchemaState {
        let source = crate::source_for(&self.settings(), None);
        self.unwritten_schema_state(&source)
            .unwrap_or_else(|| self.schema_state_with(&mut self.db()))
    }

    /// The cached schema state when nobody has written the database since it was checked.
    /// A writer that finished before this call has its events queued already (inotify queues
    /// them in the write itself), so a client that changed the database and then asks is
    /// never answered from before its change.
    fn unwritten_schema_state(&self, source: &Source) -> Option<SchemaState> {
        let writes = self.writes.as_ref()?;
        let mut cache = self.schema_cache();
        if writes.written() {
            cache.writes_seen += 1;
        }
        if cache.writes_seen != cache.writes_checked {
            return None;
        }
        match &cache.entry {
            Some((_, s, state)) if s == source && *source == Source::BuiltIn => Some(state.clone()),
            _ => None,
        }
    }

    fn schema_cache(&self) -> MutexGuard<'_, SchemaCache> {
        self.schema_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn schema_state_with(&self, db: &mut Db) -> SchemaState {
        let source = crate::source_for(&self.settings(), None);
        // Taken before data_version is read: the writes seen so far are covered by this check.
        let seen = self.schema_cache().writes_seen;
        let version = db.data_version();
        let mut cache = self.schema_cache();
        cache.writes_checked = cache.writes_checked.max(seen);
        // A directory source may change under us; only the built-in files are cached.
        if let (Some(v), Some((cv, cs, state))) = (version, cache.entry.as_ref()) {
            if *cv == v && *cs == source && source == Source::BuiltIn {
                return state.clone();
            }
        }
        let state = schema_state(db, &source);
        cache.entry = version.map(|v| (v, source, state.clone()));
        state
    }

    fn forget_schema_state(&self) {
        self.schema_cache().entry = None;
    }

    pub fn status(&self) -> Result<StatusInfo, ErrorReply> {
        let schema = self.schema_state();
        let gate = self.gate_for(&schema);
        self.status_from(schema, gate)
    }

    fn status_from(
        &self,
        schema: SchemaState,
        gate: Result<(), ErrorReply>,
    ) -> Result<StatusInfo, ErrorReply> {
        let settings = self.settings();
        let scheduler_line = scheduler_line(&schema, &gate, self.pause_state());
        let planned = self
            .planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (running_count, running) = {
            let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            let few = runs
                .iter()
                .take(STATUS_RUNS)
                .map(|(&execution, (_, job))| RunningExecution {
                    execution,
                    job: job.clone(),
                })
                .collect();
            (runs.len() as u64, few)
        };
        Ok(StatusInfo {
            pid: self.pid,
            version: proto::PRODUCT_VERSION.into(),
            uptime_secs: self.started.elapsed().as_secs(),
            database: settings.db.clone(),
            socket: settings.socket.clone(),
            environment: if settings.production {
                "production"
            } else {
                "development"
            }
            .into(),
            scheduler: scheduler_line,
            revisions: schema.revisions,
            heads: schema.heads,
            at_head: schema.at_head,
            schema_note: schema.note,
            http: self.http_address(),
            active_jobs: planned.active_jobs,
            running_count,
            running,
            next_fires: planned.next_fires.clone(),
        })
    }

    /// The HTTP side's host and port: flags beat the config file; no port, no HTTP side.
    pub fn http_config(&self) -> Option<(String, u16)> {
        self.http_config_with(&self.settings())
    }

    fn http_config_with(&self, s: &Settings) -> Option<(String, u16)> {
        let port = self.serve.bind_port.or(s.file.bind_port)?;
        let host = self
            .serve
            .bind_host
            .clone()
            .or(s.file.bind_host.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        Some((host, port))
    }

    pub fn set_http_bound(&self, addr: std::net::SocketAddr) {
        let _ = self.http_bound.set(addr);
    }

    /// Where the HTTP side listens (not what a reloaded file asks for: that needs a restart).
    pub fn http_address(&self) -> Option<String> {
        self.http_bound.get().map(|a| a.to_string())
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn runs_in_progress(&self) -> usize {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// SQLite's data_version on the daemon's connection (moves when another process commits).
    pub fn data_version(&self) -> Option<DataVersion> {
        self.db().data_version()
    }

    pub fn register_run(&self, execution: i64, job: &str, cancel: runner::Cancel) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(execution, (cancel, job.to_string()));
    }

    /// The scheduler's latest plan, for status.
    pub fn publish_plan(&self, planned: Planned) {
        *self.planned.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(planned);
    }

    pub fn unregister_run(&self, execution: i64) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&execution);
    }

    /// Stops every run in progress and waits (bounded) until each has recorded its end.
    pub async fn stop_all_runs(&self, limit: std::time::Duration) {
        let cancels: Vec<runner::Cancel> = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(c, _)| c.clone())
            .collect();
        for c in cancels {
            c.cancel();
        }
        let deadline = tokio::time::Instant::now() + limit;
        while !self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Runs `f` on the database connection (blocking: call from a blocking thread).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, String> {
        let mut db = self.db();
        let conn = db.writer().map_err(|e| e.to_string())?;
        f(conn).map_err(|e| e.to_string())
    }

    /// Whether jobs may fire (the database is at head and has the tables' current shape), and
    /// the scheduler's state in `silica-cron status`'s words.
    pub fn scheduler_state(&self) -> (bool, String) {
        let mut db = self.db();
        let schema = self.schema_state_with(&mut db);
        drop(db);
        let gate = self.gate_for(&schema);
        (
            gate.is_ok(),
            scheduler_line(&schema, &gate, self.pause_state()),
        )
    }

    /// Processes of this daemon's runs carry `SILICA_CRON_EXECUTION_ID=<prefix><id>`; the prefix
    /// (a hash of the database path) keeps two daemons' runs apart.
    pub fn marker_prefix(&self) -> String {
        let h = proto::paths::fnv1a(self.settings().db.as_os_str().as_encoded_bytes());
        format!("{:08x}-", h as u32)
    }

    /// A prompt, job or execution request. The tables have their current shape only at head.
    /// Prompts and jobs exist (and fire) only when the database is at head and has the tables'
    /// current shape.
    fn jobs_gate(&self, db: &mut Db) -> Result<(), ErrorReply> {
        let schema = self.schema_state_with(db);
        self.gate_for(&schema)
    }

    fn gate_for(&self, schema: &SchemaState) -> Result<(), ErrorReply> {
        if !schema.at_head {
            let why = schema
                .note
                .clone()
                .unwrap_or_else(|| "the database is not at head".into());
            return Err(ErrorReply::new(
                ErrorKind::Refused,
                format!("{why} (prompts and jobs are managed once it is at head)"),
            ));
        }
        // "At head" is relative to the revision files in use; the tables must also have the
        // shape these commands were written for.
        let source = crate::source_for(&self.settings(), None);
        let includes = migrate::load_graph(&source).ok().is_some_and(|g| {
            let current: Vec<usize> = schema
                .revisions
                .iter()
                .filter_map(|r| g.lookup(r))
                .collect();
            g.lookup(crate::records::SCHEMA_REVISION)
                .is_some_and(|need| g.ancestors(&current)[need])
        });
        if !includes {
            return Err(ErrorReply::new(
                ErrorKind::Refused,
                format!(
                    "the database is at {}; prompts and jobs need revision {} or later (the revisions built into silica-crond include it)",
                    schema.revisions.join(", "),
                    crate::records::SCHEMA_REVISION
                ),
            ));
        }
        Ok(())
    }

    /// Runs `f` on the database once the tables have their current shape (as `records`).
    pub fn read_records<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, ErrorReply>,
    ) -> Result<T, ErrorReply> {
        let mut db = self.db();
        self.jobs_gate(&mut db)?;
        let conn = db
            .writer()
            .map_err(|e| ErrorReply::new(ErrorKind::Database, e.to_string()))?;
        f(conn)
    }

    pub fn records(&self, req: &Request) -> Result<Reply, ErrorReply> {
        if self.restoring.load(Ordering::SeqCst) {
            // What it wrote would go to the file being replaced.
            return Err(ErrorReply::new(
                ErrorKind::Busy,
                "a restore is in progress; try again when it is done",
            ));
        }
        let mut db = self.db();
        self.jobs_gate(&mut db)?;
        let conn = db
            .writer()
            .map_err(|e| ErrorReply::new(ErrorKind::Database, e.to_string()))?;
        let result = match req {
            Request::Prompt(op) => crate::records::prompt(conn, op),
            Request::Job(op) => crate::records::job(conn, op),
            Request::Execution(op) => crate::records::execution(conn, op),
            _ => Err(ErrorReply::new(ErrorKind::Internal, "not a record request")),
        };
        match &result {
            Err(e) => info!(error = %e.message, "request refused"),
            Ok(_) => self.replan.notify_one(),
        }
        result
    }

    /// Runs one migrate request; concurrent requests queue on the database lock, so a revision
    /// is never applied twice.
    pub fn migrate(
        &self,
        req: &MigrateRequest,
        send: &mut dyn FnMut(Output),
    ) -> Result<Exit, ErrorReply> {
        let settings = self.settings();
        let _one = self.maintenance();
        let mut db = self.db();
        // The scheduler may now wait for the database longer than the watchdog allows; this
        // migration is the daemon's progress meanwhile.
        let _keepalive = crate::notify::Keepalive::migrating();
        let mut ctx = Ctx {
            db: &mut db,
            source: crate::source_for(&settings, req.migrations_dir.clone()),
            production: settings.production || req.production,
            json: req.json,
            backups: Some(crate::backup::Policy::from_settings(&settings)),
        };
        // The client prints the step lines; the daemon's log (and `silica-cron logs`) keeps
        // them too, so the journal and cron.log say which revisions were applied and when.
        let mut send_and_log = |o: Output| {
            if let Output::Stderr(line) = &o {
                if let Some(step) = line.strip_prefix(migrate::STEP_PREFIX) {
                    info!(target: "migration", "migration: {step}");
                }
            }
            send(o)
        };
        let result = migrate::run(&mut ctx, &req.cmd, &mut Sink(&mut send_and_log));
        // Our own writes do not move data_version; forget what we knew.
        self.forget_schema_state();
        self.replan.notify_one();
        if let Err(e) = &result {
            warn!(command = ?req.cmd, error = %e, "migration command failed");
        } else if !req.cmd.is_read_only() {
            info!(command = ?req.cmd, "migration command done");
        }
        result.map_err(|e| e.to_reply())
    }
}

/// The scheduler fires exactly when the gate is open and it is not paused; say why when not.
fn scheduler_line(schema: &SchemaState, gate: &Result<(), ErrorReply>, pause: Pause) -> String {
    let held = held_line(schema, gate);
    match (pause, held.as_str()) {
        (Pause::Restoring, _) => "paused: restoring a backup".into(),
        (Pause::Operator, "running") => "paused".into(),
        (Pause::Operator, _) => format!("paused (and {held})"),
        (Pause::No, _) => held,
    }
}

/// The first steps of a restore, the same with and without a daemon: copy `path` beside the
/// database and check it; in production, upgrade the copy to head (a production daemon runs
/// at head) before anything is swapped, so a failing upgrade changes nothing.
/// Returns the copy, its revisions in words, and whether it is behind head.
pub fn prepare_restore(
    path: &std::path::Path,
    db: &std::path::Path,
    source: &Source,
    production: bool,
    send: &mut dyn FnMut(Output),
) -> Result<(backup::Prepared, String, bool), ErrorReply> {
    let graph = migrate::load_graph(source).map_err(|e| e.to_reply())?;
    let shown = path.display();
    let prepared = backup::prepare_restore(path, db, &graph).map_err(backup_reply)?;
    let revisions = describe_revisions(&prepared.checked.revisions);
    let behind = prepared.checked.at_head == Some(false);
    send(Output::Stderr(format!(
        "✔ {shown}: integrity ok, {revisions}{}",
        if behind { " (behind head)" } else { " (head)" }
    )));
    if production && behind {
        let mut copy = prepared.db();
        let mut ctx = migrate::Ctx {
            db: &mut copy,
            source: source.clone(),
            production: true,
            json: false,
            backups: None,
        };
        let cmd = proto::cli::MigrateCmd::Upgrade {
            target: "heads".into(),
            sql: false,
            stamp_only: false,
        };
        migrate::run(&mut ctx, &cmd, &mut Sink(send)).map_err(|e| {
            ErrorReply::new(
                ErrorKind::Refused,
                format!("cannot upgrade the restored copy of {shown} to head, so nothing was changed: {e}"),
            )
        })?;
        copy.close();
        return Ok((prepared, describe_revisions(&graph_heads(&graph)), false));
    }
    Ok((prepared, revisions, behind))
}

fn graph_heads(graph: &migrate::graph::Graph) -> Vec<String> {
    let mut heads: Vec<String> = graph
        .heads()
        .iter()
        .map(|&i| graph.id(i).to_string())
        .collect();
    heads.sort();
    heads
}

/// The automatic backup of the current database that every restore makes first.
pub fn backup_before_restore(
    settings: &Settings,
    send: &mut dyn FnMut(Output),
) -> Result<(), ErrorReply> {
    match backup::automatic(&Policy::from_settings(settings), "restore") {
        Ok(Some(w)) => {
            send(Output::Stderr(format!(
                "💾 Backed up the current database to {}",
                w.describe()
            )));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(ErrorReply::new(
            ErrorKind::Refused,
            format!("cannot back up the current database first, so nothing was changed: {e}"),
        )),
    }
}

/// The closing lines of a restore.
pub fn restored(
    settings: &Settings,
    shown: &str,
    revisions: &str,
    behind: bool,
    send: &mut dyn FnMut(Output),
) {
    send(Output::Stdout(format!(
        "✅ Restored {shown} into {} ({revisions})",
        settings.db.display()
    )));
    if behind {
        send(Output::Stderr(
            "⚠️  The restored database is behind head: jobs do not fire until you run: silica-cron migrate upgrade".into(),
        ));
    }
    if settings.pause_marker().exists() {
        send(Output::Stderr(
            "The scheduler stays paused, as it was before the restore: silica-cron resume".into(),
        ));
    }
}

/// Undoes the restore's pause however the restore ends.
struct Restoring<'a>(&'a Shared);

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.0.restoring.store(false, Ordering::SeqCst);
        self.0.replan.notify_one();
    }
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_revisions(revs: &[String]) -> String {
    if revs.is_empty() {
        "no revision (base)".into()
    } else {
        format!("revision {}", revs.join(", "))
    }
}

pub fn backup_reply(e: BackupError) -> ErrorReply {
    let kind = match &e {
        BackupError::NoDatabase(_) => ErrorKind::NotFound,
        BackupError::Exists(_) | BackupError::SameFile(_) => ErrorKind::Conflict,
        BackupError::NotDatabase { .. }
        | BackupError::Corrupt { .. }
        | BackupError::NoVersionTable { .. }
        | BackupError::UnknownRevision { .. }
        | BackupError::HasWal { .. } => ErrorKind::InvalidArgument,
        BackupError::Busy(_) => ErrorKind::Busy,
        BackupError::Io { .. } | BackupError::Sqlite { .. } => ErrorKind::Database,
    };
    ErrorReply::new(kind, e.to_string())
}

fn held_line(schema: &SchemaState, gate: &Result<(), ErrorReply>) -> String {
    match gate {
        Ok(()) => "running".to_string(),
        Err(_) if !schema.at_head => "held: needs migration".to_string(),
        Err(_) => format!(
            "held: the database lacks revision {} (the scheduler's tables)",
            crate::records::SCHEMA_REVISION
        ),
    }
}

pub fn schema_state(db: &mut Db, source: &Source) -> SchemaState {
    let graph = migrate::load_graph(source).map_err(|e| e.to_string());
    let revisions = match db.versions() {
        Ok(r) => r,
        Err(e) => {
            return SchemaState {
                revisions: vec![],
                heads: vec![],
                at_head: false,
                note: Some(e.to_string()),
            }
        }
    };
    let graph = match graph {
        Ok(g) => g,
        Err(e) => {
            return SchemaState {
                revisions,
                heads: vec![],
                at_head: false,
                note: Some(format!("revision files are broken: {e}")),
            }
        }
    };
    let heads = graph_heads(&graph);
    let mut sorted = revisions.clone();
    sorted.sort();
    let unknown: Vec<&String> = revisions
        .iter()
        .filter(|r| graph.lookup(r).is_none())
        .collect();
    let note = if !unknown.is_empty() {
        Some(format!(
            "the database is at revision {}, which no revision file defines; check its schema, then: silica-cron migrate stamp --purge <revision>",
            unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))
    } else if sorted != heads {
        Some("the database needs migration; run: silica-cron migrate upgrade".into())
    } else {
        None
    };
    SchemaState {
        at_head: note.is_none(),
        revisions,
        heads,
        note,
    }
}
