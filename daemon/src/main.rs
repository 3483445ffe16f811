//! silica-crond: the daemon. Owns the database, applies migrations, serves the control socket.
//! `silica-crond migrate …` runs one migration command one-shot instead.

mod backup;
mod checkpoint;
mod dirwatch;
mod fdlimit;
mod http;
mod lock;
mod logbus;
mod logging;
mod metrics;
mod migrate;
mod notify;
mod oneshot;
mod pause;
mod records;
mod scheduler;
mod server;
mod state;
mod walindex;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
// The definition lives in proto so that `silica-cron man` can write this binary's page too.
use proto::cli::{DaemonCli as Cli, DaemonCommand as Command, GlobalArgs, MigrateCmd, ServeArgs};
use proto::message::{exit_code, Output};
use proto::paths::Settings;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::lock::{OwnerLock, Role};
use crate::migrate::script::Source;
use crate::migrate::store::Db;
use crate::migrate::{Ctx, Sink};
use crate::state::Shared;

/// The revision files a command uses: the request's directory, the configured one, or the
/// files built into this binary.
pub fn source_for(settings: &Settings, requested: Option<PathBuf>) -> Source {
    requested
        .or_else(|| settings.migrations_dir.clone())
        .map(Source::Dir)
        .unwrap_or(Source::BuiltIn)
}

fn main() -> ExitCode {
    // Before any connection, so that every one uses it (the one-shot commands too).
    walindex::install();
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli.global) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("silica-crond: {e}");
            return ExitCode::from(exit_code::FAILED as u8);
        }
    };
    match cli.command {
        Some(Command::Migrate { cmd }) => {
            ExitCode::from(oneshot::run(&settings, &cmd, cli.global.json) as u8)
        }
        Some(Command::Backup(b)) => {
            ExitCode::from(oneshot::backup(&settings, &b, cli.global.json) as u8)
        }
        Some(Command::Restore(r)) => ExitCode::from(oneshot::restore(&settings, &r) as u8),
        Some(Command::Pause) => ExitCode::from(oneshot::pause(&settings, true) as u8),
        Some(Command::Resume) => ExitCode::from(oneshot::pause(&settings, false) as u8),
        Some(Command::Serve(serve)) => run_daemon(cli.global, merge(cli.serve, serve), settings),
        None => run_daemon(cli.global, cli.serve, settings),
    }
}

fn merge(top: ServeArgs, sub: ServeArgs) -> ServeArgs {
    ServeArgs {
        bind_port: sub.bind_port.or(top.bind_port),
        bind_host: sub.bind_host.or(top.bind_host),
    }
}

fn run_daemon(args: GlobalArgs, serve: ServeArgs, settings: Settings) -> ExitCode {
    logging::init(&settings);
    // Before any thread exists: it takes NOTIFY_SOCKET and WATCHDOG_* out of the environment.
    notify::init();
    raise_fd_limit();
    match daemon(args, serve, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(exit_code::FAILED as u8)
        }
    }
}

