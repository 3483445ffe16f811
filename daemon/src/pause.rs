//! The pause marker: a file beside the database whose presence keeps the scheduler paused,
//! across restarts. The daemon writes and removes it for `pause`/`resume`, and so does the
//! one-shot when no daemon runs; a daemon reads it when it starts.

use std::io;
use std::path::Path;

pub const PAUSED: &str = "⏸  Scheduler paused: no job fires until `silica-cron resume` (runs in progress go on; the pause is kept across restarts)";
pub const ALREADY_PAUSED: &str = "The scheduler was already paused";
pub const RESUMED: &str = "▶  Scheduler resumed";
pub const NOT_PAUSED: &str = "The scheduler was not paused";
/// What the one-shot says: there is no daemon to tell.
pub const PAUSED_NO_DAEMON: &str = "⏸  Scheduler paused: silica-crond is not running; when it starts, no job fires until `silica-cron resume` (the pause is kept across restarts)";
pub const RESUMED_NO_DAEMON: &str =
    "▶  Scheduler resumed: jobs fire again once silica-crond runs (it is not running now)";

/// Writes the marker whole (a temp file renamed over it), so a daemon starting meanwhile sees
/// either no marker or a complete one.
pub fn write(marker: &Path) -> Result<(), String> {
    let text = format!(
        "paused at {} with silica-cron pause; remove with silica-cron resume\n",
        schedule::jiff::Timestamp::now()
    );
    let tmp = marker.with_extension("paused.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, marker))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write the pause marker {}: {e}", marker.display())
        })
}

/// Removes the marker; false when there was none.
pub fn remove(marker: &Path) -> Result<bool, String> {
    match std::fs::remove_file(marker) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!(
            "cannot remove the pause marker {}: {e}",
            marker.display()
        )),
    }
}
