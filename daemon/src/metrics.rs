//! The daemon's counters and histograms, and their Prometheus text exposition (format 0.0.4).
//!
//! Everything recorded on the scheduler's and the control socket's paths is one relaxed atomic
//! add on a static: no lock, no allocation. Cumulative bucket counts, `_count` and `_sum` are
//! computed when a scrape formats them. A scrape that races a recording may see a bucket
//! without its `_sum` share (never a `_count` that disagrees with the `+Inf` bucket, since
//! `_count` is derived from the buckets).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use proto::message::Request;

/// A histogram with fixed upper bounds in seconds; the last bound must be infinity.
pub struct Histogram<const N: usize> {
    bounds: [f64; N],
    /// Observations per bucket (not cumulative).
    buckets: [AtomicU64; N],
    sum_nanos: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(bounds: [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // A handful of bounds: a linear scan is as fast as anything else.
        let i = self.bounds.iter().position(|&b| secs <= b).unwrap_or(N - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Cumulative counts per bound, and the sum in seconds.
    fn snapshot(&self) -> ([u64; N], f64) {
        let mut cumulative = [0u64; N];
        let mut total = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            total += b.load(Relaxed);
            *c = total;
        }
        (cumulative, self.sum_nanos.load(Relaxed) as f64 / 1e9)
    }
}

/// Firing lag is milliseconds when all is well (DESIGN §9: p99 under 5 ms) and seconds or more
/// when runs wait for a free slot.
const LAG_BOUNDS: [f64; 16] = [
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    60.0,
    300.0,
    f64::INFINITY,
];

/// Agent runs last seconds to the 300 s default timeout, sometimes more.
const DURATION_BOUNDS: [f64; 14] = [
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    f64::INFINITY,
];

/// What started a run, for the firing-lag histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
    Manual,
}

const TRIGGERS: [&str; 3] = ["schedule", "catch-up", "manual"];

impl Trigger {
    /// From `job_executions.trigger_kind`; anything unknown counts as manual.
    pub fn from_kind(kind: &str) -> Trigger {
        match kind {
            "schedule" => Trigger::Schedule,
            "catch-up" => Trigger::CatchUp,
            _ => Trigger::Manual,
        }
    }
}

/// The final statuses an execution can reach (DESIGN §6).
const STATUSES: [&str; 5] = ["completed", "failed", "timed_out", "interrupted", "skipped"];

/// Control-socket request kinds, by the variant of [`Request`].
const REQUEST_KINDS: [&str; 11] = [
    "status",
    "prompt",
    "job",
    "execution",
    "reload",
    "migrate",
    "pause",
    "resume",
    "backup",
    "restore",
    "logs",
];

fn request_kind(req: &Request) -> usize {
    match req {
        Request::Status => 0,
        Request::Prompt(_) => 1,
        Request::Job(_) => 2,
        Request::Execution(_) => 3,
        Request::Reload => 4,
        Request::Migrate(_) => 5,
        Request::Pause => 6,
        Request::Resume => 7,
        Request::Backup(_) => 8,
        Request::Restore(_) => 9,
        Request::Logs(_) => 10,
    }
}

struct Metrics {
    firing_lag: [Histogram<16>; 3],
    run_duration: Histogram<14>,
    executions: [AtomicU64; STATUSES.len()],
    requests: [AtomicU64; REQUEST_KINDS.len()],
}

static METRICS: Metrics = Metrics {
    firing_lag: [
        Histogram::new(LAG_BOUNDS),
        Histogram::new(LAG_BOUNDS),
        Histogram::new(LAG_BOUNDS),
    ],
    run_duration: Histogram::new(DURATION_BOUNDS),
    executions: [const { AtomicU64::new(0) }; STATUSES.len()],
    requests: [const { AtomicU64::new(0) }; REQUEST_KINDS.len()],
};

/// A run's process started `lag` after it was due.
pub fn firing_lag(trigger: Trigger, lag: Duration) {
    METRICS.firing_lag[trigger as usize].observe(lag);
}

/// A run's process ran for `d`.
pub fn run_duration(d: Duration) {
    METRICS.run_duration.observe(d);
}

/// `n` executions reached `status` (one of the final statuses; others are ignored).
pub fn executions_ended(status: &str, n: u64) {
    if let Some(i) = STATUSES.iter().position(|s| *s == status) {
        METRICS.executions[i].fetch_add(n, Relaxed);
    }
}

/// A control-socket request arrived.
pub fn socket_request(req: &Request) {
    METRICS.requests[request_kind(req)].fetch_add(1, Relaxed);
}

/// What a scrape reads from the daemon's state rather than from the counters above.
pub struct Gauges {
    pub version: String,
    pub uptime: Duration,
    /// Seconds since the epoch at which the process started.
    pub start_time: f64,
    pub resident_bytes: Option<u64>,
    /// (all jobs, active jobs), when the database could be read.
    pub jobs: Option<(u64, u64)>,
    pub runs_in_progress: usize,
    pub at_head: bool,
    pub scheduler_running: bool,
}

/// The whole exposition.
pub fn render(g: &Gauges) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;
    family(
        o,
        "silica_cron_build_info",
        "gauge",
        "Always 1; the version label says which build runs.",
    );
    sample(o, "silica_cron_build_info", &[("version", &g.version)], "1");
    family(
        o,
        "silica_cron_database_at_head",
        "gauge",
        "1 when the database is at the head revision of the revision files, else 0.",
    );
    sample(o, "silica_cron_database_at_head", &[], u8::from(g.at_head));
    family(
        o,
        "silica_cron_scheduler_running",
        "gauge",
        "1 when jobs fire (the scheduler is not held), else 0.",
    );
    sample(
        o,
        "silica_cron_scheduler_running",
        &[],
        u8::from(g.scheduler_running),
    );
    if let Some((all, active)) = g.jobs {
        family(
            o,
            "silica_cron_jobs",
            "gauge",
            "Scheduled jobs, active or not.",
        );
        sample(o, "silica_cron_jobs", &[], all);
        family(
            o,
            "silica_cron_jobs_active",
            "gauge",
            "Active scheduled jobs.",
        );
        sample(o, "silica_cron_jobs_active", &[], active);
    }
    family(
        o,
        "silica_cron_runs_in_progress",
        "gauge",
        "Runs whose process is being started or is running.",
    );
    sample(o, "silica_cron_runs_in_progress", &[], g.runs_in_progress);
    family(
        o,
        "silica_cron_executions_total",
        "counter",
        "Executions that reached a final status since the daemon started.",
    );
    for (status, n) in STATUSES.iter().zip(&METRICS.executions) {
        sample(
            o,
            "silica_cron_executions_total",
            &[("status", status)],
            n.load(Relaxed),
        );
    }
    family(
        o,
        "silica_cron_firing_lag_seconds",
        "histogram",
        "From the instant a run was due to its process start; for manual and catch-up runs, from the moment the run was marked running.",
    );
    for (trigger, h) in TRIGGERS.iter().zip(&METRICS.firing_lag) {
        histogram(o, "silica_cron_firing_lag_seconds", ("trigger", trigger), h);
    }
    family(
        o,
        "silica_cron_run_duration_seconds",
        "histogram",
        "How long runs' processes ran, from start to exit (or to being stopped).",
    );
    histogram(
        o,
        "silica_cron_run_duration_seconds",
        ("", ""),
        &METRICS.run_duration,
    );
    family(
        o,
        "silica_cron_socket_requests_total",
        "counter",
        "Control-socket requests by kind since the daemon started.",
    );
    for (kind, n) in REQUEST_KINDS.iter().zip(&METRICS.requests) {
        sample(
            o,
            "silica_cron_socket_requests_total",
            &[("kind", kind)],
            n.load(Relaxed),
        );
    }
    family(
        o,
        "silica_cron_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    sample(o, "silica_cron_uptime_seconds", &[], g.uptime.as_secs_f64());
    family(
        o,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
    );
    sample(o, "process_start_time_seconds", &[], g.start_time);
    if let Some(rss) = g.resident_bytes {
        family(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        sample(o, "process_resident_memory_bytes", &[], rss);
    }
    out
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {}", escape(help, false));
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    o.push_str(name);
    if !labels.is_empty() {
        o.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(o, "{k}=\"{}\"", escape(v, true));
        }
        o.push('}');
    }
    let _ = writeln!(o, " {value}");
}

/// `label` with an empty name means none besides `le`.
fn histogram<const N: usize>(o: &mut String, name: &str, label: (&str, &str), h: &Histogram<N>) {
    let (cumulative, sum) = h.snapshot();
    let bucket = format!("{name}_bucket");
    for (bound, count) in h.bounds.iter().zip(cumulative) {
        let le = if bound.is_infinite() {
            "+Inf".to_string()
        } else {
            bound.to_string()
        };
        let mut labels = vec![("le", le.as_str())];
        if !label.0.is_empty() {
            labels.insert(0, label);
        }
        sample(o, &bucket, &labels, count);
    }
    let labels: &[(&str, &str)] = if label.0.is_empty() { &[] } else { &[label] };
    sample(o, &format!("{name}_sum"), labels, sum);
    sample(o, &format!("{name}_count"), labels, cumulative[N - 1]);
}

/// HELP text escapes backslash and newline; label values also escape the double quote.
fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = Histogram::new([0.001, 0.01, 1.0, f64::INFINITY]);
        for ms in [0, 1, 2, 10, 11, 1000, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let (cumulative, sum) = h.snapshot();
        // <=1 ms: 0 and 1; <=10 ms: + 2, 10; <=1 s: + 11, 1000; +Inf: + 5000.
        assert_eq!(cumulative, [2, 4, 6, 7]);
        assert!((sum - 6.024).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn a_histogram_is_exposed_cumulatively_with_sum_and_count() {
        let h = Histogram::new([0.5, 2.0, f64::INFINITY]);
        h.observe(Duration::from_millis(250));
        h.observe(Duration::from_secs(1));
        h.observe(Duration::from_secs(3));
        let mut o = String::new();
        histogram(&mut o, "x_seconds", ("trigger", "manual"), &h);
        assert_eq!(
            o,
            "x_seconds_bucket{trigger=\"manual\",le=\"0.5\"} 1\n\
             x_seconds_bucket{trigger=\"manual\",le=\"2\"} 2\n\
             x_seconds_bucket{trigger=\"manual\",le=\"+Inf\"} 3\n\
             x_seconds_sum{trigger=\"manual\"} 4.25\n\
             x_seconds_count{trigger=\"manual\"} 3\n"
        );
        let mut o = String::new();
        histogram(&mut o, "y", ("", ""), &h);
        assert!(o.starts_with("y_bucket{le=\"0.5\"} 1\n"), "{o}");
        assert!(o.ends_with("y_sum 4.25\ny_count 3\n"), "{o}");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut o = String::new();
        sample(&mut o, "m", &[("v", "a\"b\\c\nd")], 1);
        assert_eq!(o, "m{v=\"a\\\"b\\\\c\\nd\"} 1\n");
        let mut o = String::new();
        family(&mut o, "m", "gauge", "say \"x\"\\n\nok");
        assert_eq!(o, "# HELP m say \"x\"\\\\n\\nok\n# TYPE m gauge\n");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&Gauges {
            version: "0.1.0".into(),
            uptime: Duration::from_secs(5),
            start_time: 1.7e9,
            resident_bytes: Some(4096),
            jobs: Some((3, 2)),
            runs_in_progress: 1,
            at_head: true,
            scheduler_running: true,
        });
        let mut typed: Vec<(String, String)> = Vec::new();
        let mut helped: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split(' ');
                let (name, kind) = (w.next().unwrap(), w.next().unwrap());
                assert_eq!(helped.last().map(String::as_str), Some(name), "{line}");
                typed.push((name.to_string(), kind.to_string()));
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let (family, kind) = typed.last().expect("a sample before any TYPE");
                let ok = match kind.as_str() {
                    "histogram" => [
                        format!("{family}_bucket"),
                        format!("{family}_sum"),
                        format!("{family}_count"),
                    ]
                    .contains(&name.to_string()),
                    _ => name == family,
                };
                assert!(ok, "{name} under the family {family}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(text.contains("silica_cron_jobs 3\n"), "{text}");
        assert!(text.contains("silica_cron_jobs_active 2\n"), "{text}");
        assert!(text.contains("silica_cron_executions_total{status=\"completed\"} "));
        assert!(text
            .contains("silica_cron_firing_lag_seconds_bucket{trigger=\"schedule\",le=\"0.005\"} "));
        assert!(text.contains("silica_cron_socket_requests_total{kind=\"status\"} "));
        assert!(text.contains("process_resident_memory_bytes 4096\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn triggers_map_from_the_rows_trigger_kind() {
        assert_eq!(Trigger::from_kind("schedule"), Trigger::Schedule);
        assert_eq!(Trigger::from_kind("catch-up"), Trigger::CatchUp);
        assert_eq!(Trigger::from_kind("manual"), Trigger::Manual);
        assert_eq!(TRIGGERS[Trigger::CatchUp as usize], "catch-up");
    }
}
