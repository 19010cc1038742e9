//! `ringlog serve`: run the server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ringlog_net::server::Server;

use crate::settings;

/// Options of `ringlog serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where topics and segments are stored.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the native protocol listener.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address of the Kafka protocol listener (off unless given here or in the config).
    #[arg(long, value_name = "ADDR:PORT")]
    pub kafka_listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics listener, served as `GET /metrics` over HTTP (off
    /// unless given here or in the config).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Number of shard threads (default: the cores this process may run on).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// TOML config file; `RINGLOG_<FIELD>` variables and flags override it.
    #[arg(long, value_name = "FILE", env = "RINGLOG_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Blocks SIGINT and SIGTERM in every thread (shard threads inherit the mask) so that the main
/// thread can wait for them with sigwait and shut down in order.
fn block_shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls only touch it and
    // the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` is a valid signal set and `signal` a live i32.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}

/// Runs the server.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = settings::load(
        args.config.as_deref(),
        settings::ringlog_vars()?.into_iter(),
    )?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.kafka_listen.is_some() {
        config.kafka_listen = args.kafka_listen;
    }
    if args.metrics_listen.is_some() {
        config.metrics_listen = args.metrics_listen;
    }
    if args.shards.is_some() {
        config.shards = args.shards;
    }
    config.validate()?;
    let signals = block_shutdown_signals();
    let server = Server::start(config).context("cannot start the server")?;
    tracing::info!(
        addr = %server.local_addr(),
        shards = server.shard_count(),
        data_dir = %server.data_dir().display(),
        "ringlog serving"
    );
    println!(
        "ringlog serving on {} with {} shards, data in {}",
        server.local_addr(),
        server.shard_count(),
        server.data_dir().display()
    );
    if let Some(kafka_addr) = server.kafka_addr() {
        tracing::info!(addr = %kafka_addr, "Kafka protocol listening");
        println!("Kafka protocol on {kafka_addr}");
    }
    if let Some(metrics_addr) = server.metrics_addr() {
        tracing::info!(addr = %metrics_addr, "metrics listening");
        println!("Prometheus metrics on http://{metrics_addr}/metrics");
    }
    let signal = wait_for_signal(&signals);
    tracing::info!(signal, "shutting down: flushing partitions");
    server.shutdown();
    tracing::info!("stopped cleanly");
    Ok(())
}
