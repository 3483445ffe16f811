//! Conformance against `tests/data/public.json` (see `tests/data/README.md`): every entry.

use std::collections::BTreeMap;

use schedule::{
    jiff::{Timestamp, ZonedDateTime},
    time_zone, Schedule,
};
use serde_json::Value;

fn rfc3339(z: &ZonedDateTime) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Checks one entry; `Err` describes the mismatch.
fn check(entry: &Value) -> Result<(), String> {
    let expr = entry["expr"].as_str().ok_or("entry without expr")?;
    let parsed = Schedule::parse(expr);
    if entry["error"].as_bool() == Some(true) {
        return match parsed {
            Err(_) => Ok(()),
            Ok(s) => Err(format!(
                "accepted, expected an error ({}); never_reason={:?}",
                entry["reason"],
                s.never_reason()
            )),
        };
    }
    let s = parsed.map_err(|e| format!("rejected: {e}"))?;
    let tz_name = entry["tz"].as_str().ok_or("entry without tz")?;
    let tz = time_zone(tz_name).map_err(|e| format!("zone {tz_name}: {e}"))?;
    let start: Timestamp = entry["start"]
        .as_str()
        .ok_or("entry without start")?
        .parse()
        .map_err(|e| format!("bad start: {e}"))?;
    let expect: Vec<&str> = entry["expect"]
        .as_array()
        .ok_or("entry without expect")?
        .iter()
        .map(|v| v.as_str().unwrap_or_default())
        .collect();
    if entry["never"].as_bool() == Some(true) {
        if s.never_reason().is_none() {
            return Err("expected a never_reason, got none".into());
        }
        if let Some(z) = s.next_after(start, &tz) {
            return Err(format!("never expression produced {}", rfc3339(&z)));
        }
        return Ok(());
    }
    if let Some(r) = s.never_reason() {
        return Err(format!("unexpected never_reason: {r}"));
    }
    let got: Vec<ZonedDateTime> = s.iter_after(start, &tz).take(expect.len()).collect();
    let got_s: Vec<String> = got.iter().map(rfc3339).collect();
    for (i, want) in expect.iter().enumerate() {
        let want_ts: Timestamp = want
            .parse()
            .map_err(|e| format!("bad expect {want}: {e}"))?;
        let Some(g) = got.get(i) else {
            return Err(format!("expected {expect:?}, got only {got_s:?}"));
        };
        // Same instant and same UTC offset (the string carries the offset).
        if g.timestamp() != want_ts || got_s[i] != *want {
            return Err(format!("#{i}: expected {expect:?}, got {got_s:?}"));
        }
    }
    Ok(())
}

#[test]
fn public_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/public.json");
    let text = std::fs::read_to_string(path).expect("read public.json");
    let doc: Value = serde_json::from_str(&text).expect("parse public.json");
    let entries = doc["entries"].as_array().expect("entries array");
    assert!(!entries.is_empty());

    let mut per_category: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut per_expr: BTreeMap<&str, bool> = BTreeMap::new();
    let mut failures = Vec::new();
    for entry in entries {
        let category = entry["category"].as_str().unwrap_or("?").to_string();
        let expr = entry["expr"].as_str().unwrap_or("?");
        let result = check(entry);
        let slot = per_category.entry(category.clone()).or_default();
        let ok = result.is_ok();
        if ok {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
        *per_expr.entry(expr).or_insert(true) &= ok;
        if let Err(why) = result {
            failures.push(format!(
                "[{category}] {expr:?} tz={} start={}: {why}",
                entry["tz"].as_str().unwrap_or("-"),
                entry["start"].as_str().unwrap_or("-"),
            ));
        }
    }
    println!("conformance (public.json): category passed/failed");
    for (cat, (pass, fail)) in &per_category {
        println!("  {cat:<12} {pass:>5} / {fail}");
    }
    let exprs_ok = per_expr.values().filter(|ok| **ok).count();
    println!(
        "  entries: {}/{} passed; expressions fully passing: {exprs_ok}/{}",
        entries.len() - failures.len(),
        entries.len(),
        per_expr.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} entries failed; first failures:\n{}",
        failures.len(),
        entries.len(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
