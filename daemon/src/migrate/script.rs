//! Revision files: where they come from (built in, or a directory) and how they are read.
//!
//! A revision file is plain SQL. Its leading comment block is the docstring, as alembic's module
//! docstring: the first line is the message, and `Revision ID:`, `Revises:` and `Create Date:`
//! lines carry the graph. `-- migrate:upgrade` and `-- migrate:downgrade` start the two sections.

use std::path::{Path, PathBuf};

use super::sqlsplit::{self, Statement};

include!(concat!(env!("OUT_DIR"), "/embedded_migrations.rs"));

#[derive(Debug, Clone)]
pub struct Revision {
    pub id: String,
    pub parents: Vec<String>,
    pub message: String,
    pub create_date: String,
    /// The header comment, without the `-- ` prefixes.
    pub doc: Vec<String>,
    /// Shown to users: an absolute path, or `<built-in>/versions/NAME` for embedded files.
    pub path: String,
    pub upgrade: Vec<Statement>,
    pub downgrade: Vec<Statement>,
    /// SHA-256 of the file with line endings and trailing whitespace normalised, so that only
    /// edits that change content count as changes.
    pub checksum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: String,
        line: usize,
        message: String,
    },
    #[error("cannot read migrations directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read revision file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where revision files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    Dir(PathBuf),
}

impl Source {
    pub fn load(&self) -> Result<Vec<Revision>, ScriptError> {
        match self {
            Source::BuiltIn => EMBEDDED
                .iter()
                .map(|(name, text)| parse(&format!("<built-in>/versions/{name}"), text))
                .collect(),
            Source::Dir(dir) => load_dir(dir),
        }
    }

    /// The directory new revision files go to, if any.
    pub fn versions_dir(&self) -> Option<PathBuf> {
        match self {
            Source::BuiltIn => None,
            Source::Dir(d) if d.join("versions").is_dir() => Some(d.join("versions")),
            Source::Dir(d) => Some(d.clone()),
        }
    }

    /// The declared schema: (where it is, its text).
    pub fn schema(&self) -> Result<(String, String), ScriptError> {
        match self {
            Source::BuiltIn => Ok(("<built-in>/schema.sql".into(), EMBEDDED_SCHEMA.to_string())),
            Source::Dir(d) => {
                // DIR/schema.sql beside DIR/versions, or beside DIR when DIR is the versions folder.
                let candidates = [
                    d.join("schema.sql"),
                    d.parent().map(|p| p.join("schema.sql")).unwrap_or_default(),
                ];
                let path =
                    candidates
                        .iter()
                        .find(|p| p.is_file())
                        .ok_or_else(|| ScriptError::File {
                            path: d.join("schema.sql"),
                            source: std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                "no schema.sql (the declared schema) here",
                            ),
                        })?;
                let text = std::fs::read_to_string(path).map_err(|source| ScriptError::File {
                    path: path.clone(),
                    source,
                })?;
                Ok((path.display().to_string(), text))
            }
        }
    }
}

/// Reads `DIR/versions/*.sql` when DIR has a `versions` folder, else `DIR/*.sql`.
fn load_dir(dir: &Path) -> Result<Vec<Revision>, ScriptError> {
    let versions = dir.join("versions");
    let dir = if versions.is_dir() {
        versions
    } else {
        dir.to_owned()
    };
    let entries = std::fs::read_dir(&dir).map_err(|source| ScriptError::Dir {
        path: dir.clone(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ScriptError::Dir {
            path: dir.clone(),
            source,
        })?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "sql") && p.is_file() {
            paths.push(p);
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|source| ScriptError::File {
                path: p.clone(),
                source,
            })?;
            parse(&p.display().to_string(), &text)
        })
        .collect()
}

