//! ringlog-bench: loads a ringlog server the way real producers and consumers do, and
//! measures this machine's own limits (raw O_DIRECT disk, raw loopback TCP through io_uring)
//! in the same run, so every result is also a ratio to what the hardware can do.
//!
//! Layout: [`options`] (command line and checks), [`scenario`] (the load scenarios, one module
//! each), [`reference`](mod@reference) (the hardware references), [`latency`] and [`throughput`] (what runs
//! record), [`report`] (JSON), [`table`] (stdout), [`plot`] (SVG), [`progress`] (terminal bar),
//! [`summary`] (one table from many reports), [`run`] (how an invocation is carried out),
//! [`front_doors`] (the `kafka` scenario's native-versus-Kafka figures).

pub mod cpu;
pub mod disk_space;
pub mod error;
pub mod front_doors;
pub mod latency;
pub mod options;
pub mod plot;
pub mod preflight;
pub mod progress;
pub mod reference;
pub mod report;
pub mod run;
pub mod scenario;
pub mod summary;
pub mod table;
pub mod target;
pub mod throughput;
pub mod units;
pub mod workload;
