//! Durations as operators type them: `30s`, `5m`, `1h`, `2d`, or combined like `1h30m`.

use std::time::Duration;

const UNITS: &str = "use s, m, h or d, e.g. 30s, 5m, 1h, 2d";

/// Parses a duration made of one or more `<whole number><unit>` parts.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err(format!("empty duration ({UNITS})"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("`{s}` is not a duration ({UNITS})"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let seconds_per = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "" => return Err(format!("`{s}` has no unit ({UNITS})")),
            other => return Err(format!("`{s}`: unknown unit `{other}` ({UNITS})")),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(seconds_per)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("`{s}` is too large"))?;
    }
    Ok(Duration::from_secs(total))
}

/// The compact form of a number of seconds: `42s`, `5m03s`, `2h10m`, `3d04h`.
pub fn human_secs(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let body = match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600),
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for bad in [
            "",
            "5",
            "5x",
            "h",
            "-5s",
            "1.5h",
            "5s3",
            "99999999999999999999s",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(!err.is_empty() && !err.contains('\n'), "{bad}: {err}");
        }
        assert!(parse("5x").unwrap_err().contains("unknown unit `x`"));
        assert!(parse("5").unwrap_err().contains("no unit"));
    }

    #[test]
    fn ages_are_compact() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(303), "5m03s");
        assert_eq!(human_secs(7_800), "2h10m");
        assert_eq!(human_secs(3 * 86_400 + 4 * 3_600), "3d04h");
        assert_eq!(human_secs(-5), "-5s");
    }
}
