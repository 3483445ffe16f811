//! Scenario 10: fuzzing the frame decoder (`proto::frame`, `proto::codec`) and the cron parser
//! (`schedule`) with proptest: random and mutated inputs never panic, and what is accepted
//! keeps its invariants. The corpus in `tests/faults/corpus/` (hand-picked frames and
//! expressions) is replayed first on every run; proptest records any failing case it finds in
//! `tests/faults/corpus/proptest-regressions.txt`, replayed before new cases (keep it in git).
//! 2,000 cases per property, 50,000 with `SILICA_CRON_FAULTS_LONG=1`.

use std::io::{Cursor, Read};
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use proto::frame::{self, FrameError, MAX_FRAME};
use proto::message::{ClientMsg, Request, ServerMsg};
use schedule::jiff::{tz::TimeZone, Timestamp};
use schedule::{time_zone, Schedule};
use silica_cron_tests::report::Scenario;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("faults/corpus")
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: crate::common::iterations(2_000, 50_000),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/faults/corpus/proptest-regressions.txt"
        )))),
        ..Config::default()
    })
}

/// A reader that hands out at most `chunk` bytes per call, as a socket does.
struct Trickle<'a> {
    inner: Cursor<&'a [u8]>,
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk.max(1));
        self.inner.read(&mut buf[..n])
    }
}

/// Everything the daemon and the client do with bytes from the other side; must not panic,
/// and an accepted frame must be what its header announced.
fn check_frame_bytes(bytes: &[u8], chunk: usize) -> Result<(), TestCaseError> {
    let _ = frame::parse_hello(bytes);
    let _ = frame::decode::<ClientMsg>(bytes);
    let _ = frame::decode::<ServerMsg>(bytes);
    let mut r = Trickle {
        inner: Cursor::new(bytes),
        chunk,
    };
    match frame::read_payload(&mut r) {
        Ok(payload) => {
            let announced = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            prop_assert_eq!(payload.len(), announced);
            prop_assert!(!payload.is_empty() && payload.len() <= MAX_FRAME);
            prop_assert_eq!(&payload[..], &bytes[4..4 + announced]);
            let _ = frame::decode::<ClientMsg>(&payload);
            let _ = frame::decode::<ServerMsg>(&payload);
            let _ = frame::parse_hello(&payload);
        }
        Err(FrameError::TooLarge(n)) => prop_assert!(n > MAX_FRAME as u64),
        Err(FrameError::Empty) => prop_assert_eq!(&bytes[..4], &[0u8; 4]),
        Err(FrameError::Closed) => prop_assert!(bytes.is_empty()),
        Err(FrameError::Truncated) => prop_assert!(!bytes.is_empty()),
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}

/// Valid frames the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    let mut v = vec![
        frame::hello(proto::PROTOCOL_VERSION),
        frame::encode(&ClientMsg::Request(Request::Status)).unwrap(),
        frame::encode(&ClientMsg::Request(Request::Reload)).unwrap(),
    ];
    for f in std::fs::read_dir(corpus().join("frames"))
        .unwrap()
        .flatten()
    {
        v.push(std::fs::read(f.path()).unwrap());
    }
    v
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Header(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<u32>().prop_map(Mutation::Header),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match m {
            Mutation::Flip(i, x) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[i % n] ^= x;
            }
            Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            Mutation::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Header(h) if bytes.len() >= 4 => {
                bytes[..4].copy_from_slice(&h.to_be_bytes());
            }
            _ => {}
        }
    }
    bytes
}

#[test]
fn frames_never_panic() {
    let mut sc = Scenario::start("10a", "fuzzing the frame decoder");
    let files: Vec<_> = std::fs::read_dir(corpus().join("frames"))
        .unwrap()
        .flatten()
        .collect();
    assert!(files.len() >= 5, "the frame corpus is missing");
    sc.tried(format!(
        "the {} corpus frames, read whole and a byte at a time",
        files.len()
    ));
    for f in &files {
        let bytes = std::fs::read(f.path()).unwrap();
        for chunk in [1, 3, usize::MAX] {
            check_frame_bytes(&bytes, chunk)
                .unwrap_or_else(|e| panic!("{}: {e}", f.path().display()));
        }
    }
    sc.iterations(files.len() as u64 * 3);

    let cases = u64::from(runner().config().cases);
    sc.tried(format!(
        "{cases} random byte strings (0-64 bytes, random read sizes)"
    ));
    runner()
        .run(
            &(prop::collection::vec(any::<u8>(), 0..64), 1usize..16),
            |(bytes, chunk)| check_frame_bytes(&bytes, chunk),
        )
        .unwrap();
    sc.tried(format!(
        "{cases} mutations (bit flips, truncation, insertion, a new header) of valid frames"
    ));
    let seeds = seeds();
    let n = seeds.len();
    runner()
        .run(
            &(0..n, prop::collection::vec(mutation(), 1..6), 1usize..16),
            |(seed, muts, chunk)| check_frame_bytes(&apply(seeds[seed].clone(), &muts), chunk),
        )
        .unwrap();
    sc.iterations(2 * cases);
    sc.held("no panic; every accepted frame is exactly what its header announced, at most 8 MiB; oversized, empty, cut-off frames are typed errors");
    sc.pass();
}

