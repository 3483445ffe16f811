//! Evaluation: wall-clock search over months/days/hours/minutes with bitsets, and the walk
//! over a time zone's offset segments with the DST gap/fold rules.
//!
//! "Wall seconds" are local civil seconds counted from 1970-01-01T00:00 wall time; within a
//! segment of constant UTC offset `off`, `instant = wall - off`.

use jiff::{tz::TimeZone, Timestamp};

use crate::Schedule;

/// A match of statically satisfiable fields always lies within one 400-year Gregorian cycle.
const MAX_MONTHS: u32 = 12 * 401;
/// Upper bound on offset segments walked for one `next` (about 2 transitions a year).
const MAX_SEGMENTS: u32 = 2000;
/// Forward jumps of this size or more are not caught up (cronie treats them as a clock
/// change, not DST; only date-line moves such as Pacific/Apia 2011 are that large).
const MAX_CATCH_UP_GAP: i64 = 3 * 3600;
/// jiff's civil range ends at year 9999.
const MAX_YEAR: i64 = 9999;

pub(crate) const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// 0 = Sunday.
pub(crate) fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn floor_minute(wall: i64) -> i64 {
    wall.div_euclid(60) * 60
}

fn ceil_minute(wall: i64) -> i64 {
    -floor_minute(-wall)
}

/// Whole seconds of `t`, rounded towards the past.
fn floor_second(t: Timestamp) -> i64 {
    t.as_second() - i64::from(t.subsec_nanosecond() < 0)
}

impl Schedule {
    /// Day-of-month bitset (bits 1..=31) of the days of `y-m` that match the day fields.
    #[inline]
    fn day_mask(&self, y: i64, m: u32) -> u32 {
        let dim = days_in_month(y, m);
        let valid = ((1u64 << (dim + 1)) - 2) as u32;
        let w1 = weekday(days_from_civil(y, m, 1)) as usize;
        let dow = self.dow_masks[w1];
        if self.dom_star || self.dow_star {
            self.dom & dow & valid
        } else {
            (self.dom | dow) & valid
        }
    }

    /// First wall time `>= from` (minute-aligned) whose fields match.
    pub(crate) fn next_wall(&self, from: i64) -> Option<i64> {
        let days = from.div_euclid(SECS_PER_DAY);
        let sod = from.rem_euclid(SECS_PER_DAY) as u32;
        let (mut y, mut mo, mut d) = civil_from_days(days);
        let (mut h, mut mi) = (sod / 3600, (sod % 3600) / 60);
        for _ in 0..MAX_MONTHS {
            if self.months & (1 << mo) != 0 {
                let mut days = self.day_mask(y, mo) & (!0u32 << d);
                while days != 0 {
                    let day = days.trailing_zeros();
                    if day != d {
                        (h, mi) = (0, 0);
                    }
                    let mut hours = self.hours & (!0u32 << h);
                    while hours != 0 {
                        let hour = hours.trailing_zeros();
                        if hour != h {
                            mi = 0;
                        }
                        let mins = self.minutes & (!0u64 << mi);
                        if mins != 0 {
                            let min = mins.trailing_zeros();
                            return Some(
                                days_from_civil(y, mo, day) * SECS_PER_DAY
                                    + i64::from(hour * 3600 + min * 60),
                            );
                        }
                        hours &= hours - 1;
                        mi = 0;
                    }
                    days &= days - 1;
                    (h, mi) = (0, 0);
                }
            }
            mo += 1;
            if mo > 12 {
                mo = 1;
                y += 1;
                if y > MAX_YEAR {
                    return None;
                }
            }
            (d, h, mi) = (1, 0, 0);
        }
        None
    }

    /// The core of `next_after`: the first fire instant strictly after `after`.
    pub(crate) fn next_instant(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        if self.never.is_some() {
            return None;
        }
        let mut t = after;
        let mut first = true;
        for _ in 0..MAX_SEGMENTS {
            let t_s = floor_second(t);
            let off = i64::from(tz.to_offset(t).seconds());
            let mut wall_min = if first {
                floor_minute(t_s + off) + 60
            } else {
                ceil_minute(t_s + off)
            };
            if self.fixed {
                // Autumn repeat: fixed-time jobs fire only in the first pass, so in the
                // segment after a backward transition skip the wall times already seen.
                let probe = Timestamp::from_second(t_s + 1).ok()?;
                if let Some(p) = tz.preceding(probe).next() {
                    let p_s = p.timestamp().as_second();
                    let new_off = i64::from(p.offset().seconds());
                    let old_off = Timestamp::from_second(p_s - 1)
                        .map(|b| i64::from(tz.to_offset(b).seconds()))
                        .unwrap_or(new_off);
                    if new_off < old_off {
                        wall_min = wall_min.max(ceil_minute(p_s + old_off));
                    }
                }
            }
            let found = self.next_wall(wall_min)?;
            let Some(tr) = tz.following(t).next() else {
                return Timestamp::from_second(found - off).ok();
            };
            let tr_s = tr.timestamp().as_second();
            if found < tr_s + off {
                return Timestamp::from_second(found - off).ok();
            }
            let new_off = i64::from(tr.offset().seconds());
            if self.fixed
                && new_off > off
                && new_off - off < MAX_CATCH_UP_GAP
                && found < tr_s + new_off
            {
                // Spring gap: a fixed-time job due in the gap fires once, at the first
                // minute after the gap.
                let wall = ceil_minute(tr_s + new_off);
                return Timestamp::from_second(wall - new_off).ok();
            }
            t = tr.timestamp();
            first = false;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
            assert!(d >= 1 && d <= days_in_month(y, m));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(weekday(days_from_civil(2024, 3, 10)), 0);
        assert_eq!(weekday(days_from_civil(2000, 2, 29)), 2);
    }
}
