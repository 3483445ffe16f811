//! The fault battery (issue #6): attacks on the real `silica-crond` and `silica-cron`, checking
//! the promises of DESIGN §3 and §7. One module per scenario; each prints what it tried and what
//! held (`cargo test -p silica-cron-tests --test faults -- --nocapture`) and appends a summary
//! line to `target/faults-report.txt`, which `scripts/test.sh` prints at the end.
//!
//! Scenario numbers are the issue's.
//! `SILICA_CRON_FAULTS_LONG=1` raises iteration counts (see each module).

mod clock;
mod common;
mod db_locked;
mod disk_full;
mod fuzz;
mod hostile_clients;
mod jobs_kill9;
mod loopdisk;
mod migration_faults;
mod misbehaving_jobs;
mod ownership;
mod sigterm_tree;
