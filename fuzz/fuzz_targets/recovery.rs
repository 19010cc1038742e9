//! The recovery scanner: a partition directory from the input is opened, read, appended to and reopened.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringlog_fuzz::checks::recovery(data));
