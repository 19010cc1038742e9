//! ringlog's fuzz targets for cargo-fuzz. The target bodies are in [`checks`], which the
//! bounded proptest run of the main workspace (`tests/fuzz_bounded.rs`) includes too.

pub mod checks;
