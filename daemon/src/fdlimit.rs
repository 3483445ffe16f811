//! How many control connections and runs the open-files limit (`RLIMIT_NOFILE`) leaves room
//! for.
//!
//! Each connection holds a descriptor. When the limit is reached, `accept` fails with EMFILE
//! and the connection stays in the kernel's backlog: the client hangs instead of being served
//! or refused, and the database, runs and the watcher fail for want of descriptors too. So
//! under a low limit (`prlimit --nofile=64`, a tight `LimitNOFILE=`) the connection slots are
//! lowered until accepting one more and closing it is always possible.

/// Descriptors the daemon holds besides connections and runs: stdio, the database, its WAL and
/// shared memory, the lock file, the listeners, the runtime's epoll and eventfds, inotify,
/// signals, logs, with room for SQLite's temporary files.
const FDS_BASE: u64 = 32;
/// Below `FDS_FULL` beyond `max_connections`, slots are clamped.
const FDS_FULL: u64 = 128;

/// The connection slots for `configured` under a soft limit of `limit` descriptors: all of them
/// when there is room, else half of what the daemon's own descriptors leave (the other half is
/// for runs and spare), at least one.
pub fn connections_allowed(configured: usize, limit: u64) -> usize {
    if limit >= configured as u64 + FDS_FULL {
        return configured;
    }
    let half = (limit.saturating_sub(FDS_BASE) / 2).max(1);
    configured.min(usize::try_from(half).unwrap_or(usize::MAX))
}

/// Descriptors a run holds while it lasts: two pipes and a pidfd, four while it starts.
const FDS_PER_RUN: u64 = 4;
/// Descriptors kept for everything but runs, beside the connection slots.
const FDS_RESERVED: u64 = 128;

/// How many runs a soft limit of `limit` descriptors allows at once beside `max_connections`
/// connections, so that a large `max_concurrent_runs` queues runs instead of failing them
/// with EMFILE.
pub fn runs_allowed(max_connections: usize, limit: u64) -> usize {
    let spare = limit.saturating_sub(FDS_RESERVED + max_connections as u64);
    usize::try_from(spare / FDS_PER_RUN)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The process's current soft limit on open files, if it can be read.
pub fn soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_enough_keeps_the_configured_slots() {
        assert_eq!(connections_allowed(1024, 65_536), 1024);
        assert_eq!(connections_allowed(1024, 1024 + 128), 1024);
        assert_eq!(connections_allowed(64, 1024), 64);
    }

    #[test]
    fn a_low_limit_clamps_with_room_left_for_runs() {
        assert_eq!(connections_allowed(1024, 64), 16);
        assert_eq!(connections_allowed(1024, 1024), 496);
        assert_eq!(connections_allowed(8, 64), 8);
        // Absurdly low: one slot, never zero (the semaphore would refuse everyone).
        assert_eq!(connections_allowed(1024, 10), 1);
    }

    #[test]
    fn runs_get_what_connections_and_the_reserve_leave() {
        // 20,000 open files, 1,024 connections: (20,000 - 128 - 1,024) / 4.
        assert_eq!(runs_allowed(1024, 20_000), 4712);
        assert_eq!(runs_allowed(16, 64), 1);
    }
}
