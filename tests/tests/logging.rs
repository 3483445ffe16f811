//! The daemon's log end to end (issue #5, item 4): the log files, the journal format and a log
//! directory that cannot be used.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use silica_cron_tests::Env;

#[track_caller]
fn wait_for_file(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} lacks {needle:?} after 10 s:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `2026-01-02T03:04:05.123456Z INFO …`
fn starts_with_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20 && b[4] == b'-' && b[10] == b'T' && line.split(' ').next().unwrap().ends_with('Z')
}

#[test]
fn log_files_hold_the_start_line_and_errors() {
    let env = Env::built_in();
    let logs = env.path().join("logs");
    let env = env
        .with_var("LOG_TO_FILE", "1")
        .with_var("LOG_DIR", logs.to_str().unwrap());
    let d = env.start_daemon(&[]);
    let all = wait_for_file(&logs.join("cron.log"), "ready");
    let start = all.lines().find(|l| l.contains("ready")).unwrap();
    assert!(starts_with_timestamp(start), "{start}");
    assert!(start.contains(" INFO silica-crond "), "{start}");
    // stderr (not the journal here) has timestamps too.
    let stderr = d.log();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(starts_with_timestamp(first), "{stderr}");

    // A second daemon on the same database is refused: an ERROR line, in both files.
    let second = env.crond(&[]);
    second.code(1);
    let errors = wait_for_file(&logs.join("cron-errors.log"), "ERROR");
    assert!(errors.contains(&d.pid().to_string()), "{errors}");
    assert!(
        errors.lines().all(|l| l.contains(" ERROR ")),
        "only errors in cron-errors.log:\n{errors}"
    );
    wait_for_file(&logs.join("cron.log"), " ERROR ");
    assert_eq!(d.stop(), 0);
}

#[test]
fn journal_lines_have_no_timestamp_and_no_leading_space() {
    let env = Env::built_in();
    let log = env.path().join("journal");
    let file = std::fs::File::create(&log).unwrap();
    let m = file.metadata().unwrap();
    let mut child = env
        .command("silica-crond")
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let text = wait_for_file(&log, "ready");
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let ready = text.lines().find(|l| l.contains("ready")).unwrap();
    assert!(ready.starts_with("INFO silica-crond "), "{text}");
}

#[test]
fn an_unusable_log_dir_is_a_warning_and_the_daemon_runs() {
    let env = Env::built_in();
    let not_a_dir = env.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let env = env
        .with_var("LOG_TO_FILE", "true")
        .with_var("LOG_DIR", not_a_dir.to_str().unwrap());
    let d = env.start_daemon(&[]);
    env.cli(&["status"]).ok();
    let stderr = d.log();
    assert!(
        stderr.contains("warning: cannot open the log files in"),
        "{stderr}"
    );
    assert_eq!(d.stop(), 0);
}

/// Migrations through the daemon are in its log, step by step, while the client still prints
/// them in alembic's format.
#[test]
fn migration_steps_through_the_daemon_are_logged() {
    let env = Env::built_in();
    let logs = env.path().join("logs");
    let env = env
        .with_var("LOG_TO_FILE", "1")
        .with_var("LOG_DIR", logs.to_str().unwrap());
    let _d = env.start_daemon(&[]);
    env.cli(&["migrate", "downgrade", "-1"])
        .ok()
        .stderr_has("INFO  [alembic.runtime.migration] Running downgrade");
    env.cli(&["migrate", "upgrade", "head"]).ok();
    let all = wait_for_file(&logs.join("cron.log"), "Running upgrade");
    let down = all
        .lines()
        .find(|l| l.contains("Running downgrade"))
        .unwrap_or_else(|| panic!("no downgrade step in cron.log:\n{all}"));
    assert!(
        down.contains(" INFO migration: Running downgrade "),
        "{down}"
    );
    assert!(!down.contains("[alembic"), "{down}");
}
