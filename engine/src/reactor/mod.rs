//! The per-shard runtime: one io_uring ring, one single-threaded executor, timers and
//! cross-shard mail, all driven by one thread pinned to one core.
//!
//! Every operation is a future that owns the memory the kernel touches until the completion
//! arrives (`op`). Tasks are `'static` local futures ([`spawn`]); a shard runs them with
//! [`block_on`]. Nothing here takes a lock: the ring, the task table and the op table belong to
//! the thread that built them, and other threads reach a shard only through [`mail`].

mod executor;
mod op;
mod ring;

pub mod affinity;
pub mod fs;
pub mod mail;
#[cfg(test)]
pub(crate) mod power_loss;
pub mod tcp;
pub mod time;
pub mod turns;

pub use executor::{spawn, yield_now, JoinHandle};
pub use ring::{block_on, features, RingConfig, RingFeatures};
