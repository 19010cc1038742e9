//! Choosing a partition for a record, the way Kafka's default partitioner does.
//!
//! - An explicit partition wins.
//! - A keyed record goes to `(murmur2(key) & 0x7fffffff) % partitions`, with Kafka's murmur2
//!   (seed `0x9747b28c`), so a key lands on the same partition number as it would in Kafka.
//! - A record without key goes to the *sticky* partition: all keyless records fill one
//!   partition's batch, and the partition moves on (round robin) each time a batch is sent.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Kafka's `Utils.murmur2`: MurmurHash2 of `data`, seed `0x9747b28c`, as a Java `int`.
pub fn kafka_murmur2(data: &[u8]) -> i32 {
    // Same bits as Java's int; the cast reinterprets them.
    murmur2::murmur2(data, murmur2::KAFKA_SEED) as i32
}

/// Kafka's default partition for a key: `toPositive(murmur2(key)) % partitions`.
/// `partitions` must be at least 1.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0, "a topic has at least one partition");
    let positive = (kafka_murmur2(key) & 0x7fff_ffff) as u32;
    positive % partitions.max(1)
}

/// The partition keyless records currently stick to.
#[derive(Debug, Clone)]
pub struct StickyPartitioner {
    partitions: u32,
    current: u32,
}

impl StickyPartitioner {
    /// Starts at a random partition, so many producers do not all begin on partition 0.
    pub fn new(partitions: u32) -> Self {
        let partitions = partitions.max(1);
        let random = RandomState::new().hash_one(std::time::Instant::now());
        Self {
            partitions,
            current: (random % u64::from(partitions)) as u32,
        }
    }

    /// The partition for the next keyless record.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// Keyless records may go to partitions added to the topic (the current one stays).
    pub fn grow(&mut self, partitions: u32) {
        self.partitions = self.partitions.max(partitions);
    }

    /// Called when `partition`'s batch was closed: if it is the sticky one, move on.
    pub fn on_batch_closed(&mut self, partition: u32) {
        if partition == self.current {
            self.current = (self.current + 1) % self.partitions;
        }
    }
}

/// Where a record goes: explicit partition, else key hash, else the sticky partition.
pub fn choose_partition(
    explicit: Option<u32>,
    key: Option<&[u8]>,
    sticky: &StickyPartitioner,
    partitions: u32,
) -> u32 {
    match (explicit, key) {
        (Some(partition), _) => partition,
        (None, Some(key)) => partition_for_key(key, partitions),
        (None, None) => sticky.current(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_murmur2_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                kafka_murmur2(key),
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(murmur2::KAFKA_SEED, 0x9747_b28c);
    }

    #[test]
    fn key_partitions_match_kafka() {
        // toPositive(-973932308) = 1173551340; 1173551340 % 10 = 0, % 7 = 5.
        assert_eq!(partition_for_key(b"21", 10), 0);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        // toPositive(479470107) = 479470107.
        assert_eq!(partition_for_key(b"abc", 4), 479_470_107 % 4);
        for partitions in 1..20 {
            assert!(partition_for_key(b"foobar", partitions) < partitions);
        }
    }

    #[test]
    fn sticky_moves_on_only_when_its_batch_closes() {
        let mut sticky = StickyPartitioner::new(3);
        let first = sticky.current();
        sticky.on_batch_closed((first + 1) % 3);
        assert_eq!(sticky.current(), first);
        sticky.on_batch_closed(first);
        assert_eq!(sticky.current(), (first + 1) % 3);
        let mut seen = [false; 3];
        for _ in 0..3 {
            seen[sticky.current() as usize] = true;
            let current = sticky.current();
            sticky.on_batch_closed(current);
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn choice_order() {
        let sticky = StickyPartitioner::new(8);
        assert_eq!(choose_partition(Some(5), Some(b"21"), &sticky, 8), 5);
        assert_eq!(
            choose_partition(None, Some(b"21"), &sticky, 8),
            partition_for_key(b"21", 8)
        );
        assert_eq!(choose_partition(None, None, &sticky, 8), sticky.current());
    }
}
