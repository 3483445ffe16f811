//! `silica-cron logs`: the daemon's recent log lines, and with `-f` new lines and live job
//! output as they happen.

use std::io::Write;

use clap::{Args, ValueEnum};
use proto::message::{LineKind, LogItem, LogLevel, LogLine, LogsRequest};

#[derive(Args)]
pub struct LogsArgs {
    /// Keep following: new lines and live job output as they happen, until Ctrl-C (with
    /// --execution: until that run ends).
    #[arg(short, long)]
    follow: bool,
    /// How many recent lines to show first.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 50)]
    lines: u32,
    /// Only lines at this level or more severe (job output counts as info).
    #[arg(long, value_enum, default_value_t = Level::Trace)]
    level: Level,
    /// Only lines about this job (name or id), and the output of its runs.
    #[arg(long, value_name = "JOB")]
    job: Option<String>,
    /// This execution's output: as recorded if it has ended, else (with -f) live until it ends.
    #[arg(long, value_name = "ID")]
    execution: Option<i64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogsArgs {
    pub fn request(&self) -> LogsRequest {
        LogsRequest {
            follow: self.follow,
            lines: self.lines,
            level: match self.level {
                Level::Error => LogLevel::Error,
                Level::Warn => LogLevel::Warn,
                Level::Info => LogLevel::Info,
                Level::Debug => LogLevel::Debug,
                Level::Trace => LogLevel::Trace,
            },
            job: self.job.clone(),
            execution: self.execution,
        }
    }
}

/// Prints one item; false once standard output is gone (`| head`), so the client stops.
pub fn print(item: &LogItem, json: bool, raw_output: bool) -> bool {
    let mut out = std::io::stdout().lock();
    let written = match item {
        LogItem::Missed(n) if json => writeln!(out, "{}", serde_json::json!({ "missed": n })),
        LogItem::Missed(n) => writeln!(
            out,
            "… {n} lines missed (this client read too slowly; the daemon does not wait for it)"
        ),
        LogItem::Line(l) if json => writeln!(out, "{}", line_json(l)),
        // One execution's output reads as the job wrote it, as `run --wait` prints it.
        LogItem::Line(l) if raw_output => match l.kind {
            LineKind::Stderr => {
                let _ = writeln!(std::io::stderr().lock(), "{}", l.text);
                Ok(())
            }
            _ => writeln!(out, "{}", l.text),
        },
        LogItem::Line(l) => match l.kind {
            LineKind::Log => writeln!(out, "{} {} {}", l.time, l.level.name(), l.text),
            LineKind::Stdout | LineKind::Stderr => writeln!(
                out,
                "{} {} {}#{}: {}",
                l.time,
                if l.kind == LineKind::Stdout {
                    "OUT"
                } else {
                    "ERR"
                },
                l.job.as_deref().unwrap_or("?"),
                l.execution.unwrap_or_default(),
                l.text
            ),
        },
    };
    written.is_ok()
}

fn line_json(l: &LogLine) -> serde_json::Value {
    serde_json::json!({
        "time": l.time,
        "level": l.level.name().to_ascii_lowercase(),
        "kind": match l.kind {
            LineKind::Log => "log",
            LineKind::Stdout => "stdout",
            LineKind::Stderr => "stderr",
        },
        "target": l.target,
        "job": l.job,
        "execution": l.execution,
        "text": l.text,
    })
}
