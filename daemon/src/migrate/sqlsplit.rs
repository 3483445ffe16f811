//! Splits a section of a revision file into statements, remembering the line each starts on,
//! so a failing statement can be named by file and line and offline SQL can be printed.
//!
//! Knows SQLite's quoting ('', "", ``, []), comments, and trigger bodies (whose inner `;` do not
//! end the statement until the matching END).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement text without its terminating `;`.
    pub sql: String,
    /// 1-based line in the file where the statement starts.
    pub line: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct SplitError {
    pub line: usize,
    pub message: String,
}

/// `first_line` is the file line number of `text`'s first line.
pub fn split(text: &str, first_line: usize) -> Result<Vec<Statement>, SplitError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut line = first_line;
    let mut i = 0;
    // Start of the current statement's first significant character, and its line.
    let mut start: Option<(usize, usize)> = None;
    let mut words: Vec<String> = Vec::new(); // first words, to detect CREATE TRIGGER
    let mut depth: i32 = 0; // BEGIN/CASE … END nesting inside a trigger
    let mut last_word = String::new();

    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let open_line = line;
                i += 2;
                loop {
                    if i + 1 >= bytes.len() {
                        return Err(SplitError {
                            line: open_line,
                            message: "unterminated /* comment".into(),
                        });
                    }
                    if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                        i += 2;
                        break;
                    }
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            b'\'' | b'"' | b'`' | b'[' => {
                start.get_or_insert((i, line));
                let close = if c == b'[' { b']' } else { c };
                let open_line = line;
                i += 1;
                loop {
                    if i >= bytes.len() {
                        return Err(SplitError {
                            line: open_line,
                            message: format!("unterminated {} quote", c as char),
                        });
                    }
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    if bytes[i] == close {
                        // A doubled quote is an escaped quote, except for brackets.
                        if close != b']' && bytes.get(i + 1) == Some(&close) {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                last_word.clear();
            }
            b';' => {
                let is_trigger = is_create_trigger(&words);
                if !is_trigger || depth <= 0 {
                    if let Some((s, l)) = start.take() {
                        out.push(Statement {
                            sql: text[s..i].trim_end().to_string(),
                            line: l,
                        });
                    }
                    words.clear();
                    depth = 0;
                }
                last_word.clear();
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                start.get_or_insert((i, line));
                let s = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = text[s..i].to_ascii_uppercase();
                if words.len() < 4 {
                    words.push(word.clone());
                }
                if is_create_trigger(&words) {
                    match word.as_str() {
                        "BEGIN" | "CASE" => depth += 1,
                        "END" => depth -= 1,
                        _ => {}
                    }
                }
                last_word = word;
            }
            _ => {
                start.get_or_insert((i, line));
                i += if c < 0x80 { 1 } else { utf8_len(c) };
            }
        }
    }
    let _ = last_word;
    if let Some((s, l)) = start {
        let rest = text[s..].trim_end();
        if !rest.is_empty() {
            out.push(Statement {
                sql: rest.to_string(),
                line: l,
            });
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn is_create_trigger(words: &[String]) -> bool {
    matches!(words, [c, t, ..] if c == "CREATE" && t == "TRIGGER")
        || matches!(words, [c, tmp, t, ..] if c == "CREATE" && (tmp == "TEMP" || tmp == "TEMPORARY") && t == "TRIGGER")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(text: &str) -> Vec<(String, usize)> {
        split(text, 1)
            .unwrap()
            .into_iter()
            .map(|s| (s.sql, s.line))
            .collect()
    }

    #[test]
    fn plain_statements_and_lines() {
        let got = sqls("-- c\nCREATE TABLE a (x);\n\nINSERT INTO a VALUES (';');\nDROP TABLE a");
        assert_eq!(
            got,
            vec![
                ("CREATE TABLE a (x)".into(), 2),
                ("INSERT INTO a VALUES (';')".into(), 4),
                ("DROP TABLE a".into(), 5)
            ]
        );
    }

    #[test]
    fn quotes_and_comments_hide_semicolons() {
        let got = sqls("SELECT 'it''s;', \"a;b\", [c;d], `e;f` /* ; */ -- ;\n;");
        assert_eq!(got.len(), 1);
        assert!(got[0].0.starts_with("SELECT 'it''s;'"));
    }

    #[test]
    fn trigger_bodies_stay_whole() {
        let text = "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = CASE WHEN x THEN 1 ELSE 2 END;\n  DELETE FROM b;\nEND;\nSELECT 1;";
        let got = sqls(text);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].0.ends_with("END"));
        assert_eq!(got[1], ("SELECT 1".into(), 5));
    }

    #[test]
    fn comment_only_section_is_empty() {
        assert!(sqls("-- nothing\n\n/* here */\n").is_empty());
    }

    #[test]
    fn unterminated_quote_names_its_line() {
        let e = split("SELECT 1;\nSELECT 'oops;\n", 10).unwrap_err();
        assert_eq!(e.line, 11);
    }
}