/// The open-files soft limit the daemon started with, before it raised its own.
pub static ORIGINAL_NOFILE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Each control connection takes a descriptor, and so does each run (three), and the usual
/// soft limit (1024, systemd's default too) is below the default `max_connections`: past it,
/// accept fails and clients wait in the backlog instead of being served or refused. Raise the
/// soft limit towards the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        // Jobs get the ordinary limit back (the runner sets it before exec).
        let _ = ORIGINAL_NOFILE.set(lim.rlim_cur);
        // Enough for every connection slot; not the hard limit itself, which can be a million.
        let wanted = lim.rlim_max.min(65_536);
        if lim.rlim_cur >= wanted {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            warn!(
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                "cannot raise the open-files limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn daemon(args: GlobalArgs, serve: ServeArgs, settings: Settings) -> anyhow::Result<()> {
    // Before anything else: a SIGTERM that arrives while the database is prepared or just after
    // the socket appears must stop the daemon cleanly, not kill it with the default action.
    // Signals that arrive before the handler thread runs are kept and handled then.
    let signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("cannot install signal handlers")?;
    let starting = notify::Keepalive::starting();
    let _lock = OwnerLock::acquire(&settings.lock, &settings.db, Role::Daemon, |pid| {
        info!("waiting for the migration run by pid {pid} to finish");
        notify::status(&format!(
            "waiting for the migration run by pid {pid} to finish"
        ));
    })?;
    // Checkpoints run on a thread of their own, not inside the commit before a run starts.
    let mut db = Db::new(&settings.db).with_writer_setup(checkpoint::defer);
    notify::status("preparing the database");
    prepare_database(&mut db, &settings)?;
    drop(starting);
    let shared = Arc::new(Shared::new(args, serve, settings.clone(), db));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is database calls (serialized by its mutex) and /proc sweeps (shared
        // through one snapshot); tokio's default of 512 threads only added contention when
        // thousands of runs stopped at once.
        .max_blocking_threads(32)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = server::bind(&settings.socket)?;
        // A configured listener that cannot bind is fatal, as the control socket is: a daemon
        // that runs without the health endpoint it was asked for fails its checks silently.
        let http_listener = match shared.http_config() {
            Some((host, port)) => {
                let l = http::bind(&host, port).await?;
                if let Ok(addr) = l.local_addr() {
                    shared.set_http_bound(addr);
                }
                Some(l)
            }
            None => None,
        };
        let schema = shared.schema_state();
        info!(
            pid = std::process::id(),
            database = %settings.db.display(),
            socket = %settings.socket.display(),
            http = %shared.http_address().unwrap_or_else(|| "off".into()),
            environment = if settings.production { "production" } else { "development" },
            "silica-crond {} ready", proto::PRODUCT_VERSION
        );
        if shared.pause_state() == state::Pause::Operator {
            warn!(marker = %settings.pause_marker().display(), "the scheduler is paused (kept from before the restart); no job fires until: silica-cron resume");
        }
        if let Some(note) = &schema.note {
            warn!("{note}; jobs do not fire until the database is at head");
        }
        notify::ready(&format!("scheduler: {}", shared.scheduler_state().1));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        spawn_signal_handler(signals, shared.clone(), stop_tx)?;
        // Orphans of runs (a setsid grandchild) come back to us to be killed and reaped.
        if let Err(e) = runner::become_subreaper() {
            warn!(error = %e, "cannot become a child subreaper; a job's setsid grandchildren may escape");
        }
        tokio::spawn(runner::reap_orphans_on_sigchld());
        let scheduler = tokio::spawn(scheduler::Scheduler::new(shared.clone()).run(stop_rx.clone()));
        let watcher = tokio::spawn(scheduler::external::watch_database(shared.clone(), stop_rx.clone()));
        // Runs in progress are stopped as soon as the daemon is told to stop (a client following
        // a run must not hold the drain of connections), and recorded before the database closes.
        let stopper = {
            let (shared, mut stop) = (shared.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let _ = stop.changed().await;
                let grace = std::time::Duration::from_secs(shared.settings().file.kill_grace_secs() + 5);
                shared.stop_all_runs(grace).await;
            })
        };
        let http_server = http_listener
            .map(|l| tokio::spawn(http::serve(l, shared.clone(), stop_rx.clone())));
        server::serve(listener, shared.clone(), stop_rx).await;
        if let Some(h) = http_server {
            let _ = h.await;
        }
        let _ = scheduler.await;
        let _ = stopper.await;
        let _ = watcher.await;
        anyhow::Ok(())
    })?;
    // The listener removed its socket file when it was dropped; removing the path again could
    // delete a socket another process bound there meanwhile.
    // No task or blocking thread may touch (and so reopen) the database after this.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    shared.close_db();
    info!("silica-crond stopped");
    Ok(())
}

/// A missing database is created at head. In production the database is upgraded to head before
/// the socket opens; in development a database behind head is served as is and jobs are held.
fn prepare_database(db: &mut Db, settings: &Settings) -> anyhow::Result<()> {
    let source = source_for(settings, None);
    let cmd = MigrateCmd::Upgrade {
        target: "heads".into(),
        sql: false,
        stamp_only: false,
    };
    let mut print = |o: Output| match o {
        Output::Stdout(l) | Output::Stderr(l) => eprintln!("{l}"),
    };
    let mut ctx = Ctx {
        db,
        source,
        production: settings.production,
        json: false,
        backups: Some(backup::Policy::from_settings(settings)),
    };
    if settings.production {
        eprintln!("🚀 Production detected: auto-applying cron migrations...");
        migrate::run(&mut ctx, &cmd, &mut Sink(&mut print)).context("cron migrations failed")?;
        eprintln!("✅ cron migrations applied successfully");
    } else if !ctx.db.exists() {
        info!(database = %settings.db.display(), "creating the database at head");
        migrate::run(&mut ctx, &cmd, &mut Sink(&mut print))
            .context("cannot create the database")?;
    } else {
        // Opening for writing sets WAL mode once, so readers never block the daemon.
        ctx.db.writer()?;
    }
    if let Ok(graph) = ctx
        .source
        .load()
        .map_err(anyhow::Error::from)
        .and_then(|r| Ok(migrate::graph::Graph::build(r)?))
    {
        for changed in migrate::commands::drift(ctx.db, &graph).unwrap_or_default() {
            warn!("{changed}; if the change is intended, record it with: silica-cron migrate stamp current");
        }
    }
    Ok(())
}

/// SIGTERM/SIGINT stop the daemon; SIGHUP re-reads the configuration.
fn spawn_signal_handler(
    mut signals: Signals,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    info!("SIGHUP: re-reading the configuration");
                    let _ = shared.reload();
                } else {
                    info!(signal = sig, "stopping: finishing requests in flight");
                    notify::stopping("stopping: stopping runs, finishing requests in flight");
                    let _ = stop.send(true);
                }
            }
        })?;
    Ok(())
}
