//! Strict Vixie/cronie expression parser.

use crate::{Field, ParseError, Schedule};

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DOW_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Spec {
    field: Field,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of the first name (`jan` = 1, `sun` = 0).
    name_base: u32,
}

const SPECS: [Spec; 5] = [
    Spec {
        field: Field::Minute,
        min: 0,
        max: 59,
        names: &[],
        name_base: 0,
    },
    Spec {
        field: Field::Hour,
        min: 0,
        max: 23,
        names: &[],
        name_base: 0,
    },
    Spec {
        field: Field::DayOfMonth,
        min: 1,
        max: 31,
        names: &[],
        name_base: 0,
    },
    Spec {
        field: Field::Month,
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        name_base: 1,
    },
    Spec {
        field: Field::DayOfWeek,
        min: 0,
        max: 7,
        names: &DOW_NAMES,
        name_base: 0,
    },
];

/// One parsed field: the selected values as a bitset (bit n = value n) and the first
/// reversed range met, if any (it selects nothing; an empty field makes the schedule "never").
pub(crate) struct ParsedField {
    pub bits: u64,
    pub reversed: Option<String>,
}

fn err(field: Option<Field>, token: &str, message: String) -> ParseError {
    ParseError {
        field,
        token: token.to_string(),
        message,
    }
}

fn field_err(spec: &Spec, token: &str, detail: String) -> ParseError {
    err(
        Some(spec.field),
        token,
        format!("{}: {}", spec.field.name(), detail),
    )
}

/// Parses `text` as a decimal number (digits only, leading zeros allowed).
fn parse_digits(text: &str) -> Option<Result<u64, ()>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().map_err(|_| ()))
}

fn parse_value(spec: &Spec, value: &str, elem: &str) -> Result<u32, ParseError> {
    if value.is_empty() {
        return Err(field_err(spec, elem, format!("missing number in '{elem}'")));
    }
    let in_elem = if value == elem {
        String::new()
    } else {
        format!(" in '{elem}'")
    };
    match parse_digits(value) {
        Some(Ok(n)) if (spec.min as u64..=spec.max as u64).contains(&n) => return Ok(n as u32),
        Some(_) => {
            return Err(field_err(
                spec,
                value,
                format!("{value} is out of range {}-{}{in_elem}", spec.min, spec.max),
            ))
        }
        None => {}
    }
    if !spec.names.is_empty() && value.bytes().all(|b| b.is_ascii_alphabetic()) {
        if let Some(i) = spec
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(value))
        {
            return Ok(spec.name_base + i as u32);
        }
        let (first, last) = (spec.names[0], spec.names[spec.names.len() - 1]);
        return Err(field_err(
            spec,
            value,
            format!("bad value '{value}'{in_elem} (names are 3 letters, {first}-{last})"),
        ));
    }
    let hint = if spec.names.is_empty() {
        "numbers"
    } else {
        "numbers or 3-letter names"
    };
    Err(field_err(
        spec,
        value,
        format!("bad value '{value}'{in_elem} (only {hint}, '*', ',', '-' and '/' are allowed)"),
    ))
}

fn parse_step(spec: &Spec, step: &str, elem: &str) -> Result<u32, ParseError> {
    match parse_digits(step) {
        Some(Ok(0)) => Err(field_err(
            spec,
            elem,
            format!("step 0 in '{elem}' must be at least 1"),
        )),
        Some(Ok(n)) if n <= u32::MAX as u64 => Ok(n as u32),
        Some(_) => Err(field_err(
            spec,
            elem,
            format!("step {step} in '{elem}' is out of range"),
        )),
        None => Err(field_err(
            spec,
            elem,
            format!("bad step '{step}' in '{elem}' (a positive number is expected)"),
        )),
    }
}

