//! What `silica-cron logs` reads: a bounded ring of the daemon's recent log lines, and the
//! followers (`logs -f`) to which new lines and live job output are handed as they happen.
//!
//! The daemon never waits for a follower: each has a bounded queue, a line that finds it full
//! is dropped and counted, and the follower is told the count once it catches up. A follower
//! sleeps in `poll` on an eventfd (written only when its queue goes from empty to not empty)
//! and on its client's socket, so it costs no wake-ups while nothing happens and notices at
//! once a client that went away.
//!
//! Nothing here may log: the bus is called from inside the tracing layer.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use proto::message::{LineKind, LogLevel, LogLine};

/// Lines a follower may have waiting before new ones are dropped.
pub const FOLLOWER_QUEUE: usize = 1024;

/// A line on the bus. `run_ended` marks the end of an execution's output (after its outcome
/// is recorded); it is never shown, it ends `logs -f --execution`.
#[derive(Debug)]
pub struct Entry {
    pub line: LogLine,
    pub run_ended: bool,
}

/// Which lines a client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub level: LogLevel,
    pub job: Option<String>,
    /// Only this execution's output (log lines about it are not included).
    pub execution: Option<i64>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let l = &e.line;
        if let Some(id) = self.execution {
            return l.execution == Some(id) && (e.run_ended || l.kind != LineKind::Log);
        }
        !e.run_ended
            && l.level <= self.level
            && self.job.as_ref().is_none_or(|j| l.job.as_ref() == Some(j))
    }

    /// Whether output of a run of `job` (execution `execution`) could match.
    fn wants_output(&self, job: &str, execution: i64) -> bool {
        match self.execution {
            Some(id) => id == execution,
            None => LogLevel::Info <= self.level && self.job.as_deref().is_none_or(|j| j == job),
        }
    }
}

pub struct LogBus {
    inner: Mutex<Inner>,
    /// Followers attached, read without the lock by producers of job output.
    following: AtomicUsize,
}

struct Inner {
    ring: VecDeque<Arc<Entry>>,
    capacity: usize,
    followers: Vec<Arc<Follower>>,
}

struct Follower {
    filter: Filter,
    queue: Mutex<Queue>,
    /// An eventfd, written when the queue stops being empty.
    wake: OwnedFd,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Arc<Entry>>,
    missed: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The daemon's bus (the tracing subscriber is process-wide, so is this).
pub fn bus() -> &'static Arc<LogBus> {
    static BUS: LazyLock<Arc<LogBus>> =
        LazyLock::new(|| LogBus::new(proto::config::DEFAULT_LOG_BUFFER_LINES));
    &BUS
}

impl LogBus {
    pub fn new(capacity: usize) -> Arc<LogBus> {
        Arc::new(LogBus {
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                followers: Vec::new(),
            }),
            following: AtomicUsize::new(0),
        })
    }

    pub fn set_capacity(&self, capacity: usize) {
        let mut inner = lock(&self.inner);
        inner.capacity = capacity;
        let excess = inner.ring.len().saturating_sub(capacity);
        inner.ring.drain(..excess);
    }

    /// A line of the daemon's log: kept in the ring, and handed to the followers.
    pub fn log(&self, line: LogLine) {
        let e = Arc::new(Entry {
            line,
            run_ended: false,
        });
        let mut inner = lock(&self.inner);
        if inner.capacity > 0 {
            if inner.ring.len() >= inner.capacity {
                inner.ring.pop_front();
            }
            inner.ring.push_back(e.clone());
        }
        offer(&inner.followers, &e);
    }

    /// Live job output and run ends: for followers only (the output is recorded with the run).
    pub fn live(&self, e: Entry) {
        if self.following.load(Ordering::Relaxed) == 0 {
            return;
        }
        let e = Arc::new(e);
        offer(&lock(&self.inner).followers, &e);
    }

    /// Whether any follower would take output of this run (so that nobody pays for splitting
    /// output into lines that nobody reads).
    pub fn wants_output(&self, job: &str, execution: i64) -> bool {
        self.following.load(Ordering::Relaxed) > 0
            && lock(&self.inner)
                .followers
                .iter()
                .any(|f| f.filter.wants_output(job, execution))
    }

    /// The last `n` lines of the ring that match, oldest first.
    pub fn recent(&self, filter: &Filter, n: usize) -> Vec<Arc<Entry>> {
        recent(&lock(&self.inner), filter, n)
    }

    /// The last `n` matching lines and a subscription to the next ones, taken together so
    /// that no line is lost or shown twice between them.
    pub fn follow(
        self: &Arc<Self>,
        filter: Filter,
        n: usize,
    ) -> io::Result<(Vec<Arc<Entry>>, Subscription)> {
        // SAFETY: eventfd has no preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created and nobody else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let follower = Arc::new(Follower {
            filter,
            queue: Mutex::new(Queue::default()),
            wake,
        });
        let mut inner = lock(&self.inner);
        let lines = recent(&inner, &follower.filter, n);
        inner.followers.push(follower.clone());
        self.following
            .store(inner.followers.len(), Ordering::Relaxed);
        drop(inner);
        Ok((
            lines,
            Subscription {
                bus: self.clone(),
                follower,
            },
        ))
    }

    #[cfg(test)]
    pub fn followers(&self) -> usize {
        self.following.load(Ordering::Relaxed)
    }
}

