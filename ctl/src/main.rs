//! silica-cron: the control client. Parses arguments, sends one request over the daemon's socket,
//! prints the reply as it arrives. Blocking I/O and no runtime: it is a short-lived process.

mod connection;
mod cron;
mod docs;
mod logs;
mod records;
mod render;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proto::cli::{BackupArgs, GlobalArgs, MigrateCmd, RestoreArgs, ServeArgs};
use proto::message::{exit_code, BackupRequest, MigrateRequest, Request, RestoreRequest};
use proto::paths::Settings;

use crate::connection::{ConnectError, Connection};

#[derive(Parser)]
#[command(
    name = "silica-cron",
    version,
    about = "Control client of silica-crond, the cron daemon for agent prompts"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (also what `silica-cron` alone does).
    Serve(ServeArgs),
    /// Show the daemon's pid, version, database, socket and schema revision.
    Status,
    /// Make the daemon re-read its configuration file.
    Reload,
    /// Stop firing scheduled runs (kept across daemon restarts; runs in progress go on; works
    /// without a running daemon).
    Pause,
    /// Fire scheduled runs again after `pause` (works without a running daemon).
    Resume,
    /// Write a consistent copy of the database (works with or without a running daemon).
    Backup(BackupArgs),
    /// Replace the database by a backup, after checking it (works with or without a daemon).
    Restore(RestoreArgs),
    /// The daemon's recent log lines; with -f, new lines and live job output as they happen.
    Logs(logs::LogsArgs),
    /// Database migrations (works with or without a running daemon).
    Migrate {
        #[command(subcommand)]
        cmd: MigrateCmd,
    },
    /// Prompts: the text an agent runs, with model, persona and priority.
    Prompts {
        #[command(subcommand)]
        cmd: records::PromptsCmd,
    },
    /// Jobs: a prompt on a cron schedule.
    Jobs {
        #[command(subcommand)]
        cmd: records::JobsCmd,
    },
    /// The history of runs.
    Executions {
        #[command(subcommand)]
        cmd: records::ExecutionsCmd,
    },
    /// Cron expressions (no daemon needed).
    Cron {
        #[command(subcommand)]
        cmd: cron::CronCmd,
    },
    /// Print a shell completion script, e.g. `source <(silica-cron completions bash)`.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (silica-cron, its subcommands, silica-crond) into DIR, or print
    /// silica-cron(1) without DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the settings: generating docs must work with no (or a broken) configuration.
    match &cli.command {
        Some(Command::Completions { shell }) => return code(docs::completions(*shell)),
        Some(Command::Man { dir }) => return code(docs::man(dir.as_deref())),
        _ => {}
    }
    let settings = match Settings::resolve(&cli.global) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("silica-cron: {e}");
            return code(exit_code::FAILED);
        }
    };
    match cli.command {
        None | Some(Command::Serve(_)) => code(exec_daemon("run the daemon")),
        Some(Command::Status) => code(status(&settings, cli.global.json)),
        Some(Command::Reload) => code(simple(&settings, Request::Reload, "reload")),
        Some(Command::Logs(args)) => code(show_logs(&settings, &args, cli.global.json)),
        Some(Command::Migrate { cmd }) => code(migrate(&settings, &cli.global, cmd)),
        Some(Command::Pause) => code(maintenance(&settings, Request::Pause, "pause")),
        Some(Command::Resume) => code(maintenance(&settings, Request::Resume, "resume")),
        Some(Command::Backup(args)) => {
            let req = Request::Backup(BackupRequest {
                path: args.path.as_deref().map(absolute),
                force: args.force,
                json: cli.global.json,
            });
            code(maintenance(&settings, req, "backup"))
        }
        Some(Command::Restore(args)) => {
            let req = Request::Restore(RestoreRequest {
                path: absolute(&args.path),
                force: args.force,
                migrations_dir: cli.global.migrations_dir.as_deref().map(absolute),
                production: settings.production,
            });
            code(maintenance(&settings, req, "restore"))
        }
        Some(Command::Cron { cmd }) => code(cron::run(cmd, cli.global.json)),
        Some(Command::Completions { .. } | Command::Man { .. }) => code(exit_code::OK),
        Some(Command::Prompts { cmd }) => match records::prompts_request(cmd) {
            Ok(req) => code(record(&settings, req, cli.global.json)),
            Err(msg) => code(render::fail(&msg)),
        },
        Some(Command::Jobs { cmd }) => code(record(
            &settings,
            records::jobs_request(cmd),
            cli.global.json,
        )),
        Some(Command::Executions { cmd }) => code(record(
            &settings,
            records::executions_request(cmd),
            cli.global.json,
        )),
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c as u8)
}

/// Replaces this process by `silica-crond` with the same arguments: its output, exit code and
/// signals are then the daemon's own.
fn exec_daemon(what: &str) -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let daemon = daemon_binary();
    let err = std::process::Command::new(&daemon).args(&args).exec();
    eprintln!(
        "silica-cron: cannot {what}: cannot start {}: {err}",
        daemon.display()
    );
    exit_code::FAILED
}