fn parse_field(spec: &Spec, text: &str) -> Result<ParsedField, ParseError> {
    let mut bits = 0u64;
    let mut reversed = None;
    for elem in text.split(',') {
        if elem.is_empty() {
            return Err(field_err(
                spec,
                text,
                format!("empty list element in '{text}'"),
            ));
        }
        let (range, step) = match elem.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (elem, None),
        };
        if step.is_some() && range != "*" && !range.contains('-') {
            return Err(field_err(
                spec,
                elem,
                format!("step needs '*' or a range before '/': '{elem}'"),
            ));
        }
        let step = match step {
            Some(s) => parse_step(spec, s, elem)?,
            None => 1,
        };
        let (lo, mut hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (parse_value(spec, a, elem)?, parse_value(spec, b, elem)?)
        } else {
            let v = parse_value(spec, range, elem)?;
            (v, v)
        };
        // Day-of-week ranges may wrap through Sunday only by ending at 0 (`5-0` = `5-7`).
        if spec.field == Field::DayOfWeek && hi == 0 && lo > 0 {
            hi = 7;
        }
        if lo > hi {
            reversed.get_or_insert_with(|| elem.to_string());
            continue;
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1u64 << v;
            v = v.saturating_add(step);
        }
    }
    Ok(ParsedField { bits, reversed })
}

/// The five fields of a schedule as bitsets plus the `*`-prefix flags.
pub(crate) struct Fields {
    pub minutes: u64,
    pub hours: u32,
    pub dom: u32,
    pub months: u16,
    /// Bits 0-6, Sunday = 0 (7 is folded into 0).
    pub dow: u8,
    pub minute_star: bool,
    pub hour_star: bool,
    pub dom_star: bool,
    pub dow_star: bool,
    /// Texts of the five fields (for reasons).
    pub texts: [String; 5],
    /// First reversed range per field.
    pub reversed: [Option<String>; 5],
}

fn macro_fields(name: &str) -> Option<&'static str> {
    Some(match name {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

fn is_sep(c: char) -> bool {
    c == ' ' || c == '\t'
}

pub(crate) fn parse(expr: &str) -> Result<Schedule, ParseError> {
    let trimmed = expr.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.starts_with('@') {
        if trimmed == "@reboot" {
            return Err(err(
                None,
                trimmed,
                "@reboot is not supported: silica-cron only runs jobs at scheduled times".into(),
            ));
        }
        // Macros are case-sensitive and stand alone, as in cronie.
        let Some(fields) = macro_fields(trimmed) else {
            return Err(err(
                None,
                trimmed,
                format!(
                    "unknown macro '{trimmed}' (supported: @yearly @annually @monthly @weekly \
                     @daily @midnight @hourly)"
                ),
            ));
        };
        let mut s = parse_fields(fields)?;
        s.expr = trimmed.to_string();
        return Ok(s);
    }
    parse_fields(trimmed)
}

fn parse_fields(trimmed: &str) -> Result<Schedule, ParseError> {
    let parts: Vec<&str> = trimmed.split(is_sep).filter(|p| !p.is_empty()).collect();
    if parts.len() != 5 {
        let hint = match parts.len() {
            6 => " (seconds and years are not supported)",
            _ => " (minute hour day-of-month month day-of-week)",
        };
        return Err(err(
            None,
            trimmed,
            format!("expected 5 fields, got {}{hint}", parts.len()),
        ));
    }
    let mut bits = [0u64; 5];
    let mut reversed: [Option<String>; 5] = Default::default();
    for (i, (spec, text)) in SPECS.iter().zip(&parts).enumerate() {
        let f = parse_field(spec, text)?;
        bits[i] = f.bits;
        reversed[i] = f.reversed;
    }
    let dow = bits[4];
    let dow = ((dow | (dow >> 7)) & 0x7f) as u8;
    let fields = Fields {
        minutes: bits[0],
        hours: bits[1] as u32,
        dom: bits[2] as u32,
        months: bits[3] as u16,
        dow,
        minute_star: parts[0].starts_with('*'),
        hour_star: parts[1].starts_with('*'),
        dom_star: parts[2].starts_with('*'),
        dow_star: parts[4].starts_with('*'),
        texts: std::array::from_fn(|i| parts[i].to_string()),
        reversed,
    };
    Ok(Schedule::from_fields(parts.join(" "), fields))
}
