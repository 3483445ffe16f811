//! Output capture: keeps the first `cap` bytes of a stream, drains (and counts) the rest so
//! the child never blocks on a full pipe, and forwards every chunk to live followers.

use std::sync::Arc;

use std::os::fd::AsRawFd;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{broadcast, watch};

/// Which of the child's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A piece of live output, as read from the pipe.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Arc<[u8]>,
}

/// Raw result of capturing one stream.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub kept: Vec<u8>,
    pub total: u64,
}

const READ_SIZE: usize = 64 * 1024;

/// Reads `r` to EOF (or until `stop` turns true), keeping at most `cap` bytes. When stopped,
/// whatever the pipe already holds is still read (a busy daemon may be told to stop before it
/// got round to reading output that a finished job wrote long ago).
pub(crate) async fn capture<R: AsyncRead + AsRawFd + Unpin>(
    mut r: R,
    stream: Stream,
    cap: usize,
    live: Option<broadcast::Sender<Chunk>>,
    mut stop: watch::Receiver<bool>,
) -> Captured {
    let mut out = Captured::default();
    let mut buf = vec![0u8; READ_SIZE];
    let mut stopped = false;
    // After the stop, a pipe holds at most its capacity (64 KiB by default, 1 MiB at most
    // unprivileged); the bound keeps a writer that escaped the kill from holding us here.
    let mut reads_after_stop = 0;
    loop {
        let n = if stopped || *stop.borrow() {
            stopped = true;
            reads_after_stop += 1;
            if reads_after_stop > 32 {
                break;
            }
            // Non-blocking reads of what is already there, bypassing the reactor's readiness
            // (which may not have caught up): the descriptor is in non-blocking mode.
            // SAFETY: reads into our buffer from a descriptor `r` owns.
            let got = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got > 0 {
                got as usize
            } else if got < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            } else {
                break; // EOF, EAGAIN (nothing more now) or an error
            }
        } else {
            tokio::select! {
                biased;
                r = r.read(&mut buf) => match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                },
                c = stop.changed() => {
                    if c.is_err() || *stop.borrow() {
                        stopped = true;
                    }
                    continue;
                }
            }
        };
        let data = &buf[..n];
        out.total += n as u64;
        let room = cap.saturating_sub(out.kept.len());
        if room > 0 {
            let take = room.min(n);
            let need = out.kept.len() + take;
            if need > out.kept.capacity() {
                // Grow geometrically but never past the cap.
                let target = need.max(out.kept.capacity() * 2).min(cap);
                out.kept.reserve_exact(target - out.kept.len());
            }
            out.kept.extend_from_slice(&data[..take]);
        }
        if let Some(tx) = &live {
            if tx.receiver_count() > 0 {
                let _ = tx.send(Chunk {
                    stream,
                    data: Arc::from(data),
                });
            }
        }
    }
    out
}

/// Length of the longest prefix of `b` that does not end in an incomplete UTF-8 sequence.
fn without_incomplete_tail(b: &[u8]) -> usize {
    let len = b.len();
    for back in 1..=len.min(3) {
        let c = b[len - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte; keep looking for the lead byte
        }
        let need = match c {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if need > back { len - back } else { len };
    }
    len
}

/// Turns captured bytes into text of at most `cap` bytes (lossy UTF-8) plus, when anything
/// was dropped, a marker line. Returns (text, bytes dropped).
pub(crate) fn render(c: Captured, cap: usize) -> (String, u64) {
    let mut kept = c.kept;
    if c.total > kept.len() as u64 {
        let keep = without_incomplete_tail(&kept);
        kept.truncate(keep);
    }
    let mut text = String::with_capacity(kept.len().min(cap) + 64);
    let mut used: u64 = 0;
    'outer: for chunk in kept.utf8_chunks() {
        let valid = chunk.valid();
        if text.len() + valid.len() > cap {
            let mut n = cap - text.len();
            while !valid.is_char_boundary(n) {
                n -= 1;
            }
            text.push_str(&valid[..n]);
            used += n as u64;
            break 'outer;
        }
        text.push_str(valid);
        used += valid.len() as u64;
        let invalid = chunk.invalid();
        if !invalid.is_empty() {
            if text.len() + char::REPLACEMENT_CHARACTER.len_utf8() > cap {
                break 'outer;
            }
            text.push(char::REPLACEMENT_CHARACTER);
            used += invalid.len() as u64;
        }
    }
    let dropped = c.total - used;
    if dropped > 0 {
        text.push_str(&format!(
            "\n[silica-cron: output truncated, {dropped} bytes dropped]\n"
        ));
    }
    (text, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap_of(bytes: &[u8], cap: usize) -> (String, u64) {
        render(
            Captured {
                kept: bytes[..bytes.len().min(cap)].to_vec(),
                total: bytes.len() as u64,
            },
            cap,
        )
    }

    #[test]
    fn untouched_when_under_cap() {
        assert_eq!(cap_of(b"hello\n", 100), ("hello\n".to_string(), 0));
    }

    #[test]
    fn cut_is_marked() {
        let (t, d) = cap_of(b"0123456789", 4);
        assert_eq!(d, 6);
        assert_eq!(
            t,
            "0123\n[silica-cron: output truncated, 6 bytes dropped]\n"
        );
    }

    #[test]
    fn cut_inside_a_character_drops_the_partial_character() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        let (t, d) = cap_of(s, 5); // "aé" + 2 bytes of '€'
        assert!(t.starts_with("aé\n"), "{t:?}");
        assert_eq!(d, 7);
    }

    #[test]
    fn invalid_bytes_never_exceed_cap() {
        let junk = vec![0xFFu8; 100];
        let (t, d) = cap_of(&junk, 10);
        let body = t.split("\n[silica-cron").next().unwrap();
        assert!(body.len() <= 10);
        assert_eq!(d, 100 - 3);
    }

    #[test]
    fn incomplete_tail_detection() {
        assert_eq!(without_incomplete_tail(b"abc"), 3);
        assert_eq!(without_incomplete_tail(&[b'a', 0xE2, 0x82]), 1);
        assert_eq!(without_incomplete_tail(&[b'a', 0xE2, 0x82, 0xAC]), 4);
        assert_eq!(without_incomplete_tail(&[0xF0, 0x9F, 0x98]), 0);
    }
}
