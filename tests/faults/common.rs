//! Small things the scenarios share that no other test target needs.

use std::time::Duration;

/// Whether the long variants run (`SILICA_CRON_FAULTS_LONG=1`).
pub fn long() -> bool {
    std::env::var("SILICA_CRON_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// `n`, or `long` with `SILICA_CRON_FAULTS_LONG=1`.
pub fn iterations(n: u32, long_n: u32) -> u32 {
    if long() {
        long_n
    } else {
        n
    }
}

/// splitmix64: deterministic, so a failing iteration can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_FA17_0000_0000)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, max].
    pub fn delay(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.next() % (max.as_micros() as u64 + 1))
    }
}

pub use silica_cron_tests::jobs::cli;

/// The execution id a `prompts run` / `jobs run` printed.
pub fn started_id(stdout: &str) -> Option<i64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("started execution "))
        .and_then(|s| s.trim().parse().ok())
}

/// Seconds into the current wall-clock minute.
pub fn second_of_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60
}
