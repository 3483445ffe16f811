//! The daemon's log: stderr always, and with LOG_TO_FILE `cron.log` (every line at the level) and
//! `cron-errors.log` (ERROR lines only) in LOG_DIR, each rotated by size.
//!
//! Lines are `<time> <LEVEL> <message> <fields>`; when stderr is the journal the time is left
//! out, because the journal stamps each line itself.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proto::message::{LineKind, LogLevel, LogLine};
use proto::paths::Settings;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// A log file is rotated once it would grow past this size.
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept: `cron.log.1` (newest) … `cron.log.5` (oldest).
pub const KEEP: usize = 5;

/// Where the log goes, resolved from the environment (which wins) and the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// An EnvFilter directive string (`info`, `debug,silica_crond=trace`).
    pub level: String,
    /// The log files' directory, or None for stderr only.
    pub dir: Option<PathBuf>,
}

impl LogConfig {
    /// LOG_LEVEL, LOG_TO_FILE and LOG_DIR beat `log_level`, `log_to_file` and `log_dir` in the
    /// config file. Problems are returned as warnings to print once logging is up.
    pub fn resolve(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> (LogConfig, Vec<String>) {
        let mut warnings = Vec::new();
        let raw_level = env("LOG_LEVEL")
            .filter(|v| !v.is_empty())
            .or_else(|| settings.file.log_level.clone())
            .unwrap_or_else(|| "info".into());
        let level = match level_directive(&raw_level) {
            Some(l) => l,
            None => {
                warnings.push(format!("LOG_LEVEL {raw_level:?} is not a level (error, warn, info, debug, trace); using info"));
                "info".into()
            }
        };
        let to_file = match env("LOG_TO_FILE").filter(|v| !v.is_empty()) {
            Some(v) => {
                match parse_bool(&v) {
                    Some(b) => b,
                    None => {
                        warnings.push(format!("LOG_TO_FILE {v:?} is neither true/1 nor false/0; not writing log files"));
                        false
                    }
                }
            }
            None => settings.file.log_to_file.unwrap_or(false),
        };
        let dir = to_file.then(|| match env("LOG_DIR").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => match &settings.file.log_dir {
                // A relative path in the config file is relative to the file.
                Some(d) => settings
                    .config_path
                    .as_deref()
                    .and_then(Path::parent)
                    .map(|base| base.join(d))
                    .unwrap_or_else(|| d.clone()),
                None => PathBuf::from("logs"),
            },
        });
        (LogConfig { level, dir }, warnings)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// LOG_LEVEL as the original (Python's logging) spells it, or an EnvFilter directive.
/// WARNING and CRITICAL are Python's names; tracing would read them as target names and log
/// nothing, so they are mapped.
fn level_directive(raw: &str) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    let mapped = match lower.as_str() {
        "warning" => "warn",
        "critical" | "fatal" => "error",
        "notset" => "trace",
        other => other,
    };
    let plain = ["off", "error", "warn", "info", "debug", "trace"];
    if plain.contains(&mapped) || (mapped.contains('=') && EnvFilter::try_new(mapped).is_ok()) {
        Some(mapped.to_string())
    } else {
        None
    }
}

/// Installs the global subscriber. A log file that cannot be opened is a warning on stderr;
/// the daemon runs on with the rest.
pub fn init(settings: &Settings) {
    let (cfg, mut warnings) = LogConfig::resolve(settings, |k| std::env::var(k).ok());
    let filter = || EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = journal_stream_matches(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        io::stderr().as_fd(),
    );
    let stderr = tracing_subscriber::fmt::layer()
        .event_format(LineFormat { time: !journal })
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_filter(filter());

    let mut files = None;
    if let Some(dir) = &cfg.dir {
        let open = |name: &str| RotatingFile::open(&dir.join(name), ROTATE_BYTES, KEEP);
        match std::fs::create_dir_all(dir)
            .and_then(|()| Ok((open("cron.log")?, open("cron-errors.log")?)))
        {
            Ok((all, errors)) => {
                let file_layer = |w: RotatingFile| {
                    tracing_subscriber::fmt::layer()
                        .event_format(LineFormat { time: true })
                        .with_writer(w)
                        .with_ansi(false)
                };
                files = Some(
                    file_layer(all)
                        .with_filter(filter())
                        .and_then(file_layer(errors).with_filter(LevelFilter::ERROR)),
                );
            }
            Err(e) => warnings.push(format!(
                "cannot open the log files in {}: {e}; logging to stderr only",
                dir.display()
            )),
        }
    }
    let bus = crate::logbus::bus();
    bus.set_capacity(settings.file.log_buffer());
    let ring = RingLayer { bus: bus.clone() }.with_filter(filter());
    tracing_subscriber::registry()
        .with(stderr)
        .with(files)
        .with(ring)
        .init();
    for w in warnings {
        // eprintln as well as warn: the files may be what failed, and stderr must say so even
        // when LOG_LEVEL hides warnings.
        eprintln!("silica-crond: warning: {w}");
    }
}

/// Whether `fd` is the stream JOURNAL_STREAM (`<device>:<inode>`) names: systemd sets it for
/// a service whose stdout or stderr is the journal, and children inherit it even when their
/// own stderr goes elsewhere, hence the comparison with fstat.
pub fn journal_stream_matches(value: Option<&str>, fd: BorrowedFd<'_>) -> bool {
    let Some((dev, ino)) = value.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(owned) = fd.try_clone_to_owned() else {
        return false;
    };
    File::from(owned)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `<time> <LEVEL> <spans: ><message> <fields>`: the default format pads the level to five
/// columns, which left journal lines starting with a space.
struct LineFormat {
    time: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.time {
            SystemTime.format_time(&mut w)?;
            w.write_str(" ")?;
        }
        let level = *event.metadata().level();
        if w.has_ansi_escapes() {
            let color = match level {
                Level::ERROR => 31,
                Level::WARN => 33,
                Level::INFO => 32,
                Level::DEBUG => 34,
                Level::TRACE => 35,
            };
            write!(w, "\x1b[{color}m{level}\x1b[0m ")?;
        } else {
            write!(w, "{level} ")?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                w.write_str(span.name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(w, "{{{fields}}}")?;
                    }
                }
                w.write_str(": ")?;
            }
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Now, as the log lines write it (UTC, RFC 3339, microseconds).
pub fn now() -> String {
    let mut s = String::with_capacity(32);
    let _ = SystemTime.format_time(&mut Writer::new(&mut s));
    s
}

/// Hands each event, formatted, to the log bus (the ring `silica-cron logs` reads, and its
/// followers). The `job` and `execution` fields are kept apart so that clients can filter.
struct RingLayer {
    bus: std::sync::Arc<crate::logbus::LogBus>,
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let mut v = RingVisitor::default();
        event.record(&mut v);
        if !v.fields.is_empty() {
            v.message.push_str(&v.fields);
        }
        self.bus.log(LogLine {
            time: now(),
            level: match *meta.level() {
                Level::ERROR => LogLevel::Error,
                Level::WARN => LogLevel::Warn,
                Level::INFO => LogLevel::Info,
                Level::DEBUG => LogLevel::Debug,
                Level::TRACE => LogLevel::Trace,
            },
            kind: LineKind::Log,
            target: meta.target().to_string(),
            job: v.job,
            execution: v.execution,
            text: v.message,
        });
    }
}

/// `message key=value …`, as the stderr lines read.
#[derive(Default)]
struct RingVisitor {
    message: String,
    fields: String,
    job: Option<String>,
    execution: Option<i64>,
}

impl tracing::field::Visit for RingVisitor {
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "execution" {
            self.execution = Some(value);
        }
        self.record_debug(field, &value);
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "execution" {
            self.execution = i64::try_from(value).ok();
        }
        self.record_debug(field, &value);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "job" {
            self.job = Some(value.to_string());
        }
        self.record_debug(field, &value);
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use std::fmt::Write as _;
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                // `job = %name` arrives here as a Display wrapper, whose Debug is the Display.
                if name == "job" && self.job.is_none() {
                    self.job = Some(format!("{value:?}"));
                }
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

/// An append-only file rotated by size: `name` -> `name.1` -> … -> `name.<keep>`, the oldest
/// dropped. The fmt layer hands each whole line to one `write` call, and rotation happens only
/// between calls, so a line is never split across two files. Writes go to the page cache under
/// a mutex held for one line (a rotation adds a few renames), short enough for async workers.
pub struct RotatingFile {
    path: PathBuf,
    limit: u64,
    keep: usize,
    state: Mutex<FileState>,
}

struct FileState {
    file: File,
    /// Bytes in the current file, counting what an earlier daemon left there.
    written: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, limit: u64, keep: usize) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            limit,
            keep: keep.max(1),
            state: Mutex::new(FileState { file, written }),
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self, state: &mut FileState) -> io::Result<()> {
        // Shift from the oldest down; the rename onto `.keep` drops the oldest file.
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        state.file = open_append(&self.path)?;
        state.written = 0;
        Ok(())
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.written > 0 && state.written + line.len() as u64 > self.limit {
            if let Err(e) = self.rotate(&mut state) {
                // Keep writing where we are; try again after another `limit` bytes rather than
                // on every line.
                eprintln!(
                    "silica-crond: warning: cannot rotate {}: {e}",
                    self.path.display()
                );
                state.written = 0;
            }
        }
        state.file.write_all(line)?;
        state.written += line.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_line(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = &'a RotatingFile;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn rotates_by_size_keeps_five_and_never_splits_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cron.log");
        let f = RotatingFile::open(&path, 1000, 5).unwrap();
        // 95-byte lines: ten fit in 1000 bytes, the eleventh starts a new file.
        let line = |i: usize| format!("line {i:06} {}\n", "x".repeat(82));
        for i in 0..100 {
            (&f).write_all(line(i).as_bytes()).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cron.log",
                "cron.log.1",
                "cron.log.2",
                "cron.log.3",
                "cron.log.4",
                "cron.log.5"
            ]
        );
        // Newest in cron.log, then .1 …; every file whole lines, at most the limit; the oldest
        // (lines 0..40) dropped.
        let mut seen = Vec::new();
        for name in [
            "cron.log.5",
            "cron.log.4",
            "cron.log.3",
            "cron.log.2",
            "cron.log.1",
            "cron.log",
        ] {
            let p = dir.path().join(name);
            assert!(std::fs::metadata(&p).unwrap().len() <= 1000, "{name}");
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.ends_with('\n'), "{name} ends mid-line");
            for l in lines_of(&p) {
                assert_eq!(l.len(), 94, "{name}: {l}");
                seen.push(l[5..11].parse::<usize>().unwrap());
            }
        }
        assert_eq!(seen, (40..100).collect::<Vec<_>>());
    }

    #[test]
    fn reopening_counts_what_is_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cron.log");
        std::fs::write(&path, "x".repeat(990)).unwrap();
        let f = RotatingFile::open(&path, 1000, 5).unwrap();
        (&f).write_all(b"0123456789abcdef\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cron.log.1"))
                .unwrap()
                .len(),
            990
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0123456789abcdef\n"
        );
    }

    #[test]
    fn a_line_longer_than_the_limit_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cron.log");
        let f = RotatingFile::open(&path, 10, 2).unwrap();
        let long = format!("{}\n", "y".repeat(50));
        (&f).write_all(b"short\n").unwrap();
        (&f).write_all(long.as_bytes()).unwrap();
        (&f).write_all(b"after\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cron.log.2")).unwrap(),
            "short\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cron.log.1")).unwrap(),
            long
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("stream")).unwrap();
        let other = File::create(dir.path().join("other")).unwrap();
        let m = file.metadata().unwrap();
        let value = format!("{}:{}", m.dev(), m.ino());
        assert!(journal_stream_matches(Some(&value), file.as_fd()));
        // Inherited from a parent whose stderr was the journal, but ours is another file.
        assert!(!journal_stream_matches(Some(&value), other.as_fd()));
        assert!(!journal_stream_matches(None, file.as_fd()));
        assert!(!journal_stream_matches(Some(""), file.as_fd()));
        assert!(!journal_stream_matches(Some("garbage"), file.as_fd()));
        assert!(!journal_stream_matches(
            Some(&format!("{}:x", m.dev())),
            file.as_fd()
        ));
    }

    #[test]
    fn levels_as_the_original_spells_them() {
        assert_eq!(level_directive("INFO").as_deref(), Some("info"));
        assert_eq!(level_directive("WARNING").as_deref(), Some("warn"));
        assert_eq!(level_directive("CRITICAL").as_deref(), Some("error"));
        assert_eq!(level_directive("debug").as_deref(), Some("debug"));
        assert_eq!(
            level_directive("info,silica_crond=trace").as_deref(),
            Some("info,silica_crond=trace")
        );
        assert_eq!(level_directive("loud"), None);
    }

    #[test]
    fn environment_beats_the_config_file() {
        let mut settings = Settings::resolve_with(
            &Default::default(),
            &Default::default(),
            Path::new("/w"),
            Path::new("/nonexistent/config.toml"),
        )
        .unwrap();
        settings.file.log_level = Some("debug".into());
        settings.file.log_to_file = Some(true);
        settings.file.log_dir = Some("logs-here".into());
        settings.config_path = Some("/etc/silica-cron/config.toml".into());
        let none = |_: &str| None;
        let (cfg, w) = LogConfig::resolve(&settings, none);
        assert!(w.is_empty());
        assert_eq!(cfg.level, "debug");
        assert_eq!(
            cfg.dir.as_deref(),
            Some(Path::new("/etc/silica-cron/logs-here"))
        );
        let env = |k: &str| match k {
            "LOG_LEVEL" => Some("WARNING".to_string()),
            "LOG_DIR" => Some("/var/log/x".to_string()),
            "LOG_TO_FILE" => Some("1".to_string()),
            _ => None,
        };
        let (cfg, _) = LogConfig::resolve(&settings, env);
        assert_eq!(cfg.level, "warn");
        assert_eq!(cfg.dir.as_deref(), Some(Path::new("/var/log/x")));
        let off = |k: &str| (k == "LOG_TO_FILE").then(|| "false".to_string());
        assert_eq!(LogConfig::resolve(&settings, off).0.dir, None);
        let bad = |k: &str| (k == "LOG_TO_FILE").then(|| "maybe".to_string());
        let (cfg, w) = LogConfig::resolve(&settings, bad);
        assert_eq!((cfg.dir, w.len()), (None, 1));
    }
}
