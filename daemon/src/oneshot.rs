//! The commands `silica-cron` falls back to when no daemon runs (`silica-crond migrate …`,
//! `backup`, `restore`, `pause`, `resume`), printing what the daemon would stream. Those that
//! write take the same ownership lock as the daemon, so none can start meanwhile.

use std::io::Write;

use proto::cli::{BackupArgs, MigrateCmd, RestoreArgs};
use proto::message::{exit_code, Output};
use proto::paths::Settings;

use crate::backup::Policy;
use crate::lock::{LockError, OwnerLock, Role};
use crate::migrate::{self, store::Db, Ctx, Sink};

/// A line on stderr. A write error is ignored where eprintln! would panic: with stderr
/// unwritable (a full disk under a redirect) the exit code is all that can still tell.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A line on stdout, likewise.
fn show(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The ownership lock as a one-shot holds it: waits (saying so) while another one-shot holds
/// it, fails at once when a daemon does.
fn owner_lock(settings: &Settings) -> Result<OwnerLock, LockError> {
    let wait = |pid: &str| {
        say(format_args!(
            "Waiting for the migration run by pid {pid} to finish..."
        ))
    };
    OwnerLock::acquire(&settings.lock, &settings.db, Role::Migrate, wait)
}

pub fn run(settings: &Settings, cmd: &MigrateCmd, json: bool) -> i32 {
    let _lock = if cmd.is_read_only() {
        None
    } else {
        match owner_lock(settings) {
            Ok(l) => Some(l),
            Err(e) => {
                say(format_args!("FAILED: {e}"));
                return exit_code::FAILED;
            }
        }
    };
    let mut db = Db::new(&settings.db);
    let mut ctx = Ctx {
        db: &mut db,
        source: crate::source_for(settings, None),
        production: settings.production,
        json,
        backups: Some(crate::backup::Policy::from_settings(settings)),
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut print = |o: Output| {
        // Flush each line: output interleaves with the step that follows, as with the daemon.
        let _ = match o {
            Output::Stdout(l) => writeln!(stdout.lock(), "{l}"),
            Output::Stderr(l) => writeln!(stderr.lock(), "{l}"),
        };
    };
    match migrate::run(&mut ctx, cmd, &mut Sink(&mut print)) {
        Ok(exit) => exit.code as i32,
        Err(e) => {
            say(format_args!("FAILED: {e}"));
            exit_code::FAILED
        }
    }
}

/// `silica-crond backup [PATH]`: the daemon's backup, without a daemon. It only reads, so it
/// takes no lock (a WAL reader never blocks a writer, and the copy is one consistent snapshot).
pub fn backup(settings: &Settings, args: &BackupArgs, json: bool) -> i32 {
    let policy = Policy::from_settings(settings);
    let dest = match &args.path {
        Some(p) => p.clone(),
        None => {
            if let Err(e) = std::fs::create_dir_all(&policy.dir) {
                say(format_args!(
                    "silica-cron: backup: cannot create the backup directory {}: {e}",
                    policy.dir.display()
                ));
                return exit_code::FAILED;
            }
            crate::backup::default_path(&policy)
        }
    };
    match crate::backup::backup_to(&settings.db, &dest, args.force) {
        Ok(w) => {
            show(format_args!("{}", crate::backup::report(&w, json)));
            exit_code::OK
        }
        Err(e) => {
            say(format_args!("silica-cron: backup: {e}"));
            exit_code::FAILED
        }
    }
}

/// `silica-crond restore PATH`: the daemon's restore, without a daemon, under the ownership
/// lock (no daemon can start on the database meanwhile). There is no scheduler to pause and no
/// run in progress.
pub fn restore(settings: &Settings, args: &RestoreArgs) -> i32 {
    let _lock = match owner_lock(settings) {
        Ok(l) => l,
        Err(e) => {
            say(format_args!("silica-cron: restore: {e}"));
            return exit_code::FAILED;
        }
    };
    let mut print = |o: Output| match o {
        Output::Stdout(l) => show(format_args!("{l}")),
        Output::Stderr(l) => say(format_args!("{l}")),
    };
    let shown = args.path.display().to_string();
    let result = (|| {
        let source = crate::source_for(settings, None);
        let (prepared, revisions, behind) = crate::state::prepare_restore(
            &args.path,
            &settings.db,
            &source,
            settings.production,
            &mut print,
        )?;
        crate::state::backup_before_restore(settings, &mut print)?;
        let mut db = Db::new(&settings.db);
        crate::backup::swap(prepared, &mut db).map_err(crate::state::backup_reply)?;
        crate::state::restored(
            settings,
            &shown,
            &revisions,
            behind && !settings.production,
            &mut print,
        );
        Ok::<(), proto::message::ErrorReply>(())
    })();
    match result {
        Ok(()) => exit_code::OK,
        Err(e) => {
            say(format_args!("silica-cron: restore: {e}"));
            exit_code::FAILED
        }
    }
}

/// `silica-crond pause` / `resume`: the marker a daemon reads when it starts, written or
/// removed under the ownership lock (a daemon starting meanwhile waits, then sees the result).
pub fn pause(settings: &Settings, pause: bool) -> i32 {
    let what = if pause { "pause" } else { "resume" };
    let _lock = match owner_lock(settings) {
        Ok(l) => l,
        Err(e) => {
            say(format_args!("silica-cron: {what}: {e}"));
            return exit_code::FAILED;
        }
    };
    let marker = settings.pause_marker();
    let done = if !pause {
        crate::pause::remove(&marker).map(|removed| {
            if removed {
                crate::pause::RESUMED_NO_DAEMON
            } else {
                crate::pause::NOT_PAUSED
            }
        })
    } else if marker.exists() {
        Ok(crate::pause::ALREADY_PAUSED)
    } else {
        crate::pause::write(&marker).map(|()| crate::pause::PAUSED_NO_DAEMON)
    };
    match done {
        Ok(line) => {
            show(format_args!("{line}"));
            exit_code::OK
        }
        Err(e) => {
            say(format_args!("silica-cron: {what}: {e}"));
            exit_code::FAILED
        }
    }
}
