//! Every request and response body: flatbuffers verification, then every field read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringlog_fuzz::checks::request_body(data));
