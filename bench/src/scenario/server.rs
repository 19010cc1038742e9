//! The server a scenario loads: an embedded one (started in-process, shards pinned, data in the
//! run's temporary directory) or a running one (`--server HOST:PORT`); its topics; and which
//! cores the load threads run on.
//!
//! The embedded server pins shard `i` to the `i`-th allowed core. Load threads are pinned to
//! the cores left over, so that they never share a core with a shard; when no core is left
//! (2 cores, 2 shards) they are not pinned and the scheduler places them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ringlog_net::client::{Client, ClientError};
use ringlog_net::message::create_topic;
use ringlog_net::server::{Server, ServerConfig, ServerHandle};

use super::ScenarioError;
use crate::cpu;
use crate::options::{RunConfig, Target};
use crate::workload::Workload;

/// The server under load and the topics the run created on it.
pub struct BenchServer {
    address: SocketAddr,
    /// The embedded server's configuration (to restart it); `None` for `--server`.
    embedded: Option<ServerConfig>,
    handle: Option<ServerHandle>,
    /// Cores for load threads; empty: leave them to the scheduler.
    load_cpus: Vec<usize>,
    /// Cores the embedded shards are pinned to.
    shard_cpus: Vec<usize>,
    /// Topics created on a running server, deleted again when the run ends.
    remote_topics: Vec<String>,
}

impl std::fmt::Debug for BenchServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BenchServer")
            .field("address", &self.address)
            .field("embedded", &self.embedded.is_some())
            .field("load_cpus", &self.load_cpus)
            .finish_non_exhaustive()
    }
}

impl BenchServer {
    /// Starts the embedded server with its data in `data_dir`, or checks that `--server`
    /// resolves. Fails with one line (exit status 2) before any load.
    pub fn start(config: &RunConfig, data_dir: &Path) -> Result<Self, ScenarioError> {
        Self::start_with(config, data_dir, false)
    }