pub fn is_revision_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn parse(path: &str, text: &str) -> Result<Revision, ScriptError> {
    let err = |line: usize, message: String| ScriptError::Malformed {
        path: path.to_owned(),
        line,
        message,
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut doc = Vec::new();
    let mut idx = 0;
    while idx < lines.len() && lines[idx].trim_start().starts_with("--") && !is_marker(lines[idx]) {
        let l = lines[idx].trim_start().trim_start_matches("--");
        doc.push(l.strip_prefix(' ').unwrap_or(l).trim_end().to_string());
        idx += 1;
    }
    while doc.last().is_some_and(|l| l.is_empty()) {
        doc.pop();
    }
    let message = doc.first().cloned().unwrap_or_default();
    if message.is_empty() || message.contains(':') && field(&message).is_some() {
        return Err(err(
            1,
            "the file must start with a comment line holding the revision's message".into(),
        ));
    }
    let mut id = None;
    let mut parents = None;
    let mut create_date = String::new();
    for (n, l) in doc.iter().enumerate() {
        match field(l) {
            Some(("Revision ID", v)) => {
                if !is_revision_id(v) {
                    return Err(err(
                        n + 1,
                        format!("revision id {v:?} is not 12 lowercase hex digits"),
                    ));
                }
                id = Some(v.to_string());
            }
            Some(("Revises", v)) => {
                let ps: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(bad) = ps.iter().find(|p| !is_revision_id(p)) {
                    return Err(err(
                        n + 1,
                        format!("parent revision {bad:?} is not 12 lowercase hex digits"),
                    ));
                }
                parents = Some(ps);
            }
            Some(("Create Date", v)) => create_date = v.to_string(),
            _ => {}
        }
    }
    let id = id.ok_or_else(|| {
        err(
            1,
            "no \"-- Revision ID: <12 hex digits>\" line in the header".into(),
        )
    })?;
    let parents = parents.ok_or_else(|| {
        err(
            1,
            "no \"-- Revises: <parent ids, or empty for a base>\" line in the header".into(),
        )
    })?;
    if parents.contains(&id) {
        return Err(err(1, format!("revision {id} names itself as its parent")));
    }

    // Sections.
    let mut up: Option<(usize, usize)> = None; // (first line index of body, end)
    let mut down: Option<(usize, usize)> = None;
    let mut current: Option<char> = None;
    for (n, l) in lines.iter().enumerate().skip(idx) {
        if let Some(kind) = marker(l) {
            let slot = match kind {
                "upgrade" => &mut up,
                "downgrade" => &mut down,
                other => return Err(err(n + 1, format!("unknown section marker \"-- migrate:{other}\" (expected upgrade or downgrade)"))),
            };
            if slot.is_some() {
                return Err(err(n + 1, format!("second \"-- migrate:{kind}\" section")));
            }
            *slot = Some((n + 1, lines.len()));
            if let (Some('u'), Some(u)) = (current, up.as_mut()) {
                u.1 = n;
            }
            if let (Some('d'), Some(d)) = (current, down.as_mut()) {
                d.1 = n;
            }
            current = kind.chars().next();
        } else if current.is_none() && !l.trim().is_empty() && !l.trim_start().starts_with("--") {
            return Err(err(
                n + 1,
                "SQL before the \"-- migrate:upgrade\" marker".into(),
            ));
        }
    }
    let (up_start, up_end) = up.ok_or_else(|| {
        err(
            lines.len().max(1),
            "no \"-- migrate:upgrade\" section".into(),
        )
    })?;
    let (down_start, down_end) = down.ok_or_else(|| {
        err(
            lines.len().max(1),
            "no \"-- migrate:downgrade\" section".into(),
        )
    })?;
    let section = |s: usize, e: usize| -> Result<Vec<Statement>, ScriptError> {
        let body = lines[s..e].join("\n");
        sqlsplit::split(&body, s + 1).map_err(|e| err(e.line, e.message))
    };
    Ok(Revision {
        checksum: checksum(text),
        upgrade: section(up_start, up_end)?,
        downgrade: section(down_start, down_end)?,
        id,
        parents,
        message,
        create_date,
        doc,
        path: path.to_owned(),
    })
}

pub fn checksum(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let digest = Sha256::digest(lines.join("\n").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn field(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(':')?;
    matches!(k, "Revision ID" | "Revises" | "Create Date").then(|| (k, v.trim()))
}

fn marker(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("--")?.trim_start();
    rest.strip_prefix("migrate:").map(str::trim)
}

fn is_marker(line: &str) -> bool {
    marker(line).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "-- add thing\n--\n-- Revision ID: aaaaaaaaaaaa\n-- Revises: bbbbbbbbbbbb, cccccccccccc\n-- Create Date: 2026-01-01 00:00:00\n\n-- migrate:upgrade\nCREATE TABLE t (x);\nCREATE INDEX i ON t (x);\n\n-- migrate:downgrade\nDROP TABLE t;\n";

    #[test]
    fn parses_header_and_sections() {
        let r = parse("f.sql", GOOD).unwrap();
        assert_eq!(r.id, "aaaaaaaaaaaa");
        assert_eq!(r.parents, vec!["bbbbbbbbbbbb", "cccccccccccc"]);
        assert_eq!(r.message, "add thing");
        assert_eq!(r.doc[0], "add thing");
        assert_eq!(r.doc[1], "");
        assert_eq!(r.upgrade.len(), 2);
        assert_eq!(r.upgrade[0].line, 8);
        assert_eq!(r.upgrade[1].line, 9);
        assert_eq!(r.downgrade[0].line, 12);
    }

    #[test]
    fn checksums_ignore_line_endings_and_trailing_space() {
        let a = parse("a", GOOD).unwrap().checksum;
        let crlf = GOOD.replace('\n', "  \r\n") + "\n\n";
        assert_eq!(parse("b", &crlf).unwrap().checksum, a);
        let edited = GOOD.replace("CREATE TABLE t (x)", "CREATE TABLE t (y)");
        assert_ne!(parse("c", &edited).unwrap().checksum, a);
    }

    #[test]
    fn built_in_revisions_parse() {
        let revs = Source::BuiltIn.load().unwrap();
        let ids: Vec<_> = revs.iter().map(|r| r.id.as_str()).collect();
        // The original chain comes first; this project's revisions follow it.
        assert_eq!(ids[..3], ["5d8b746712b6", "fc0bfa77ff5a", "34065a4cc718"]);
        assert!(revs[0].parents.is_empty());
        assert_eq!(revs[2].message, "add priority field to prompts");
        assert!(revs[1].upgrade.is_empty());
    }

    #[test]
    fn malformed_files_name_file_and_line() {
        let bad_id = GOOD.replace("aaaaaaaaaaaa", "AAAA");
        let e = parse("x.sql", &bad_id).unwrap_err().to_string();
        assert!(e.starts_with("x.sql:3:"), "{e}");
        let no_down = GOOD.replace("-- migrate:downgrade", "");
        assert!(parse("x.sql", &no_down)
            .unwrap_err()
            .to_string()
            .contains("no \"-- migrate:downgrade\""));
        let quote = GOOD.replace("CREATE INDEX i ON t (x);", "CREATE INDEX 'i ON t (x);");
        let e = parse("x.sql", &quote).unwrap_err().to_string();
        assert!(
            e.starts_with("x.sql:9:") && e.contains("unterminated"),
            "{e}"
        );
        let stray = GOOD.replace("\n\n-- migrate:upgrade", "\nSELECT 1;\n-- migrate:upgrade");
        assert!(parse("x.sql", &stray)
            .unwrap_err()
            .to_string()
            .contains("before the"));
        let no_msg = GOOD.replace("-- add thing\n", "");
        assert!(parse("x.sql", &no_msg).is_err());
    }
}
