//! Command-line definitions shared by `silica-cron` and `silica-crond`.
//!
//! The client execs `silica-crond` with its own arguments when it runs the daemon in the
//! foreground or a one-shot migration, so both must parse them identically: hence one definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// Options every command accepts, before or after the subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Database file (beats DATABASE_URL, CRON_DATABASE_URL and the config file).
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Control socket path (beats SILICA_CRON_SOCKET and the config file).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Configuration file (beats SILICA_CRON_CONFIG; default /etc/silica-cron/config.toml if present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Read revision files from this directory instead of the ones built into silica-crond.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "SILICA_CRON_MIGRATIONS"
    )]
    pub migrations_dir: Option<PathBuf>,
    /// Machine-readable output for read commands.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `silica-crond`'s command line. It lives here, not in the daemon, so that `silica-cron man`
/// can generate the daemon's manual page from the same definition.
#[derive(Parser)]
#[command(
    name = "silica-crond",
    version,
    about = "silica-cron daemon: runs agent prompts on cron schedules"
)]
pub struct DaemonCli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
}

#[derive(Subcommand)]
pub enum DaemonCommand {
    /// Run the daemon in the foreground (the default).
    Serve(ServeArgs),
    /// Run one migration command without a daemon (what `silica-cron migrate` falls back to).
    Migrate {
        #[command(subcommand)]
        cmd: MigrateCmd,
    },
    /// Back up the database without a daemon (what `silica-cron backup` falls back to).
    Backup(BackupArgs),
    /// Restore a backup without a daemon (what `silica-cron restore` falls back to).
    Restore(RestoreArgs),
    /// Pause the scheduler of a daemon not yet started (what `silica-cron pause` falls back to).
    Pause,
    /// Undo a pause without a daemon (what `silica-cron resume` falls back to).
    Resume,
}

/// `backup [PATH] [--force]`, shared by both binaries.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct BackupArgs {
    /// Where to write the backup (default: a timestamped file in the backup directory).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Overwrite PATH if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `restore PATH [--force]`, shared by both binaries.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct RestoreArgs {
    /// The backup to restore (checked with PRAGMA integrity_check and its revision first).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Interrupt runs in progress (recorded as interrupted) instead of refusing.
    #[arg(long)]
    pub force: bool,
}

/// How the daemon runs in the foreground (`silica-crond`, `silica-cron`, `silica-cron serve`).
#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServeArgs {
    /// Serve GET /health and GET /metrics over HTTP on this port (0: any free port, shown in
    /// status and the log). No port, no HTTP listener.
    #[arg(long, value_name = "PORT")]
    pub bind_port: Option<u16>,
    /// Address or host name the HTTP listener binds (default 127.0.0.1; 0.0.0.0 exposes
    /// health and metrics, read-only, to the network).
    #[arg(long, value_name = "HOST")]
    pub bind_host: Option<String>,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrateCmd {
    /// Say whether the database is at head (exit 0) or needs migration (exit 1).
    Status,
    /// Show the revision(s) the database is at.
    Current {
        #[arg(short, long)]
        verbose: bool,
    },
    /// List revisions, newest first.
    History {
        #[arg(short, long)]
        verbose: bool,
        /// Mark the revision(s) the database is at.
        #[arg(short = 'i', long)]
        indicate_current: bool,
        /// Limit to a range: A:B, A: or :B.
        #[arg(short = 'r', long = "rev-range", value_name = "A:B")]
        rev_range: Option<String>,
    },
    /// Show the head revisions.
    Heads {
        #[arg(short, long)]
        verbose: bool,
    },
    /// Show the branch points and their branches.
    Branches {
        #[arg(short, long)]
        verbose: bool,
    },
    /// Show one revision.
    Show {
        #[arg(value_name = "REV")]
        rev: String,
    },
    /// Apply revisions up to TARGET (default head).
    Upgrade {
        #[arg(
            value_name = "TARGET",
            default_value = "head",
            allow_hyphen_values = true
        )]
        target: String,
        /// Print the SQL instead of running it (TARGET may be A:B).
        #[arg(long)]
        sql: bool,
        /// Record TARGET as applied without running its SQL (same as stamp).
        #[arg(long)]
        stamp_only: bool,
    },
    /// Revert revisions down to TARGET (a revision, base or -N).
    Downgrade {
        #[arg(value_name = "TARGET", allow_hyphen_values = true)]
        target: String,
        /// Print the SQL instead of running it (TARGET must be A:B).
        #[arg(long)]
        sql: bool,
    },
    /// Record TARGET as the database's revision without running any SQL.
    Stamp {
        #[arg(value_name = "TARGET", allow_hyphen_values = true)]
        target: String,
        /// Delete every version row first (recovers a database stamped with an unknown revision).
        #[arg(long)]
        purge: bool,
    },
    /// Delete the database and build it again from the revisions (refused in production).
    Rebuild,
    /// Write a new revision holding the difference between schema.sql and the head revision.
    Create {
        #[arg(value_name = "MESSAGE")]
        message: String,
        /// Write an empty revision to fill in by hand.
        #[arg(long)]
        empty: bool,
    },
    /// Compare schema.sql with what the revisions produce (exit 1 listing the differences).
    Check,
    /// Write a merge revision whose parents are REVS (default: all heads).
    Merge {
        #[arg(short = 'm', long, value_name = "MESSAGE")]
        message: String,
        #[arg(value_name = "REVS", default_value = "heads")]
        revisions: Vec<String>,
    },
}

impl MigrateCmd {
    /// Commands that only read: they never create the database file.
    pub fn is_read_only(&self) -> bool {
        match self {
            MigrateCmd::Status
            | MigrateCmd::Current { .. }
            | MigrateCmd::History { .. }
            | MigrateCmd::Heads { .. }
            | MigrateCmd::Branches { .. }
            | MigrateCmd::Show { .. }
            | MigrateCmd::Check
            // These write revision files, not the database.
            | MigrateCmd::Create { .. }
            | MigrateCmd::Merge { .. } => true,
            MigrateCmd::Upgrade { sql, .. } | MigrateCmd::Downgrade { sql, .. } => *sql,
            MigrateCmd::Stamp { .. } | MigrateCmd::Rebuild => false,
        }
    }
}
