//! The producer's connection as its two I/O threads share it.
//!
//! A connection that fails (the server restarted or was killed, a socket error, a request
//! unanswered past the request timeout) is not the producer's end, as in Kafka's clients:
//! its requests go back to their partitions' queues (see
//! [`super::accumulator::Accumulator::lose_connection`]) and the sender connects again, first
//! `reconnect_backoff_ms` after the failure, then at doubling intervals up to
//! `reconnect_backoff_max_ms`. Each connection has a generation number, so a failure one
//! thread reports for a connection the other has already replaced is ignored.
//!
//! A topic whose partitions all live on one shard of several is produced to over a connection
//! steered to that shard ([`Steer`]), at first and after each reconnect.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Instant;

use crate::client::backoff::Backoff;
use crate::client::calls::TopicMetadata;
use crate::client::connection::{Connection, ConnectionConfig, FrameReader};
use crate::client::error::ClientError;

/// The shard that owns every partition of the producer's topic, as Metadata said at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steer {
    /// The owning shard.
    pub(crate) shard: u16,
    /// The server's shard count, which the steering needs.
    pub(crate) shard_count: u16,
}

impl Steer {
    /// A connection to `addrs` served by the shard (anywhere, when no port of its class is
    /// free: produce then still works, a hop between shards dearer).
    pub(crate) fn connect(
        self,
        addrs: &[SocketAddr],
        config: ConnectionConfig,
    ) -> Result<Connection, ClientError> {
        Connection::connect_to_shard(addrs, self.shard, self.shard_count, config)
    }
}

/// The shard owning every partition of `topic` in `topics`, if one does.
pub(crate) fn single_owner(topics: &[TopicMetadata], topic: &str) -> Option<u16> {
    let metadata = topics.iter().find(|t| t.name == topic)?;
    let first = metadata.partitions.first()?.shard;
    metadata
        .partitions
        .iter()
        .all(|info| info.shard == first)
        .then_some(first)
}

/// The current connection, or when to try the next.
#[derive(Debug)]
pub(crate) struct Link {
    /// Counts connections made; the first is 1 (0 before it).
    generation: u64,
    /// The current connection's reader until the receiver thread takes it.
    reader: Option<FrameReader>,
    /// The current connection's socket, shut down to end both threads' blocking I/O on it.
    stream: Option<TcpStream>,
    down: Option<Down>,
    backoff: Backoff,
}

/// A connection that failed and is not yet replaced.
#[derive(Debug)]
struct Down {
    /// Why the last connection (or connection attempt) failed.
    error: ClientError,
    /// Connect again from then on.
    retry_at: Instant,
}

impl Link {
    /// No connection yet: [`Link::connected`] gives the first. Attempts to connect again
    /// wait `backoff_ms`, doubling up to `backoff_max_ms` while they fail.
    pub(crate) fn new(backoff_ms: u64, backoff_max_ms: u64) -> Link {
        Link {
            generation: 0,
            reader: None,
            stream: None,
            down: None,
            backoff: Backoff::from_ms(backoff_ms, backoff_max_ms),
        }
    }

    /// The current connection's number.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// When the sender should connect again; `None` while connected.
    pub(crate) fn reconnect_at(&self) -> Option<Instant> {
        self.down.as_ref().map(|down| down.retry_at)
    }

    /// Why the connection is down, while it is.
    pub(crate) fn down_error(&self) -> Option<&ClientError> {
        self.down.as_ref().map(|down| &down.error)
    }

    /// Marks connection `generation` failed with `error`; the next attempt is due after the
    /// first backoff. Returns false when that connection was already replaced or marked (the
    /// other thread saw the failure first). Shuts its socket down, so that the other thread's
    /// blocking read or write on it ends now.
    pub(crate) fn fail(&mut self, generation: u64, error: ClientError, now: Instant) -> bool {
        if generation != self.generation || self.down.is_some() {
            return false;
        }
        self.shutdown();
        self.reader = None;
        self.stream = None;
        self.backoff.reset();
        self.down = Some(Down {
            error,
            retry_at: now + self.backoff.next(),
        });
        true
    }

    /// A connection attempt failed: the next waits twice as long as this one did, up to
    /// the maximum.
    pub(crate) fn attempt_failed(&mut self, error: ClientError, now: Instant) {
        let Some(down) = &mut self.down else {
            return;
        };
        down.retry_at = now + self.backoff.next();
        down.error = error;
    }

    /// The first connection, or a new one replacing the failed one (`reader` for the
    /// receiver, `stream` its socket); returns its generation.
    pub(crate) fn connected(&mut self, reader: FrameReader, stream: TcpStream) -> u64 {
        assert!(
            self.generation == 0 || self.down.is_some(),
            "only a failed connection is replaced"
        );
        self.generation += 1;
        self.reader = Some(reader);
        self.stream = Some(stream);
        self.down = None;
        self.generation
    }

    /// The current connection's reader and generation, once: for the receiver thread.
    pub(crate) fn take_reader(&mut self) -> Option<(u64, FrameReader)> {
        self.reader.take().map(|reader| (self.generation, reader))
    }

    /// Shuts the current socket down (already closed is fine).
    pub(crate) fn shutdown(&self) {
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn attempts_back_off_doubling_up_to_the_maximum_and_stale_failures_are_ignored() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut link = Link::new(50, 300);
        assert_eq!(link.reconnect_at(), None);
        assert!(link.fail(0, ClientError::Disconnected, now));
        assert!(!link.fail(0, ClientError::Disconnected, now));
        assert_eq!(link.reconnect_at(), Some(now + ms(50)));
        let steps: Vec<Option<Instant>> = (0..6)
            .map(|_| {
                link.attempt_failed(ClientError::Disconnected, now);
                link.reconnect_at()
            })
            .collect();
        let expected: Vec<Option<Instant>> = [100, 200, 300, 300, 300, 300]
            .iter()
            .map(|&wait| Some(now + ms(wait)))
            .collect();
        assert_eq!(steps, expected);
        assert!(matches!(link.down_error(), Some(ClientError::Disconnected)));
    }
}
