//! Dates, durations and numbers as the pages print them (UTC, no locale, pure).

use crate::machine::Millis;

const DAY_MS: u64 = 86_400_000;

/// (year, month, day) of a count of days since 1970-01-01 (the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` (UTC) of an epoch-ms instant.
pub fn day_of_ms(ms: Millis) -> String {
    let (y, m, d) = civil_from_days((ms / DAY_MS) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM` (UTC) of an epoch-ms instant.
pub fn datetime(ms: Millis) -> String {
    let secs = (ms % DAY_MS) / 1000;
    format!("{} {:02}:{:02}", day_of_ms(ms), secs / 3600, secs / 60 % 60)
}

/// The epoch ms of midnight UTC starting a `YYYY-MM-DD` day; `None` unless well formed.
pub fn parse_day(s: &str) -> Option<Millis> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Refuse 2026-02-31 and the like instead of rolling over into the next month.
    (civil_from_days(days) == (y, m, d)).then(|| days as u64 * DAY_MS)
}

/// A duration as `2h 05m`, `3m 20s` or `12s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

/// A count with thin spaces between thousands (`1 234 567`); fractions keep two decimals.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let negative = x < 0.0;
    let whole = x.abs().trunc() as u64;
    let frac = x.abs() - x.abs().trunc();
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if frac > 0.005 {
        out.push_str(&format!("{frac:.2}")[1..]);
    }
    if negative {
        out.insert(0, '−');
    }
    out
}

/// A compact count for chart labels: `950`, `12.3k`, `4.5M`.
pub fn compact(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if a.fract() == 0.0 {
        format!("{x}")
    } else {
        format!("{x:.2}")
    }
}

/// At most `max` bytes of `s`, cut at a character boundary; the flag says whether it was cut.
pub fn truncate(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_bad_dates_are_refused() {
        assert_eq!(day_of_ms(0), "1970-01-01");
        assert_eq!(datetime(1_776_964_088_893), "2026-04-23 17:08");
        for day in ["2024-02-29", "2026-12-31", "2000-03-01"] {
            assert_eq!(day_of_ms(parse_day(day).unwrap()), day);
        }
        for bad in ["2026-02-31", "2026-13-01", "x", "2026-01", "1969-12-31", ""] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(number(1_234_567.0), "1\u{202f}234\u{202f}567");
        assert_eq!(number(0.33), "0.33");
        assert_eq!(number(-12.0), "−12");
        assert_eq!(number(f64::NAN), "–");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(duration(125_000), "2m 05s");
        assert_eq!(duration(7_500_000), "2h 05m");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), ("h", true));
        assert_eq!(truncate("abc", 5), ("abc", false));
    }
}
