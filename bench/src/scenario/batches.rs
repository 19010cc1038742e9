//! Record values and prebuilt record batches for the load generators.
//!
//! Everything is built once before the load starts; the hot loops only send these bytes again
//! (the broker stamps the base offset into its own copy, and the CRC does not cover it, so the
//! same batch is valid every time).

use std::time::{SystemTime, UNIX_EPOCH};

use ringlog_engine::batch::BatchBuilder;

use super::ScenarioError;

/// A finished RecordBatch v2 of equal records, ready to send or append again and again.
#[derive(Clone, Debug)]
pub struct PrebuiltBatch {
    bytes: Vec<u8>,
    records: u64,
}

impl PrebuiltBatch {
    /// Fills one batch with as many `record_size_bytes` records as fit in `batch_bytes`
    /// (at least one; the options guarantee that one fits).
    pub fn build(record_size_bytes: u32, batch_bytes: u32) -> Result<Self, ScenarioError> {
        let value = record_value(record_size_bytes);
        let timestamp_ms = wall_clock_ms();
        let mut builder = BatchBuilder::new(Vec::with_capacity(batch_bytes as usize), timestamp_ms);
        builder.set_batch_bytes_max(batch_bytes as usize);
        while builder.push(timestamp_ms, None, Some(&value), &[]).is_ok() {}
        if builder.record_count() == 0 {
            return Err(ScenarioError::Setup(format!(
                "a batch of {batch_bytes} bytes cannot hold one {record_size_bytes}-byte record"
            )));
        }
        let records = builder.record_count() as u64;
        builder.finish();
        Ok(Self {
            bytes: builder.into_buf(),
            records,
        })
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The batch's bytes, mutable (the engine stamps the base offset into them).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Bytes in the batch.
    pub fn len_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Records in the batch.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// A record value of `size_bytes` bytes of a fixed pseudo-random pattern (not zeros, so that
/// nothing along the way can shortcut it).
pub fn record_value(size_bytes: u32) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size_bytes)
        .map(|_| {
            // xorshift64: cheap and good enough to look random.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Wall-clock milliseconds since the Unix epoch (record timestamps).
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlog_engine::batch::{records, validate};

    #[test]
    fn a_prebuilt_batch_is_valid_and_full() {
        let batch = PrebuiltBatch::build(1024, 64 * 1024).unwrap();
        let header = validate(batch.bytes()).unwrap();
        assert_eq!(header.records_count as u64, batch.records());
        assert!(batch.records() >= 60, "{} records", batch.records());
        assert!(batch.len_bytes() <= 64 * 1024);
        let first = records(batch.bytes()).unwrap().next().unwrap().unwrap();
        assert_eq!(first.value.unwrap().len(), 1024);
    }

    #[test]
    fn a_batch_too_small_for_one_record_is_refused() {
        assert!(PrebuiltBatch::build(1024, 100).is_err());
    }
}
