//! ringlog-engine: the per-core io_uring reactor and the partition log.

pub mod batch;
pub mod buffer;
pub mod cache;
pub mod chunk_pool;
pub mod compression;
pub mod data_dir;
pub mod error;
pub mod index;
pub mod io_budget;
pub mod log;
pub mod log_start;
pub mod producer_id;
pub mod producer_snapshot;
pub mod producer_state;
pub mod reactor;
pub mod recovery;
pub mod segment;
pub mod topic;
pub mod varint;
