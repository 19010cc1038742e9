//! Byte sizes and rates as the bench prints them. Sizes that users type are parsed by
//! [`ringlog_net::byte_size::parse_bytes`] (binary suffixes KiB, MiB, GiB or decimal ones KB,
//! MB, GB), as `ringlog`'s own command line does.
//!
//! Throughput is always in MB/s with MB = 10^6 bytes (what disk and network vendors quote).

/// Bytes in one MB as used in every reported rate (decimal, 10^6).
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// One binary mebibyte (the reference block size and a common batch size).
pub const MIB: u64 = 1 << 20;

/// One binary gibibyte.
pub const GIB: u64 = 1 << 30;

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
