//! The ringlog server: one thread per shard, each pinned to a core with its own ring, its own
//! partitions and its own listening socket (SO_REUSEPORT) on the same address.
//!
//! [`Server::start`] does the blocking startup (lock the data directory, list topics, bind),
//! starts the shards, waits until every shard has recovered its partitions, and returns a
//! [`ServerHandle`]; [`ServerHandle::shutdown`] flushes everything and joins the shards.

mod config;
mod connection;
mod fetch;
mod group;
mod handler;
mod kafka;
mod latch;
mod lending;
mod mail_turns;
mod message;
mod metrics;
mod partition_ops;
mod produce;
mod producer_ids;
mod recv_buffer;
mod routing;
mod shard;
mod share;
mod state_store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringlog_engine::data_dir::{DataDir, DataDirError};
use ringlog_engine::reactor::mail::{self, Doorbell, Mailbox};
use ringlog_engine::reactor::tcp::{TcpListener, TcpStream};
use ringlog_engine::reactor::{self, affinity, time, RingConfig};
use ringlog_engine::topic::{self, TopicConfig};

pub use config::{
    ConfigError, OptionalListen, OptionalListenError, ServerConfig, ENV_PREFIX, LISTEN_OFF,
};
use message::Mail;
use shard::Shard;
/// Headers of records copied to a share group's dead-letter topic.
pub use share::dead_letter::{
    HEADER_DELIVERY_COUNT, HEADER_GROUP, HEADER_NOTE, HEADER_OFFSET, HEADER_PARTITION,
    HEADER_REASON, HEADER_TOPIC,
};

