//! Go-style durations (`300ms`, `90s`, `5m`, `1h30m`, `1.5h`), as kubelet and spiderpool
//! flags write them, so a DaemonSet's args read the same as theirs.

use std::time::Duration;

/// Parses a non-zero Go-style duration: one or more `<number><unit>` with units `ns`, `us`
/// (or `µs`), `ms`, `s`, `m`, `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("duration {text:?} {why}: write it as Go does, e.g. 30s, 5m, 1h30m, 500ms")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("is empty"));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("has a number without a unit"))?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| bad("has a malformed number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad(&format!("has unknown unit {unit:?}"))),
        };
        total += value * seconds;
        rest = tail;
    }
    let duration = Duration::try_from_secs_f64(total).map_err(|_| bad("is out of range"))?;
    if duration.is_zero() {
        return Err(bad("is zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2m3s").unwrap(), Duration::from_secs(123));
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("5", "without a unit"),
            ("5x", "unknown unit \"x\""),
            ("0s", "zero"),
            ("1..2s", "malformed"),
            ("m", "malformed"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
