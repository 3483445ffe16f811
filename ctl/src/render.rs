//! How replies look on the terminal.

use std::io::Write;

use proto::message::{exit_code, Output, StatusInfo};

pub fn line(o: Output) {
    // Errors writing to a closed pipe (`| head`) are not worth a panic.
    let _ = match o {
        Output::Stdout(l) => writeln!(std::io::stdout().lock(), "{l}"),
        Output::Stderr(l) => writeln!(std::io::stderr().lock(), "{l}"),
    };
}

pub fn fail(msg: &str) -> i32 {
    eprintln!("silica-cron: {msg}");
    exit_code::FAILED
}

pub fn status(s: &StatusInfo, json: bool) -> i32 {
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "pid": s.pid,
            "version": s.version,
            "uptime_secs": s.uptime_secs,
            "database": s.database,
            "socket": s.socket,
            "environment": s.environment,
            "revisions": s.revisions,
            "heads": s.heads,
            "at_head": s.at_head,
            "schema_note": s.schema_note,
            "scheduler": s.scheduler,
            "http": s.http,
            "active_jobs": s.active_jobs,
            "running_count": s.running_count,
            "running": s.running.iter().map(|r| serde_json::json!({"execution": r.execution, "job": r.job})).collect::<Vec<_>>(),
            "next_fires": s.next_fires.iter().map(|n| serde_json::json!({"job": n.job, "at": n.at})).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).expect("json"));
        return exit_code::OK;
    }
    let revision = if s.revisions.is_empty() {
        "none (empty database)".to_string()
    } else {
        s.revisions.join(", ")
    };
    let _ = writeln!(
        out,
        "silica-crond {} (pid {}), up {}",
        s.version,
        s.pid,
        uptime(s.uptime_secs)
    );
    let _ = writeln!(out, "database:    {}", s.database.display());
    let _ = writeln!(out, "socket:      {}", s.socket.display());
    let _ = writeln!(out, "environment: {}", s.environment);
    let _ = writeln!(
        out,
        "revision:    {revision}{}",
        if s.at_head { " (head)" } else { "" }
    );
    match &s.schema_note {
        None => writeln!(out, "schema:      up to date"),
        Some(note) => writeln!(out, "schema:      {note}"),
    }
    .ok();
    let _ = writeln!(out, "scheduler:   {}", s.scheduler);
    match s.active_jobs {
        Some(n) => writeln!(out, "jobs:        {n} active"),
        None => writeln!(
            out,
            "jobs:        not read while the scheduler is {}",
            if s.scheduler.starts_with("paused") {
                "paused"
            } else {
                "held"
            }
        ),
    }
    .ok();
    let few: Vec<String> = s
        .running
        .iter()
        .map(|r| format!("{} ({})", r.execution, r.job))
        .collect();
    let more = s.running_count.saturating_sub(s.running.len() as u64);
    let _ = writeln!(
        out,
        "running:     {}{}{}",
        s.running_count,
        if few.is_empty() {
            String::new()
        } else {
            format!(": {}", few.join(", "))
        },
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
    if s.next_fires.is_empty() {
        let _ = writeln!(out, "next fires:  none");
    }
    for (i, n) in s.next_fires.iter().enumerate() {
        let label = if i == 0 { "next fires:" } else { "" };
        let _ = writeln!(out, "{label:<12} {} {}", n.at, n.job);
    }
    if let Some(http) = &s.http {
        let _ = writeln!(out, "http:        http://{http}/health, /metrics");
    }
    exit_code::OK
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        s => format!("{}d{}h", s / 86400, s / 3600 % 24),
    }
}
