//! Go's duration syntax (`500ms`, `1.5s`, `1h30m`): the one parser for vismig's own
//! `migration:` durations and the Go durations in Temporal's `persistence:` block.

use std::time::Duration;

/// Parses a Go duration: one or more `<number><unit>` terms, each number whole or
/// decimal (`1.5s`, `.5s`), units `ms`, `s`, `m` and `h`; a lone `0` needs no unit.
/// No sign: no duration vismig reads may be negative.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (use e.g. 30s, 5m, 1h)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (term, after) = next_term(rest).ok_or_else(bad)?;
        nanos = nanos.checked_add(term).ok_or_else(bad)?;
        rest = after;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| bad())?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Temporal's Cassandra `connectTimeout`: a Go duration, or a bare number of seconds
/// (`10`, `1.5`), which vismig has always taken as seconds there, though not in `migration:`.
pub fn parse_duration_or_seconds(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        parse_duration(&format!("{t}s")).map_err(|_| format!("invalid duration {text:?} (use e.g. 10s, 600ms)"))
    } else {
        parse_duration(text)
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The first `<number><unit>` term of `text` in nanoseconds, and what follows it. Exact in
/// integers (no float rounding); fraction digits past the 18th, far below a nanosecond, are dropped.
fn next_term(text: &str) -> Option<(u128, &str)> {
    let int_len = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (int, rest) = text.split_at(int_len);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())),
        None => ("", rest),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_len);
    let unit_nanos: u128 = match unit {
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        _ => return None,
    };
    let whole = if int.is_empty() { 0 } else { int.parse::<u128>().ok()?.checked_mul(unit_nanos)? };
    let frac = &frac[..frac.len().min(18)];
    let part =
        if frac.is_empty() { 0 } else { frac.parse::<u128>().ok()? * unit_nanos / 10u128.pow(frac.len() as u32) };
    Some((whole.checked_add(part)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0.1s").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1h0.5m1.25s").unwrap(), Duration::from_millis(3_631_250));
        for bad in ["", "5", "m5", "5 days", "5 seconds", "1d", "soon", "-1s", ".s", "1.5.2s", "00", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration(&format!("{}h", u64::MAX)).is_err());
    }

    #[test]
    fn connect_timeouts_also_take_bare_seconds() {
        assert_eq!(parse_duration_or_seconds("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration_or_seconds("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration_or_seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration_or_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration_or_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration_or_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_duration_or_seconds("soon").is_err());
        assert!(parse_duration_or_seconds("5 seconds").is_err());
        assert!(parse_duration_or_seconds("").is_err());
    }
}
