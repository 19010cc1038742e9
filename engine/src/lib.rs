//! ringlog-engine: the per-core io_uring reactor and the partition log.

pub mod buffer;
pub mod reactor;
pub mod data_dir;
pub mod topic;
pub mod varint;
pub mod batch;
pub mod error;
pub mod index;
pub mod segment;
pub mod cache;
pub mod recovery;
pub mod log;
