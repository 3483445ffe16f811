//! `silica-crond migrate …`: one migration command without a daemon, printing what the daemon
//! would stream. Write commands take the same ownership lock as the daemon.

use std::io::Write;

use proto::cli::MigrateCmd;
use proto::message::{exit_code, Output};
use proto::paths::Settings;

use crate::lock::{OwnerLock, Role};
use crate::migrate::{self, store::Db, Ctx, Sink};

pub fn run(settings: &Settings, cmd: &MigrateCmd, json: bool) -> i32 {
    let _lock = if cmd.is_read_only() {
        None
    } else {
        let wait = |pid: &str| eprintln!("Waiting for the migration run by pid {pid} to finish...");
        match OwnerLock::acquire(&settings.lock, &settings.db, Role::Migrate, wait) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("FAILED: {e}");
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
            eprintln!("FAILED: {e}");
            exit_code::FAILED
        }
    }
}
