//! Frames: a 4-byte big-endian payload length, then the payload.
//!
//! The length is checked against [`MAX_FRAME`] before any buffer is allocated, so a client
//! claiming 4 GiB costs nothing. The first frame each way is the hello: a fixed 8-byte payload
//! (magic + protocol version) that stays readable across protocol versions, so a mismatch is
//! reported as "client X, daemon Y" instead of a decode error.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{self, CodecError};

/// Largest payload either side accepts.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
pub const HEADER_LEN: usize = 4;
const HELLO_MAGIC: [u8; 4] = *b"SLCR";
pub const HELLO_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(u64),
    #[error("empty frame")]
    Empty,
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("connection closed")]
    Closed,
    #[error("not a silica-cron peer (bad hello)")]
    BadHello,
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Checks a header and returns the payload length it announces.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as u64;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len as usize)
}

/// Header plus payload, ready to write in one call.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let payload = codec::to_bytes(msg)?;
    wrap(&payload)
}

fn wrap(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len() as u64));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(codec::from_bytes(payload)?)
}

/// The hello frame for `version`.
pub fn hello(version: u32) -> Vec<u8> {
    let mut payload = [0u8; HELLO_LEN];
    payload[..4].copy_from_slice(&HELLO_MAGIC);
    payload[4..].copy_from_slice(&version.to_be_bytes());
    wrap(&payload).expect("hello fits a frame")
}

/// The protocol version in a hello payload.
pub fn parse_hello(payload: &[u8]) -> Result<u32, FrameError> {
    if payload.len() != HELLO_LEN || payload[..4] != HELLO_MAGIC {
        return Err(FrameError::BadHello);
    }
    Ok(u32::from_be_bytes(
        payload[4..].try_into().expect("4 bytes"),
    ))
}

/// Reads one frame's payload from a blocking reader (the client's side).
pub fn read_payload<R: Read>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    read_full(r, &mut header, true)?;
    let len = payload_len(header)?;
    let mut payload = vec![0u8; len];
    read_full(r, &mut payload, false)?;
    Ok(payload)
}

pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    decode(&read_payload(r)?)
}

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Like `read_exact`, but tells a clean close before the first byte from a cut-off frame.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], at_boundary: bool) -> Result<(), FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 && at_boundary => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientMsg, Request};
    use std::io::Cursor;

    fn frame_of(bytes: &[u8]) -> Vec<u8> {
        let mut v = (bytes.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&ClientMsg::Request(Request::Status)).unwrap();
        let back: ClientMsg = read_frame(&mut Cursor::new(bytes)).unwrap();
        assert!(matches!(back, ClientMsg::Request(Request::Status)));
    }

    #[test]
    fn oversized_length_is_refused_before_reading_payload() {
        // A reader that would fail the test if the payload were read.
        struct HeaderOnly(Cursor<Vec<u8>>);
        impl Read for HeaderOnly {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                assert!(self.0.position() < 4, "payload must not be read");
                self.0.read(buf)
            }
        }
        let mut r = HeaderOnly(Cursor::new(u32::MAX.to_be_bytes().to_vec()));
        match read_payload(&mut r) {
            Err(FrameError::TooLarge(n)) => assert_eq!(n, u32::MAX as u64),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let just_over = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            payload_len(just_over),
            Err(FrameError::TooLarge(_))
        ));
        assert_eq!(
            payload_len((MAX_FRAME as u32).to_be_bytes()).unwrap(),
            MAX_FRAME
        );
    }

    #[test]
    fn empty_frame_is_refused() {
        assert!(matches!(
            read_payload(&mut Cursor::new(vec![0, 0, 0, 0])),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn clean_close_and_truncation_are_told_apart() {
        assert!(matches!(
            read_payload(&mut Cursor::new(vec![])),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_payload(&mut Cursor::new(vec![0, 0])),
            Err(FrameError::Truncated)
        ));
        let mut half = frame_of(&[1, 2, 3, 4, 5, 6]);
        half.truncate(7);
        assert!(matches!(
            read_payload(&mut Cursor::new(half)),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let r: Result<ClientMsg, _> = read_frame(&mut Cursor::new(frame_of(&[0xff; 16])));
        assert!(matches!(r, Err(FrameError::Codec(_))), "{r:?}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut payload = codec::to_bytes(&ClientMsg::Request(Request::Status)).unwrap();
        payload.push(0);
        let r: Result<ClientMsg, _> = decode(&payload);
        assert!(
            matches!(r, Err(FrameError::Codec(CodecError::Trailing(1)))),
            "{r:?}"
        );
    }

    #[test]
    fn hostile_inner_length_does_not_allocate() {
        // Request::Migrate carries strings; a varint length of u64::MAX inside must be refused.
        let mut payload = codec::to_bytes(&ClientMsg::Request(Request::Status)).unwrap();
        payload.truncate(1);
        payload.extend_from_slice(&[0xff; 9]);
        let r: Result<ClientMsg, _> = decode(&payload);
        assert!(r.is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic xorshift so the test is repeatable.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            let _ = decode::<ClientMsg>(&bytes);
            let _ = read_payload(&mut Cursor::new(bytes));
        }
    }

    #[test]
    fn hello_round_trip_and_mismatch_is_visible() {
        let f = hello(7);
        let payload = read_payload(&mut Cursor::new(f)).unwrap();
        assert_eq!(parse_hello(&payload).unwrap(), 7);
        assert!(matches!(
            parse_hello(b"HTTP/1.1"),
            Err(FrameError::BadHello)
        ));
        assert!(matches!(parse_hello(b"SLCR"), Err(FrameError::BadHello)));
    }
}
