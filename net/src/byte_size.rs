//! Byte sizes as people type them on a command line: `1024`, `64KiB`, `1 MiB`, `100KB`,
//! `1.5GB`. Binary suffixes (KiB, MiB, GiB, TiB, or K, M, G, T) count in powers of 1024,
//! decimal ones (KB, MB, GB, TB) in powers of 1000, as their names say; case does not matter.
//! `ringlog` and `ringlog-bench` both take sizes through [`parse_bytes`].

/// Parses a byte size such as `1024`, `64KiB`, `1MiB`, `2GiB`, `100KB` or `1.5GB`.
///
/// Suffixes are case-insensitive; a space between number and suffix is allowed.
/// Fractional values are allowed with a suffix and rounded down to whole bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split_at = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split_at);
    let multiplier: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size suffix '{other}' in '{text}' (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    if number.is_empty() {
        return Err(format!("'{text}' is not a byte size"));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("'{text}' is too large"));
    }
    let fractional: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a byte size"))?;
    let bytes = fractional * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{text}' is too large"));
    }
    // Truncation is the documented rounding (down to whole bytes).
    Ok(bytes as u64)
}

/// A size as [`parse_bytes`] reads it, for the protocol's signed byte fields (Kafka's too).
pub fn parse_signed_bytes(text: &str) -> Result<i64, String> {
    let bytes = parse_bytes(text)?;
    i64::try_from(bytes).map_err(|_| format!("'{text}' is too large"))
}

/// A limit in bytes that may be lifted: `-1` (no limit) or a positive size as [`parse_bytes`]
/// reads it. 0 and other negative numbers are refused here, saying what is taken, rather than
/// by a server whose answer cannot know how the limit was typed.
pub fn parse_limit_bytes(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    if trimmed == "-1" {
        return Ok(-1);
    }
    let expected = "expected a positive size such as 10GiB, or -1 for no limit";
    if trimmed.starts_with('-') {
        return Err(format!("{expected}, got '{text}'"));
    }
    match parse_signed_bytes(text)? {
        0 => Err(format!("{expected}, got '{text}'")),
        bytes => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("2gib"), Ok(2 << 30));
        assert_eq!(parse_bytes("100KB"), Ok(100_000));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("0"), Ok(0));
    }

    #[test]
    fn rejects_nonsense_sizes() {
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-5").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn limits_take_minus_one_or_a_size() {
        assert_eq!(parse_limit_bytes("-1"), Ok(-1));
        assert_eq!(parse_limit_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(
            parse_limit_bytes("-2"),
            Err("expected a positive size such as 10GiB, or -1 for no limit, got '-2'".into())
        );
        assert!(parse_limit_bytes("0").is_err());
        assert!(parse_limit_bytes("0.1").is_err());
        assert!(parse_limit_bytes("16EiB").is_err());
        assert!(parse_limit_bytes("15TiB").is_ok());
        assert!(parse_limit_bytes("10000000TiB").is_err());
    }
}
