//! Blocking client over `std::net`: usable from any Rust program, no runtime to adopt.
//!
//! - [`Connection`]: framed, pipelined requests matched to responses by correlation id.
//! - [`Client`]: one call per api (admin, single-batch produce, fetch, offsets).
//! - [`Producer`]: batching, key partitioning (Kafka's murmur2), bounded in-flight, retries,
//!   per-record delivery results.
//! - [`Consumer`]: assign, seek (earliest / latest / offset / timestamp), poll.
//! - [`GroupConsumer`]: a consumer-group member (subscribe, poll, commit, rebalances).
//! - [`ShareConsumer`]: a share-group member (poll, acknowledge each record).
//!
//! Producing:
//!
//! ```no_run
//! use ringlog_net::client::{Producer, ProducerConfig, ProducerRecord};
//!
//! # fn main() -> Result<(), ringlog_net::client::ClientError> {
//! let producer = Producer::connect("127.0.0.1:9092", "events", ProducerConfig::default())?;
//! for line in ["a", "b", "c"] {
//!     producer.send(&ProducerRecord::new(line.as_bytes()))?;
//! }
//! producer.close()?; // flushes: Ok only when every record was acknowledged
//! # Ok(())
//! # }
//! ```
//!
//! Consuming:
//!
//! ```no_run
//! use std::time::Duration;
//! use ringlog_net::client::{Consumer, ConsumerConfig, SeekTo};
//!
//! # fn main() -> Result<(), ringlog_net::client::ClientError> {
//! let mut consumer = Consumer::connect("127.0.0.1:9092", ConsumerConfig::default())?;
//! consumer.assign("events", &[0, 1]);
//! consumer.seek_all(SeekTo::Earliest)?;
//! for record in consumer.poll(Duration::from_millis(500))? {
//!     let record = record?;
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod calls;
mod connection;
mod consumer;
mod decompressed;
mod error;
mod group_calls;
mod group_consumer;
mod links;
pub mod partitioner;
mod producer;
mod select;
mod share_consumer;
mod steering;

#[cfg(test)]
mod fake_server;

pub use calls::TopicMetadata;
pub use calls::{
    Client, FetchResult, ListedOffset, PartitionInfo, PendingFetch, ServerInfo, TopicInfo,
};
pub use connection::{Connection, ConnectionConfig, FrameReader, FrameWriter, ResponseFrame};
pub use consumer::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, PositionReset, Records, SeekTo,
};
pub use decompressed::DECOMPRESSED_BYTES_MAX_DEFAULT;
pub use error::ClientError;
pub use group_calls::{
    Assignment, EntryResult, GroupDescription, GroupJoin, GroupMemberInfo, GroupOffset,
    GroupSummary, PartitionOutcomes, ShareFetchResult, ShareGroupSettings, SharePartitionInfo,
};
pub use group_consumer::{GroupConsumer, GroupConsumerConfig, GroupRecords};
pub use producer::{
    CompressionType, DeliveryHandle, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use select::{ResponseSelect, SELECT_CONNECTIONS_MAX};
pub use share_consumer::{
    AckFailure, ShareBatch, ShareConsumer, ShareConsumerConfig, ShareRecord, ShareRecords,
};
