//! The subcommands of the `ringlog` binary. `serve` runs the server; the others are clients of
//! the server at `--server`.

pub mod consume;
pub mod error;
pub mod group;
pub mod group_consume;
pub mod interrupt;
pub mod produce;
pub mod record_format;
pub mod serve;
pub mod table;
pub mod topic;

use clap::Subcommand;

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGINT or SIGTERM (which flush every partition first).
    Serve(serve::ServeArgs),
    /// Create, list, describe and delete topics.
    Topic(topic::TopicArgs),
    /// Append stdin to a topic, one record per line; a summary goes to stderr.
    Produce(produce::ProduceArgs),
    /// Print a topic's records, one per line (alone, or as a member of a consumer or share
    /// group).
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and configure consumer and share groups.
    Group(group::GroupArgs),
}

impl Command {
    /// The log filter when `RINGLOG_LOG` is not set: the server tells what it does, client
    /// commands only warn.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the command; client commands talk to `server`.
    pub fn run(self, server: &str) -> anyhow::Result<()> {
        match self {
            Command::Serve(args) => serve::run(args),
            Command::Topic(args) => topic::run(args, server),
            Command::Produce(args) => produce::run(args, server),
            Command::Consume(args) => consume::run(args, server),
            Command::Group(args) => group::run(args, server),
        }
    }
}
