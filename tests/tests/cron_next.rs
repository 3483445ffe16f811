//! `silica-cron cron next` through the real binary, against every public conformance vector
//! (the evaluator itself is tested in schedule/; this checks the command: arguments, output
//! format with offsets, exit codes, errors on stderr).

use silica_cron_tests::{root, Env};

#[test]
fn every_public_vector_through_the_cli() {
    let text = std::fs::read_to_string(root().join("schedule/tests/data/public.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let env = Env::new();
    let entries = doc["entries"].as_array().unwrap();
    let mut checked = 0;
    for e in entries {
        let expr = e["expr"].as_str().unwrap();
        if e["error"].as_bool() == Some(true) {
            let out = env.cli(&["cron", "next", expr]);
            out.code(1).stderr_has("invalid cron expression");
            assert!(out.stdout.is_empty(), "{expr:?}: {out}");
        } else if e["never"].as_bool() == Some(true) {
            let out = env.cli(&["cron", "next", expr, "--tz", e["tz"].as_str().unwrap()]);
            out.code(1).stderr_has("can never fire");
            assert!(out.stdout.is_empty(), "{expr:?}: {out}");
        } else {
            let expect: Vec<&str> = e["expect"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let n = expect.len().to_string();
            let out = env.cli(&[
                "cron",
                "next",
                expr,
                "-n",
                &n,
                "--from",
                e["start"].as_str().unwrap(),
                "--tz",
                e["tz"].as_str().unwrap(),
            ]);
            assert_eq!(
                out.ok().lines(),
                expect,
                "{expr:?} from {} in {}",
                e["start"],
                e["tz"]
            );
        }
        checked += 1;
    }
    assert_eq!(checked, entries.len());
    assert!(checked > 1000, "the vectors went missing");
}

#[test]
fn bad_arguments_are_named() {
    let env = Env::new();
    env.cli(&["cron", "next", "@daily", "--tz", "Mars/Olympus"])
        .code(1)
        .stderr_has("unknown time zone \"Mars/Olympus\"");
    env.cli(&["cron", "next", "@daily", "--from", "yesterday"])
        .code(1)
        .stderr_has("--from \"yesterday\" is not an RFC 3339 instant");
    env.cli(&["cron", "next"]).code(2);
    // Works without a daemon and without a database.
    let out = env.cli(&[
        "cron",
        "next",
        "0 12 * * *",
        "-n",
        "2",
        "--json",
        "--tz",
        "UTC",
        "--from",
        "2026-01-01T00:00:00Z",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!(["2026-01-01T12:00:00+00:00", "2026-01-02T12:00:00+00:00"])
    );
    assert!(!env.db().exists());
}