/// Listen backlog per shard.
const LISTEN_BACKLOG: i32 = 1024;
/// How long startup waits for its address while another socket holds it. A server killed a
/// moment ago holds it a few milliseconds more: the kernel closes a dead process's io_uring
/// instances, and the listeners in them, after the process is gone. Joining those listeners'
/// SO_REUSEPORT group instead would hand some connections to sockets nobody accepts on.
const ADDRESS_WAIT_MAX: Duration = Duration::from_secs(2);
/// Interval between two checks of a held address.
const ADDRESS_RECHECK_INTERVAL: Duration = Duration::from_millis(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A configuration value is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory is locked or unusable.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A shard failed to start (ring setup or partition recovery).
    #[error("shard {shard} failed to start: {message}")]
    Shard {
        /// Which shard.
        shard: usize,
        /// What went wrong.
        message: String,
    },
    /// A shard thread ended before saying whether it started (a panic).
    #[error("a shard thread ended during startup")]
    ShardExited,
    /// Other I/O during startup.
    #[error("startup: {0}")]
    Io(#[from] std::io::Error),
}

/// The server.
pub struct Server;

/// A running server. Dropping it shuts the server down.
pub struct ServerHandle {
    local_addr: SocketAddr,
    kafka_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shard_count: usize,
    data_dir: PathBuf,
    stop: Arc<AtomicBool>,
    doorbells: Vec<Arc<Doorbell>>,
    threads: Vec<JoinHandle<()>>,
    _lock: Option<DataDir>,
}

struct ShardStart {
    id: usize,
    shard_count: usize,
    cpu: Option<usize>,
    config: ServerConfig,
    data_dir: PathBuf,
    topics: Vec<(String, TopicConfig)>,
    listener: TcpListener,
    /// The Kafka protocol listener and its address, when enabled.
    kafka_listener: Option<(TcpListener, SocketAddr)>,
    /// The metrics listener, when enabled.
    metrics_listener: Option<TcpListener>,
    mailbox: Mailbox<Mail>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Rung for `stop` and for `open`.
    stop_bell: Arc<Doorbell>,
    /// Each shard's start-up outcome, with its id.
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    /// Set once every shard has opened its topics: only then do shards accept connections,
    /// so that no request reaches a shard still recovering its partitions (which would answer
    /// UnknownTopic for a topic that exists).
    open: Arc<AtomicBool>,
}

impl Server {
    /// Starts a server and returns once every shard serves.
    pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        config.validate()?;
        let lock = DataDir::open(&config.data_dir)?;
        let data_dir = lock.path().to_path_buf();
        remove_deleted_topics(&data_dir);
        raise_open_files_limit();
        let topics = topic::scan(&data_dir)?;
        let cpus = affinity::allowed_cpus().unwrap_or_default();
        let shard_count = config.shards.unwrap_or(cpus.len().max(1));
        let listeners = bind_all(config.listen, shard_count)?;
        let local_addr = listeners[0].local_addr()?;
        let (mut kafka_listeners, kafka_addr) = bind_optional(config.kafka_listen, shard_count)?;
        let (mut metrics_listeners, metrics_addr) =
            bind_optional(config.metrics_listen, shard_count)?;
        let mailboxes = mail::mesh::<Mail>(shard_count, config.mail_queue_depth)?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut doorbells = Vec::with_capacity(shard_count);
        let mut threads = Vec::with_capacity(shard_count);
        for (id, (listener, mailbox)) in listeners.into_iter().zip(mailboxes).enumerate() {
            let stop_bell = Doorbell::new()?;
            doorbells.push(Arc::clone(&stop_bell));
            let start = ShardStart {
                id,
                shard_count,
                // Pin only when there is a core per shard; otherwise let the kernel place them.
                cpu: (cpus.len() >= shard_count).then(|| cpus[id]),
                config: config.clone(),
                data_dir: data_dir.clone(),
                topics: topics.clone(),
                listener,
                kafka_listener: kafka_listeners[id].take().zip(kafka_addr),
                metrics_listener: metrics_listeners[id].take(),
                mailbox,
                connections: Arc::clone(&connections),
                stop: Arc::clone(&stop),
                stop_bell,
                ready: ready_tx.clone(),
                open: Arc::clone(&open),
            };
            let thread = std::thread::Builder::new()
                .name(format!("ringlog-shard-{id}"))
                .spawn(move || run_shard(start))?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut handle = ServerHandle {
            local_addr,
            kafka_addr,
            metrics_addr,
            shard_count,
            data_dir,
            stop,
            doorbells,
            threads,
            _lock: Some(lock),
        };
        for _ in 0..shard_count {
            let failure = match ready_rx.recv() {
                Ok((_, Ok(()))) => continue,
                Ok((shard, Err(message))) => ServerError::Shard { shard, message },
                // Every sender gone before all answered: a shard thread died (a panic).
                Err(_) => ServerError::ShardExited,
            };
            handle.stop_and_join();
            return Err(failure);
        }
        open.store(true, Ordering::SeqCst);
        for bell in &handle.doorbells {
            bell.ring();
        }
        Ok(handle)
    }
}

impl ServerHandle {
    /// The address the native protocol listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the Kafka protocol listens on, when enabled (with the real port).
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// The address of the Prometheus metrics listener, when enabled (with the real port).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The data directory in use.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Flushes every partition, closes connections and joins the shard threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for bell in &self.doorbells {
            bell.ring();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn bind_all(addr: SocketAddr, shard_count: usize) -> Result<Vec<TcpListener>, ServerError> {
    let listen_error = |source| ServerError::Listen { addr, source };
    if addr.port() != 0 {
        wait_for_address(addr).map_err(listen_error)?;
    }
    let first = TcpListener::bind_reuse_port(addr, LISTEN_BACKLOG).map_err(listen_error)?;
    // With port 0 the first bind picks the port; the others join it.
    let bound = first.local_addr().map_err(listen_error)?;
    let mut listeners = vec![first];
    for _ in 1..shard_count {
        listeners.push(TcpListener::bind_reuse_port(bound, LISTEN_BACKLOG).map_err(listen_error)?);
    }
    // Listener i joined the group i-th: a client's source port picks its shard.
    if let Err(error) = listeners[0].steer_by_source_port(shard_count as u16) {
        tracing::warn!(%addr, %error, "cannot steer connections by source port; they spread at random");
    }
    Ok(listeners)
}

/// Returns once nothing listens on `addr`, or with `AddrInUse` after [`ADDRESS_WAIT_MAX`].
/// Blocking: startup only. The wait is logged at debug level only: a refused start stays one
/// error line.
fn wait_for_address(addr: SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + ADDRESS_WAIT_MAX;
    let mut logged = false;
    loop {
        match TcpListener::check_address_free(addr) {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                if !logged {
                    tracing::debug!(%addr, "address in use; waiting for it (a server that just exited may still hold it)");
                    logged = true;
                }
                std::thread::sleep(ADDRESS_RECHECK_INTERVAL);
            }
            result => return result,
        }
    }
}

/// Binds an optional listener on every shard: one listener per shard (or none) and the bound
/// address.
fn bind_optional(
    addr: Option<SocketAddr>,
    shard_count: usize,
) -> Result<(Vec<Option<TcpListener>>, Option<SocketAddr>), ServerError> {
    match addr {
        Some(addr) => {
            let listeners = bind_all(addr, shard_count)?;
            let bound = listeners[0].local_addr()?;
            Ok((listeners.into_iter().map(Some).collect(), Some(bound)))
        }
        None => Ok(((0..shard_count).map(|_| None).collect(), None)),
    }
}

/// Raises the soft limit on open files to the hard limit: every segment and connection is a
/// descriptor, and the common default of 1024 is far below what thousands of partitions need.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let previous = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(
                    previous,
                    now = limit.rlim_cur,
                    "raised the open files limit"
                );
            }
        }
    }
}

/// Removes what an interrupted topic deletion left behind (startup, blocking).
fn remove_deleted_topics(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".deleted-") {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "could not remove deleted topic data");
            }
        }
    }
}

fn run_shard(start: ShardStart) {
    if let Some(cpu) = start.cpu {
        if let Err(error) = affinity::pin_current_thread(cpu) {
            tracing::warn!(shard = start.id, cpu, %error, "could not pin shard thread");
        }
    }
    let ready = start.ready.clone();
    let id = start.id;
    let ring = RingConfig::default();
    if let Err(error) = reactor::block_on(ring, shard_main(start)) {
        let _ = ready.send((id, Err(format!("io_uring setup failed: {error}"))));
    }
}

