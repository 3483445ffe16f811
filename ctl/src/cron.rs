//! `silica-cron cron next`: when an expression fires. Pure computation, no daemon needed.

use std::io::Write;

use clap::Subcommand;
use proto::message::exit_code;
use schedule::jiff::{tz::TimeZone, Timestamp};
use schedule::Schedule;

#[derive(Subcommand)]
pub enum CronCmd {
    /// Print the next fire instants of a cron expression, one RFC 3339 instant per line.
    Next {
        /// The expression, in Vixie cron syntax (5 fields or a @macro); quote it.
        #[arg(value_name = "EXPR")]
        expr: String,
        /// How many instants.
        #[arg(short = 'n', long, default_value_t = 5)]
        count: usize,
        /// Start after this instant (RFC 3339, e.g. 2024-03-10T00:30:00-05:00); default now.
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// IANA time zone (e.g. Europe/Berlin); default the machine's local zone.
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
    },
}

pub fn run(cmd: CronCmd, json: bool) -> i32 {
    let CronCmd::Next {
        expr,
        count,
        from,
        tz,
    } = cmd;
    match next(&expr, count, from.as_deref(), tz.as_deref()) {
        Ok(instants) => {
            let mut out = std::io::stdout().lock();
            let _ = if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&instants).expect("strings serialize")
                )
            } else {
                instants.iter().try_for_each(|i| writeln!(out, "{i}"))
            };
            exit_code::OK
        }
        Err(reason) => {
            eprintln!("silica-cron: {reason}");
            exit_code::FAILED
        }
    }
}

/// The next `count` instants as RFC 3339 strings with their UTC offsets.
fn next(
    expr: &str,
    count: usize,
    from: Option<&str>,
    tz: Option<&str>,
) -> Result<Vec<String>, String> {
    let schedule =
        Schedule::parse(expr).map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
    if let Some(reason) = schedule.never_reason() {
        return Err(format!("cron expression {expr:?} can never fire: {reason}"));
    }
    let zone = match tz {
        Some(name) => {
            schedule::time_zone(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))?
        }
        None => TimeZone::system(),
    };
    let start = match from {
        Some(s) => s
            .parse::<Timestamp>()
            .map_err(|e| format!("--from {s:?} is not an RFC 3339 instant: {e}"))?,
        None => Timestamp::now(),
    };
    Ok(schedule
        .iter_after(start, &zone)
        .take(count)
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .collect())
}
