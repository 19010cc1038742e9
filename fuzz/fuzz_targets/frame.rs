//! The frame decoder (length, header, body and raw split) on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringlog_fuzz::checks::frame(data));