fn recent(inner: &Inner, filter: &Filter, n: usize) -> Vec<Arc<Entry>> {
    let mut out: Vec<Arc<Entry>> = inner
        .ring
        .iter()
        .rev()
        .filter(|e| filter.matches(e))
        .take(n)
        .cloned()
        .collect();
    out.reverse();
    out
}

fn offer(followers: &[Arc<Follower>], e: &Arc<Entry>) {
    for f in followers {
        if !f.filter.matches(e) {
            continue;
        }
        let mut q = lock(&f.queue);
        if q.items.len() >= FOLLOWER_QUEUE {
            // The eventfd was written when the queue filled; nothing to wake.
            q.missed += 1;
            continue;
        }
        let was_empty = q.items.is_empty();
        q.items.push_back(e.clone());
        drop(q);
        if was_empty {
            let one = 1u64.to_ne_bytes();
            // SAFETY: an 8-byte write to our eventfd; non-blocking, so never waits. A full
            // counter (impossible in practice) only means a wake is already pending.
            unsafe { libc::write(f.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }
}

/// A follower's end: taken lines, and waiting for more. Dropping it detaches the follower.
pub struct Subscription {
    bus: Arc<LogBus>,
    follower: Arc<Follower>,
}

/// Why [`Subscription::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Lines,
    /// The other descriptor became readable or hung up (for a client socket: the client went
    /// away, or sent something, or the daemon shut its reading side down to stop).
    Peer,
    Timeout,
}

impl Subscription {
    /// Everything waiting, and how many lines were dropped after it.
    pub fn take(&self) -> (Vec<Arc<Entry>>, u64) {
        let mut q = lock(&self.follower.queue);
        let items = std::mem::take(&mut q.items).into();
        (items, std::mem::take(&mut q.missed))
    }

    /// Sleeps until lines are waiting, `peer` is readable or hung up, or `timeout_ms` passed
    /// (-1: no limit).
    pub fn wait(&self, peer: Option<BorrowedFd<'_>>, timeout_ms: i32) -> io::Result<Wake> {
        let wake = self.follower.wake.as_fd();
        let mut fds = [
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: peer.map_or(-1, |p| p.as_raw_fd()),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: two valid pollfd structs; a negative fd is ignored by poll.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                return Ok(Wake::Peer);
            }
            if fds[0].revents != 0 {
                let mut buf = [0u8; 8];
                // SAFETY: reads the counter (resetting it) into our buffer.
                unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                return Ok(Wake::Lines);
            }
            return Ok(Wake::Timeout);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = lock(&self.bus.inner);
        inner.followers.retain(|f| !Arc::ptr_eq(f, &self.follower));
        self.bus
            .following
            .store(inner.followers.len(), Ordering::Relaxed);
    }
}

/// Cuts a run's output chunks into lines. A line longer than `max` is cut into pieces, so a
/// job that never writes a newline cannot grow the buffer without bound.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub const MAX_LINE: usize = 64 * 1024;

    pub fn push(&mut self, data: &[u8], mut line: impl FnMut(String)) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|b| *b == b'\n') {
            line(String::from_utf8_lossy(&self.buf[start..start + nl]).into_owned());
            start += nl + 1;
        }
        while self.buf.len() - start >= Self::MAX_LINE {
            let end = start + Self::MAX_LINE;
            line(String::from_utf8_lossy(&self.buf[start..end]).into_owned());
            start = end;
        }
        self.buf.drain(..start);
    }

    /// What is left after the last newline.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.is_empty()).then(|| String::from_utf8_lossy(&rest).into_owned())
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: LogLevel, job: Option<&str>, text: &str) -> LogLine {
        LogLine {
            time: String::new(),
            level,
            kind: LineKind::Log,
            target: "t".into(),
            job: job.map(String::from),
            execution: None,
            text: text.into(),
        }
    }

    fn texts(v: &[Arc<Entry>]) -> Vec<&str> {
        v.iter().map(|e| e.line.text.as_str()).collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_and_filters_by_level_and_job() {
        let bus = LogBus::new(3);
        bus.log(line(LogLevel::Info, None, "a"));
        bus.log(line(LogLevel::Warn, Some("j"), "b"));
        bus.log(line(LogLevel::Debug, Some("j"), "c"));
        bus.log(line(LogLevel::Error, Some("k"), "d"));
        let all = Filter {
            level: LogLevel::Trace,
            ..Default::default()
        };
        assert_eq!(texts(&bus.recent(&all, 10)), ["b", "c", "d"]);
        assert_eq!(texts(&bus.recent(&all, 2)), ["c", "d"]);
        let warn = Filter {
            level: LogLevel::Warn,
            ..Default::default()
        };
        assert_eq!(texts(&bus.recent(&warn, 10)), ["b", "d"]);
        let j = Filter {
            level: LogLevel::Trace,
            job: Some("j".into()),
            execution: None,
        };
        assert_eq!(texts(&bus.recent(&j, 10)), ["b", "c"]);
        bus.set_capacity(1);
        assert_eq!(texts(&bus.recent(&all, 10)), ["d"]);
        bus.set_capacity(0);
        bus.log(line(LogLevel::Info, None, "e"));
        assert!(bus.recent(&all, 10).is_empty());
    }

    #[test]
    fn a_follower_gets_recent_then_new_lines_and_is_woken() {
        let bus = LogBus::new(10);
        bus.log(line(LogLevel::Info, None, "old"));
        let (recent, sub) = bus.follow(Filter::default(), 5).unwrap();
        assert_eq!(texts(&recent), ["old"]);
        assert_eq!(sub.wait(None, 0).unwrap(), Wake::Timeout);
        bus.log(line(LogLevel::Info, None, "new"));
        bus.log(line(LogLevel::Debug, None, "filtered out"));
        assert_eq!(sub.wait(None, 1000).unwrap(), Wake::Lines);
        let (items, missed) = sub.take();
        assert_eq!((texts(&items), missed), (vec!["new"], 0));
        // The wake was consumed with the lines.
        assert_eq!(sub.wait(None, 0).unwrap(), Wake::Timeout);
        assert_eq!(bus.followers(), 1);
        drop(sub);
        assert_eq!(bus.followers(), 0);
    }

    /// A follower that never takes its lines costs a bounded queue; the rest are counted.
    #[test]
    fn a_follower_that_never_reads_loses_lines_and_is_told_how_many() {
        let bus = LogBus::new(10);
        let (_, sub) = bus.follow(Filter::default(), 0).unwrap();
        for i in 0..FOLLOWER_QUEUE + 500 {
            bus.log(line(LogLevel::Info, None, &format!("{i}")));
        }
        let (items, missed) = sub.take();
        assert_eq!(items.len(), FOLLOWER_QUEUE);
        assert_eq!(items[0].line.text, "0");
        assert_eq!(missed, 500);
        // The ring is unaffected by the follower.
        assert_eq!(bus.recent(&Filter::default(), 100).len(), 10);
        bus.log(line(LogLevel::Info, None, "after"));
        let (items, missed) = sub.take();
        assert_eq!((texts(&items), missed), (vec!["after"], 0));
    }

    #[test]
    fn an_execution_follower_gets_its_output_and_its_end_only() {
        let bus = LogBus::new(10);
        let filter = Filter {
            execution: Some(7),
            ..Default::default()
        };
        let (_, sub) = bus.follow(filter, 10).unwrap();
        assert!(bus.wants_output("j", 7));
        assert!(!bus.wants_output("j", 8));
        let out = |execution, text: &str, run_ended| Entry {
            line: LogLine {
                kind: LineKind::Stdout,
                execution: Some(execution),
                ..line(LogLevel::Info, Some("j"), text)
            },
            run_ended,
        };
        let mut about = line(LogLevel::Info, Some("j"), "run started");
        about.execution = Some(7);
        bus.log(about);
        bus.live(out(8, "other", false));
        bus.live(out(7, "mine", false));
        bus.live(out(7, "", true));
        let (items, _) = sub.take();
        assert_eq!(texts(&items), ["mine", ""]);
        assert!(items[1].run_ended);
    }

    #[test]
    fn a_peer_hanging_up_wakes_the_follower() {
        let bus = LogBus::new(10);
        let (_, sub) = bus.follow(Filter::default(), 0).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(sub.wait(Some(a.as_fd()), 0).unwrap(), Wake::Timeout);
        drop(b);
        assert_eq!(sub.wait(Some(a.as_fd()), 1000).unwrap(), Wake::Peer);
    }

    #[test]
    fn output_is_cut_into_lines_across_chunks() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.push(b"one\ntw", |l| got.push(l));
        s.push(b"o\n\nthr", |l| got.push(l));
        assert_eq!(got, ["one", "two", ""]);
        assert_eq!(s.finish().as_deref(), Some("thr"));
        assert_eq!(s.finish(), None);
        let mut got = Vec::new();
        s.push(&vec![b'x'; LineSplitter::MAX_LINE * 2 + 3], |l| got.push(l));
        assert_eq!(got.len(), 2);
        assert_eq!(s.finish().map(|r| r.len()), Some(3));
    }
}
