//! Byte sizes and rates: parsing the sizes users type and printing the ones we measure.
//!
//! Throughput is always in MB/s with MB = 10^6 bytes (what disk and network vendors quote);
//! sizes that users type may use binary suffixes (KiB, MiB, GiB) or decimal ones (KB, MB, GB).

/// Bytes in one MB as used in every reported rate (decimal, 10^6).
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// One binary mebibyte (the reference block size and a common batch size).
pub const MIB: u64 = 1 << 20;

/// One binary gibibyte.
pub const GIB: u64 = 1 << 30;

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

/// Formats a byte count for people: `1.07 GB`, `65.5 kB`, `512 B` (decimal units, like the rates).
pub fn format_bytes(bytes: u64) -> String {
    let value = bytes as f64;
    if value >= 1e12 {
        format!("{:.2} TB", value / 1e12)
    } else if value >= 1e9 {
        format!("{:.2} GB", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.1} MB", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} kB", value / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// Formats a configured size exactly, in binary units where it divides evenly: `1 MiB`,
/// `64 KiB`, `1000 B` (for block and batch sizes, which users give in binary units).
pub fn format_size(bytes: u64) -> String {
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// MB/s (MB = 10^6 bytes) for `bytes` moved in `seconds`; 0 when no time passed.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / BYTES_PER_MB / seconds
    } else {
        0.0
    }
}

/// Events per second for `count` events in `seconds`; 0 when no time passed.
pub fn per_s(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
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
    fn rates_use_decimal_megabytes() {
        assert_eq!(mb_per_s(2_000_000, 2.0), 1.0);
        assert_eq!(mb_per_s(5, 0.0), 0.0);
        assert_eq!(format_bytes(1_070_000_000), "1.07 GB");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(65536), "64 KiB");
        assert_eq!(format_size(1000), "1000 B");
    }
}