/// `silica-crond` beside this binary, else the one on PATH.
fn daemon_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("silica-crond")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("silica-crond"))
}

fn not_running(settings: &Settings, e: &ConnectError) -> i32 {
    eprintln!("silica-cron: {e}");
    eprintln!(
        "silica-crond is not running for {}. Start it with: silica-cron serve (or systemctl start silica-crond)",
        settings.db.display()
    );
    exit_code::UNREACHABLE
}

/// A connection to the daemon, or the exit code after saying why there is none.
fn connect(settings: &Settings) -> Result<Connection, i32> {
    match Connection::open(&settings.socket) {
        Ok(c) => Ok(c),
        Err(e) if e.is_unreachable() => Err(not_running(settings, &e)),
        Err(e) => Err(render::fail(&e.to_string())),
    }
}

fn status(settings: &Settings, json: bool) -> i32 {
    let mut conn = match connect(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match conn.status() {
        Ok(info) => render::status(&info, json),
        Err(e) => render::fail(&e.to_string()),
    }
}

fn show_logs(settings: &Settings, args: &logs::LogsArgs, json: bool) -> i32 {
    let mut conn = match connect(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let req = args.request();
    let raw = req.execution.is_some();
    // Ctrl-C keeps its default action: the client ends at once, killed by SIGINT (a shell
    // reports 130), with nothing printed; the daemon sees the socket close and drops the
    // follower.
    match conn.logs(req, |item| logs::print(item, json, raw), render::line) {
        Ok(Ok(exit)) => exit.code as i32,
        Ok(Err(reply)) => render::fail(&reply.message),
        Err(e) => render::fail(&e.to_string()),
    }
}

fn simple(settings: &Settings, req: Request, what: &str) -> i32 {
    let mut conn = match connect(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match conn.request(req, render::line) {
        Ok(Ok(exit)) => exit.code as i32,
        Ok(Err(reply)) => render::fail(&format!("{what}: {reply}")),
        Err(e) => render::fail(&e.to_string()),
    }
}

fn record(settings: &Settings, req: Request, json: bool) -> i32 {
    let mut conn = match connect(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let is_run = matches!(
        req,
        Request::Prompt(proto::records::PromptOp::Run { .. })
            | Request::Job(proto::records::JobOp::Run { .. })
    );
    if is_run {
        return match conn.run(
            req,
            |r| {
                records::render(r, json);
            },
            render::line,
        ) {
            Ok(Ok(exit)) => exit.code as i32,
            Ok(Err(reply)) => render::fail(&reply.message),
            Err(e) => render::fail(&e.to_string()),
        };
    }
    match conn.record(req) {
        Ok(Ok(reply)) => records::render(&reply, json),
        Ok(Err(reply)) => render::fail(&reply.message),
        Err(e) => render::fail(&e.to_string()),
    }
}

/// A path as the daemon must see it: relative to this client's directory, not the daemon's.
fn absolute(p: &std::path::Path) -> PathBuf {
    proto::paths::absolute(&std::env::current_dir().unwrap_or_default(), p)
}

/// `backup`, `restore`, `pause` and `resume`: through the daemon, else one-shot in
/// `silica-crond` (as `migrate`).
fn maintenance(settings: &Settings, req: Request, what: &str) -> i32 {
    let mut conn = match Connection::open(&settings.socket) {
        Ok(c) => c,
        Err(e) if e.is_unreachable() => return exec_daemon(&format!("run the {what}")),
        Err(e) => return render::fail(&e.to_string()),
    };
    match conn.request(req, render::line) {
        Ok(Ok(exit)) => exit.code as i32,
        Ok(Err(reply)) => render::fail(&format!("{what}: {reply}")),
        Err(e) => render::fail(&e.to_string()),
    }
}

fn migrate(settings: &Settings, global: &GlobalArgs, cmd: MigrateCmd) -> i32 {
    let mut conn = match Connection::open(&settings.socket) {
        Ok(c) => c,
        // No daemon: the same engine runs one-shot in silica-crond.
        Err(e) if e.is_unreachable() => return exec_daemon("run the migration"),
        Err(e) => return render::fail(&e.to_string()),
    };
    let req = Request::Migrate(MigrateRequest {
        cmd,
        migrations_dir: global
            .migrations_dir
            .as_ref()
            .map(|d| proto::paths::absolute(&std::env::current_dir().unwrap_or_default(), d)),
        production: settings.production,
        json: global.json,
    });
    match conn.request(req, render::line) {
        Ok(Ok(exit)) => exit.code as i32,
        Ok(Err(reply)) => {
            eprintln!("FAILED: {reply}");
            exit_code::FAILED
        }
        Err(e) => render::fail(&e.to_string()),
    }
}