    /// [`BenchServer::start`], and with `kafka_listener` the embedded server also opens a Kafka
    /// protocol listener on a free loopback port ([`BenchServer::kafka_address`]).
    pub fn start_with(
        config: &RunConfig,
        data_dir: &Path,
        kafka_listener: bool,
    ) -> Result<Self, ScenarioError> {
        let allowed = cpu::allowed_cpus().unwrap_or_default();
        match &config.target {
            Target::Embedded { shards } => {
                let shards = *shards as usize;
                let loopback_free_port = SocketAddr::from(([127, 0, 0, 1], 0));
                // `RINGLOG_<FIELD>` variables apply as they do to `ringlog serve`, but for the
                // fields the bench sets itself.
                let from_env = ServerConfig::env_vars()
                    .and_then(|vars| ServerConfig::from_env(vars.into_iter()))
                    .map_err(|error| {
                        ScenarioError::Setup(format!("the embedded server's settings: {error}"))
                    })?;
                let server_config = ServerConfig {
                    data_dir: data_dir.to_path_buf(),
                    listen: loopback_free_port,
                    kafka_listen: kafka_listener.then_some(loopback_free_port),
                    shards: Some(shards),
                    ..from_env
                };
                let handle = Server::start(server_config.clone()).map_err(|error| {
                    ScenarioError::Setup(format!("the embedded server did not start: {error}"))
                })?;
                // The server pins shard i to the i-th allowed core when there is one per shard.
                let pinned = allowed.len() >= shards;
                let shard_cpus = if pinned {
                    allowed.iter().copied().take(shards).collect()
                } else {
                    Vec::new()
                };
                let load_cpus = if pinned {
                    allowed.iter().copied().skip(shards).collect()
                } else {
                    Vec::new()
                };
                Ok(Self {
                    address: handle.local_addr(),
                    embedded: Some(server_config),
                    handle: Some(handle),
                    load_cpus,
                    shard_cpus,
                    remote_topics: Vec::new(),
                })
            }
            Target::Server(server) => {
                let address = server
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addresses| addresses.next())
                    .ok_or_else(|| {
                        ScenarioError::Setup(format!("--server '{server}' does not resolve"))
                    })?;
                Ok(Self {
                    address,
                    embedded: None,
                    handle: None,
                    load_cpus: Vec::new(),
                    shard_cpus: Vec::new(),
                    remote_topics: Vec::new(),
                })
            }
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where Kafka clients connect; `None` without a Kafka listener (see
    /// [`BenchServer::start_with`]).
    pub fn kafka_address(&self) -> Option<SocketAddr> {
        self.handle.as_ref().and_then(ServerHandle::kafka_addr)
    }

    /// The embedded server's data directory; `None` for `--server`.
    pub fn data_dir(&self) -> Option<&Path> {
        self.embedded
            .as_ref()
            .map(|config| config.data_dir.as_path())
    }

    /// Bytes the embedded server keeps in memory for tail reads, over all its shards; `None`
    /// for `--server` (unknown).
    pub fn cache_bytes(&self) -> Option<u64> {
        self.embedded.as_ref().map(|config| {
            let shards = config.shards.unwrap_or(1) as u64;
            config.cache_bytes_per_shard as u64 * shards
        })
    }

    /// Creates a topic for `workload` with `partitions` partitions and returns its name.
    pub fn create_topic(
        &mut self,
        workload: Workload,
        partitions: u32,
    ) -> Result<String, ScenarioError> {
        self.create_named_topic(workload.name(), partitions)
    }

    /// Creates a topic named after `purpose` (`bench-<purpose>` on the embedded server, a
    /// name of its own on a running one) with `partitions` partitions and returns its name.
    pub fn create_named_topic(
        &mut self,
        purpose: &str,
        partitions: u32,
    ) -> Result<String, ScenarioError> {
        let name = match self.embedded {
            Some(_) => format!("bench-{purpose}"),
            // A name of its own, so that runs never meet each other's data on a shared server.
            None => format!(
                "ringlog-bench-{purpose}-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_millis())
            ),
        };
        let mut client = self.client()?;
        let request = create_topic::Request {
            name: &name,
            partitions,
            ..Default::default()
        };
        client.create_topic(&request).map_err(|error| {
            ScenarioError::Setup(format!(
                "cannot create topic {name} with {partitions} partitions: {error}"
            ))
        })?;
        if self.embedded.is_none() {
            self.remote_topics.push(name.clone());
        }
        Ok(name)
    }

    /// A new admin connection.
    pub fn client(&self) -> Result<Client, ScenarioError> {
        Client::connect(self.address).map_err(|error| self.connect_error(&error))
    }

    /// The one-line error for a failed connection.
    pub fn connect_error(&self, error: &ClientError) -> ScenarioError {
        ScenarioError::Setup(format!("cannot connect to {}: {error}", self.address))
    }

    /// High watermark of every partition of `topic`, in partition order.
    pub fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, ScenarioError> {
        high_watermarks(&mut self.client()?, topic)
    }

    /// Stops the embedded server and starts it again on the same data (reads afterwards come
    /// from the files, not from the memory it wrote them from).
    pub fn restart(&mut self) -> Result<(), ScenarioError> {
        let Some(config) = self.embedded.clone() else {
            return Err(ScenarioError::Setup(
                "only the embedded server can be restarted".into(),
            ));
        };
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        let handle = Server::start(config).map_err(|error| {
            ScenarioError::Failed(format!("the embedded server did not restart: {error}"))
        })?;
        self.address = handle.local_addr();
        self.handle = Some(handle);
        Ok(())
    }

    /// The core load thread number `index` should be pinned to; `None`: not pinned.
    pub fn load_cpu(&self, index: usize) -> Option<usize> {
        if self.load_cpus.is_empty() {
            return None;
        }
        self.load_cpus.get(index % self.load_cpus.len()).copied()
    }

    /// One line on where the server and the load run, for the report's notes.
    pub fn placement_note(&self) -> String {
        match (&self.embedded, self.shard_cpus.is_empty()) {
            (None, _) => format!("server {} (not started by the bench)", self.address),
            (Some(config), true) => format!(
                "embedded server, {} shards not pinned (fewer cores than shards); load threads not pinned",
                config.shards.unwrap_or(1)
            ),
            (Some(config), false) if self.load_cpus.is_empty() => format!(
                "embedded server, {} shards pinned to cpus {:?}; load threads not pinned (no core left)",
                config.shards.unwrap_or(1),
                self.shard_cpus
            ),
            (Some(config), false) => format!(
                "embedded server, {} shards pinned to cpus {:?}; load threads pinned to cpus {:?}",
                config.shards.unwrap_or(1),
                self.shard_cpus,
                self.load_cpus
            ),
        }
    }

    /// Every regular file under the embedded server's data directory (segments, indexes).
    pub fn data_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(dir) = self.data_dir() {
            collect_files(dir, &mut files);
        }
        files
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if !self.remote_topics.is_empty() {
            // Best effort: a run must not leave its topics on a shared server.
            if let Ok(mut client) = Client::connect(self.address) {
                for topic in &self.remote_topics {
                    let _ = client.delete_topic(topic);
                }
            }
        }
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

/// High watermark of every partition of `topic`, in partition order, asked over `client`.
pub fn high_watermarks(client: &mut Client, topic: &str) -> Result<Vec<i64>, ScenarioError> {
    let topics = client
        .metadata(&[topic])
        .map_err(|error| ScenarioError::Failed(format!("metadata of {topic}: {error}")))?;
    let partitions = topics
        .into_iter()
        .next()
        .map(|metadata| metadata.partitions)
        .unwrap_or_default();
    let mut watermarks = vec![0; partitions.len()];
    for info in partitions {
        if let Some(slot) = watermarks.get_mut(info.partition as usize) {
            *slot = info.high_watermark;
        }
    }
    Ok(watermarks)
}

/// Pins the calling load thread to `cpu` (no-op for `None`).
pub fn pin_load_thread(cpu: Option<usize>) -> Result<(), ScenarioError> {
    match cpu {
        Some(cpu) => cpu::pin_current_thread(cpu).map_err(|source| ScenarioError::Io {
            context: format!("pin a load thread to cpu {cpu}"),
            source,
        }),
        None => Ok(()),
    }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => collect_files(&path, files),
            Ok(kind) if kind.is_file() => files.push(path),
            _ => {}
        }
    }
}
