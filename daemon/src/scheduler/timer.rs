//! Sleeping until a wall-clock instant: a timerfd on CLOCK_REALTIME with an absolute deadline.
//! It fires at the instant even across suspend, and it is cancelled when the wall clock is set
//! (TFD_TIMER_CANCEL_ON_SET), so a jump wakes the scheduler to re-plan. No polling, no wake-ups
//! while nothing is due.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use schedule::jiff::Timestamp;
use tokio::io::unix::AsyncFd;

pub enum Wake {
    /// The deadline passed.
    Due,
    /// The wall clock was set (a jump): plan again.
    ClockChanged,
}

pub struct WallTimer {
    fd: AsyncFd<OwnedFd>,
}

impl WallTimer {
    pub fn new() -> io::Result<WallTimer> {
        // SAFETY: timerfd_create returns a new descriptor or -1; we own it from here.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd keeps returning the same open descriptor until it is dropped with
        // the AsyncFd.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(WallTimer { fd })
    }

    /// Waits until `at` (wall clock) or a clock change.
    pub async fn sleep_until(&self, at: Timestamp) -> io::Result<Wake> {
        let secs = at.as_second().max(0);
        let nanos = at.subsec_nanosecond().max(0);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            // An all-zero value would disarm the timer: make "the epoch" one nanosecond past it.
            it_value: libc::timespec {
                tv_sec: secs as libc::time_t,
                tv_nsec: if secs == 0 && nanos == 0 {
                    1
                } else {
                    nanos as _
                },
            },
        };
        let flags = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
        // SAFETY: a valid timerfd and a fully initialised itimerspec.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), flags, &spec, std::ptr::null_mut()) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8];
            // SAFETY: reading 8 bytes into a local buffer from our own descriptor.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 8 {
                return Ok(Wake::Due);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ECANCELED) => return Ok(Wake::ClockChanged),
                Some(libc::EAGAIN) => guard.clear_ready(),
                _ => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_at_a_wall_clock_instant() {
        let t = WallTimer::new().unwrap();
        let start = std::time::Instant::now();
        let at = Timestamp::now()
            .checked_add(schedule::jiff::SignedDuration::from_millis(50))
            .unwrap();
        assert!(matches!(t.sleep_until(at).await.unwrap(), Wake::Due));
        assert!(start.elapsed() >= std::time::Duration::from_millis(45));
        // A deadline in the past fires at once.
        let past = Timestamp::now()
            .checked_sub(schedule::jiff::SignedDuration::from_secs(5))
            .unwrap();
        assert!(matches!(t.sleep_until(past).await.unwrap(), Wake::Due));
    }
}
