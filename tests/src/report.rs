//! What a fault scenario tried and what held: printed as it goes (visible with `--nocapture`)
//! and, when the scenario ends, one line appended to the battery's summary file, which
//! `scripts/test.sh` prints after the tests (a scenario that panicked writes a FAILED line).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The summary file: `$SILICA_CRON_FAULTS_REPORT`, else `target/faults-report.txt`.
pub fn summary_path() -> PathBuf {
    std::env::var_os("SILICA_CRON_FAULTS_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target/faults-report.txt"))
}

/// One scenario's record.
pub struct Scenario {
    id: &'static str,
    title: &'static str,
    started: Instant,
    iterations: u64,
    held: Vec<String>,
    worst_recovery: Option<Duration>,
    done: bool,
}

impl Scenario {
    pub fn start(id: &'static str, title: &'static str) -> Scenario {
        println!("[fault {id}] {title}");
        Scenario {
            id,
            title,
            started: Instant::now(),
            iterations: 0,
            held: Vec::new(),
            worst_recovery: None,
            done: false,
        }
    }

    /// An attack made.
    pub fn tried(&self, what: impl AsRef<str>) {
        println!("[fault {}]   tried: {}", self.id, what.as_ref());
    }

    /// A promise checked and kept; kept for the summary line.
    pub fn held(&mut self, what: impl Into<String>) {
        let what = what.into();
        println!("[fault {}]   held:  {what}", self.id);
        self.held.push(what);
    }

    /// A count of attacks, for the summary.
    pub fn iteration(&mut self) {
        self.iterations += 1;
    }

    pub fn iterations(&mut self, n: u64) {
        self.iterations += n;
    }

    /// A time from an attack until the daemon served again; the worst is reported.
    pub fn recovery(&mut self, took: Duration) {
        self.worst_recovery = Some(self.worst_recovery.map_or(took, |w| w.max(took)));
    }

    /// The scenario passed: prints and records its summary line.
    pub fn pass(mut self) {
        self.done = true;
        self.write("passed");
    }

    /// The scenario could not run here (the reason is printed and recorded, never a pass).
    pub fn skip(mut self, why: impl AsRef<str>) {
        self.done = true;
        self.held.push(format!("not run: {}", why.as_ref()));
        self.write("SKIPPED");
    }

    fn write(&self, result: &str) {
        let recovery = self
            .worst_recovery
            .map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
        let line = format!(
            "{}\t{}\t{result}\t{}\t{recovery}\t{:.0} s\t{}\n",
            self.id,
            self.title,
            self.iterations,
            self.started.elapsed().as_secs_f64(),
            self.held.join("; ")
        );
        println!(
            "[fault {}] {result}: {} iterations, worst recovery {recovery}",
            self.id, self.iterations
        );
        let path = summary_path();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // One write of one line with O_APPEND: lines of scenarios running in parallel do not mix.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if !self.done && std::thread::panicking() {
            self.write("FAILED");
        }
    }
}