async fn shard_main(start: ShardStart) {
    let ShardStart {
        id,
        shard_count,
        config,
        data_dir,
        topics,
        listener,
        kafka_listener,
        metrics_listener,
        mailbox,
        connections,
        stop,
        stop_bell,
        ready,
        open,
        ..
    } = start;
    let Mailbox { inbox, outboxes } = mailbox;
    let shard = Shard::new(
        id,
        shard_count,
        Rc::new(config),
        data_dir,
        outboxes,
        connections,
    );
    reactor::spawn(Rc::clone(&shard).run_inbox(inbox));
    for (name, topic_config) in topics {
        if let Err(failure) = shard.open_topic(&name, topic_config).await {
            let _ = ready.send((id, Err(format!("topic {name}: {}", failure.message))));
            return;
        }
    }
    let _ = ready.send((id, Ok(())));
    let opened_or_stopped = || open.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst);
    while !opened_or_stopped() {
        stop_bell.wait(opened_or_stopped).await;
    }
    if !stop.load(Ordering::SeqCst) {
        serve_clients(&shard, listener, kafka_listener, metrics_listener);
    }
    while !stop.load(Ordering::SeqCst) {
        stop_bell.wait(|| stop.load(Ordering::SeqCst)).await;
    }
    shard.close_all().await;
    tracing::debug!(shard = id, "shard stopped");
}

/// Starts the shard's accept loops and its periodic tasks.
fn serve_clients(
    shard: &Rc<Shard>,
    listener: TcpListener,
    kafka_listener: Option<(TcpListener, SocketAddr)>,
    metrics_listener: Option<TcpListener>,
) {
    reactor::spawn(accept_loop(Rc::clone(shard), listener, connection::serve));
    if let Some((kafka_listener, kafka_addr)) = kafka_listener {
        let front_door = kafka::KafkaShard::new(Rc::clone(shard), kafka_addr);
        reactor::spawn(accept_loop(
            Rc::clone(shard),
            kafka_listener,
            move |_, stream| kafka::serve(Rc::clone(&front_door), stream),
        ));
    }
    if let Some(metrics_listener) = metrics_listener {
        reactor::spawn(accept_loop(
            Rc::clone(shard),
            metrics_listener,
            metrics::serve,
        ));
    }
    reactor::spawn(retention_loop(Rc::clone(shard)));
    reactor::spawn(group::expire_idle_groups(Rc::clone(shard)));
    tracing::debug!(
        shard = shard.id,
        defer_taskrun = reactor::features().defer_taskrun,
        "shard serving"
    );
}

/// Accepts connections on `listener` and serves each with `serve` (the native protocol's or
/// the Kafka protocol's), within the server's connection limit.
async fn accept_loop<F, S>(shard: Rc<Shard>, listener: TcpListener, serve: S)
where
    S: Fn(Rc<Shard>, TcpStream) -> F,
    F: Future<Output = ()> + 'static,
{
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let Some(guard) =
                    ConnectionCount::reserve(&shard.connections, shard.config.connections_max)
                else {
                    tracing::warn!(
                        connections_max = shard.config.connections_max,
                        "refusing connection: too many open"
                    );
                    drop(stream);
                    continue;
                };
                let served = serve(Rc::clone(&shard), stream);
                reactor::spawn(async move {
                    let _guard = guard;
                    served.await;
                });
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Decrements the connection count when the connection task ends or is dropped.
struct ConnectionCount(Arc<AtomicUsize>);

impl ConnectionCount {
    /// Counts one more connection unless `connections_max` are open. One step (compare and
    /// swap): every shard accepts at once, and a load followed by an increment would let each
    /// of them take the last place.
    fn reserve(connections: &Arc<AtomicUsize>, connections_max: usize) -> Option<Self> {
        connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < connections_max).then_some(open + 1)
            })
            .ok()?;
        Some(Self(Arc::clone(connections)))
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn retention_loop(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.retention_check_interval_ms);
    loop {
        time::sleep(interval).await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        shard.apply_retention(now_ms).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_accepting_at_once_never_pass_the_connection_limit() {
        const CONNECTIONS_MAX: usize = 5;
        let connections = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(std::sync::Barrier::new(4));
        let reserved: Vec<Vec<ConnectionCount>> = (0..4)
            .map(|_| {
                let (connections, start) = (Arc::clone(&connections), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    (0..1000)
                        .filter_map(|_| ConnectionCount::reserve(&connections, CONNECTIONS_MAX))
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().expect("reserving thread"))
            .collect();
        let total: usize = reserved.iter().map(Vec::len).sum();
        assert_eq!(total, CONNECTIONS_MAX);
        assert_eq!(connections.load(Ordering::Relaxed), CONNECTIONS_MAX);
        drop(reserved);
        assert_eq!(connections.load(Ordering::Relaxed), 0);
        assert!(ConnectionCount::reserve(&connections, CONNECTIONS_MAX).is_some());
    }
}
