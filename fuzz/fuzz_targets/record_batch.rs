//! The RecordBatch v2 decoder: validation, batch iteration, records and headers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringlog_fuzz::checks::record_batch(data));