/// Tokens cron expressions are made of, plus some that they are not.
const TOKENS: &[&str] = &[
    "*",
    "/",
    ",",
    "-",
    " ",
    "  ",
    "\t",
    "0",
    "1",
    "2",
    "5",
    "7",
    "12",
    "15",
    "23",
    "24",
    "29",
    "30",
    "31",
    "32",
    "59",
    "60",
    "99",
    "4294967296",
    "jan",
    "feb",
    "dec",
    "sun",
    "mon",
    "sat",
    "SUN",
    "@hourly",
    "@daily",
    "@midnight",
    "@reboot",
    "@yearly",
    "@annually",
    "@weekly",
    "@",
    "L",
    "W",
    "#",
    "?",
    "H",
    "~",
    "é",
    "\u{0}",
    "\n",
];

/// Zones with DST gaps and repeats, one without, and UTC.
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

/// One field: a list of 1-3 elements with values in lo..=hi+1.
fn field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
    let n = move || lo..=hi + 1;
    let element = prop_oneof![
        3 => Just("*".to_string()),
        3 => n().prop_map(|a| a.to_string()),
        2 => (1..=hi).prop_map(|s| format!("*/{s}")),
        2 => (n(), n()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => (n(), n(), 1..=hi).prop_map(|(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
        1 => prop::sample::select(TOKENS).prop_map(str::to_string),
    ];
    prop::collection::vec(element, 1..4).prop_map(|v| v.join(","))
}

static ACCEPTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn check_cron(expr: &str, start: i64) -> Result<(), TestCaseError> {
    let Ok(s) = Schedule::parse(expr) else {
        return Ok(());
    };
    ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Its normal form (whitespace collapsed) parses again to itself.
    let again = Schedule::parse(s.as_str());
    prop_assert!(
        again.is_ok(),
        "{:?} -> {:?} does not parse",
        expr,
        s.as_str()
    );
    let again = again.unwrap();
    prop_assert_eq!(again.as_str(), s.as_str());
    if s.never_reason().is_some() {
        return Ok(());
    }
    let after = Timestamp::from_second(start).unwrap();
    for zone in ZONES {
        let tz: TimeZone = time_zone(zone).unwrap();
        let mut last = after;
        for t in s.iter_after(after, &tz).take(4) {
            prop_assert!(t.timestamp() > last, "{} not after {} in {}", t, last, zone);
            prop_assert_eq!(t.timestamp().as_second() % 60, 0);
            last = t.timestamp();
        }
    }
    Ok(())
}

#[test]
fn cron_parser_never_panics() {
    let mut sc = Scenario::start("10b", "fuzzing the cron parser and evaluator");
    let text = std::fs::read_to_string(corpus().join("cron.txt")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("# ") && !l.is_empty())
        .collect();
    assert!(lines.len() >= 20, "the cron corpus is missing");
    sc.tried(format!("the {} corpus expressions in 5 zones", lines.len()));
    // 2026-03-08 06:30 UTC: an hour before New York's DST gap.
    let dst_eve = 1_772_951_400;
    for l in &lines {
        check_cron(l, dst_eve).unwrap_or_else(|e| panic!("{l:?}: {e}"));
    }
    sc.iterations(lines.len() as u64);

    let cases = u64::from(runner().config().cases);
    sc.tried(format!(
        "{cases} generated 5-field expressions and {cases} arbitrary strings, each parsed and, if accepted, evaluated 4 times in 5 zones from an instant in 2000-2100"
    ));
    // Five fields of cron's own forms within (and one past) each field's bounds, so that most
    // parse and get evaluated; a stray token now and then.
    let tokens = (
        field(0, 59),
        field(0, 23),
        field(1, 31),
        field(1, 12),
        field(0, 7),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"));
    let before = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
    runner()
        .run(&(tokens, 946_684_800i64..4_102_444_800), |(e, t)| {
            check_cron(&e, t)
        })
        .unwrap();
    let accepted = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        accepted > cases / 10,
        "only {accepted} of {cases} generated expressions parsed: the generator is too wild"
    );
    runner()
        .run(
            &(any::<String>(), 946_684_800i64..4_102_444_800),
            |(e, t)| check_cron(&e, t),
        )
        .unwrap();
    sc.iterations(2 * cases);
    sc.held(format!("no panic; {accepted} of the generated expressions parsed and were evaluated; what parses has a normal form that parses to itself, and its fire instants are whole minutes, strictly increasing in every zone"));
    sc.pass();
}
