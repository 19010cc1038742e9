//! `ringlog serve`: run the server until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ringlog_net::server::{OptionalListen, Server, ServerConfig};

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
    /// Address of the Kafka protocol listener (off unless given here or in the config); `off`
    /// turns it off even where the config file or RINGLOG_KAFKA_LISTEN sets it.
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub kafka_listen: Option<OptionalListen>,
    /// Address of the Prometheus metrics listener, served as `GET /metrics` over HTTP (off
    /// unless given here or in the config); `off` turns it off even where the config file or
    /// RINGLOG_METRICS_LISTEN sets it.
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub metrics_listen: Option<OptionalListen>,
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

/// Puts the flags that were given over `config` (the file and the variables); a flag left out
/// keeps what they set.
fn apply_flags(args: &ServeArgs, config: &mut ServerConfig) {
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // `Some(OptionalListen(None))` is `--kafka-listen off`: it overrides an address below.
    if let Some(OptionalListen(kafka_listen)) = args.kafka_listen {
        config.kafka_listen = kafka_listen;
    }
    if let Some(OptionalListen(metrics_listen)) = args.metrics_listen {
        config.metrics_listen = metrics_listen;
    }
    if args.shards.is_some() {
        config.shards = args.shards;
    }
}

/// Runs the server.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = settings::load(
        args.config.as_deref(),
        settings::ringlog_vars()?.into_iter(),
    )?;
    apply_flags(&args, &mut config);
    config.validate()?;
    let signals = block_shutdown_signals();
    let server = Server::start(config).context("cannot start the server")?;
    tracing::info!(
        addr = %server.local_addr(),
        shards = server.shard_count(),
        data_dir = %server.data_dir().display(),
        "ringlog serving"
    );
    // The server runs until a signal whether or not anyone reads these lines (`| head -1`).
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "ringlog serving on {} with {} shards, data in {}",
        server.local_addr(),
        server.shard_count(),
        server.data_dir().display()
    );
    if let Some(kafka_addr) = server.kafka_addr() {
        tracing::info!(addr = %kafka_addr, "Kafka protocol listening");
        let _ = writeln!(out, "Kafka protocol on {kafka_addr}");
    }
    if let Some(metrics_addr) = server.metrics_addr() {
        tracing::info!(addr = %metrics_addr, "metrics listening");
        let _ = writeln!(out, "Prometheus metrics on http://{metrics_addr}/metrics");
    }
    let signal = wait_for_signal(&signals);
    tracing::info!(signal, "shutting down: flushing partitions");
    server.shutdown();
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `ringlog serve`'s options alone.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// The config after `flags` over a config that sets both optional listeners.
    fn with_flags(flags: &[&str]) -> Result<ServerConfig, clap::Error> {
        let serve = Serve::try_parse_from([&["serve"], flags].concat())?;
        let mut config = ServerConfig {
            kafka_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9092))),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
            ..ServerConfig::default()
        };
        apply_flags(&serve.args, &mut config);
        Ok(config)
    }

    #[test]
    fn off_flags_turn_off_listeners_the_config_sets() {
        let config = with_flags(&["--kafka-listen", "off"]).unwrap();
        assert_eq!(config.kafka_listen, None);
        assert_eq!(config.metrics_listen.map(|addr| addr.port()), Some(9644));
        let config = with_flags(&["--metrics-listen", "off"]).unwrap();
        assert_eq!(config.kafka_listen.map(|addr| addr.port()), Some(9092));
        assert_eq!(config.metrics_listen, None);
        // An address still overrides, and a flag left out keeps the config's.
        let config = with_flags(&["--kafka-listen", "[::1]:19092"]).unwrap();
        assert_eq!(config.kafka_listen, Some("[::1]:19092".parse().unwrap()));
        let config = with_flags(&[]).unwrap();
        assert_eq!(config.kafka_listen.map(|addr| addr.port()), Some(9092));
    }

    #[test]
    fn a_bad_listener_flag_names_the_flag_and_both_forms() {
        let error = with_flags(&["--metrics-listen", "none"]).unwrap_err();
        let text = error.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "error: invalid value 'none' for '--metrics-listen <ADDR:PORT|off>': expected \
             ADDR:PORT or off, got \"none\""
        );
    }
}
