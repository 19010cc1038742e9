//! Waiting on several connections at once: the first to have a response to read.
//!
//! A consumer of partitions on several shards keeps one connection per shard, each with its
//! fetch in flight (see [`super::Consumer`]); it handles whichever answers first, so that a
//! shard with nothing to send (a long poll) does not hold up the others. Connections that are
//! ready together are taken in turn, so one that always has data does not starve the rest
//! (its shard would stop sending once the socket buffer is full).

use std::time::{Duration, Instant};

use super::connection::Connection;
use super::error::ClientError;

/// Connections one wait may watch: a server's shard count bounds a consumer's connections.
pub const SELECT_CONNECTIONS_MAX: usize = 1024;

/// Waits for the first of several connections to have a response to read. Reused between
/// waits: it allocates only when it watches more connections than ever before.
#[derive(Debug, Default)]
pub struct ResponseSelect {
    fds: Vec<libc::pollfd>,
    /// Index (in the caller's order) of each watched connection in `fds`.
    indexes: Vec<usize>,
    /// Indexes of the connections found ready by the current wait.
    ready: Vec<usize>,
    /// Where the next search for a ready connection starts (turns among ready ones).
    turn: usize,
}

impl ResponseSelect {
    /// A select that watches nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits up to `timeout` until one of `connections` (`None`: not watched) has a response
    /// to read, and returns its index; `None` when the time passed first (with nothing
    /// watched, after `timeout`, as poll(2) does). A connection is ready when receiving starts
    /// without waiting: a response is buffered whole, its socket is readable (data, end of
    /// stream or an error, which receiving then reports), or it is broken already. Receiving
    /// from a ready connection may still wait for the rest of a response that is on its way,
    /// or for another response when what arrived answers an abandoned request.
    pub fn wait<'a>(
        &mut self,
        connections: impl IntoIterator<Item = Option<&'a Connection>>,
        timeout: Duration,
    ) -> Result<Option<usize>, ClientError> {
        self.fds.clear();
        self.indexes.clear();
        self.ready.clear();
        for (index, connection) in connections.into_iter().enumerate() {
            let Some(connection) = connection else {
                continue;
            };
            if self.indexes.len() == SELECT_CONNECTIONS_MAX {
                return Err(ClientError::InvalidArgument(format!(
                    "cannot wait on more than {SELECT_CONNECTIONS_MAX} connections at once"
                )));
            }
            if connection.has_buffered_response() {
                self.ready.push(index);
            }
            self.indexes.push(index);
            self.fds.push(libc::pollfd {
                fd: connection.receive_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if self.ready.is_empty() {
            self.poll(timeout)?;
            let readable = self.fds.iter().zip(&self.indexes);
            self.ready.extend(
                readable
                    .filter(|(fd, _)| fd.revents != 0)
                    .map(|(_, &index)| index),
            );
        }
        Ok(self.take_turn())
    }

    /// poll(2) on `fds` until one is ready or `timeout` passed (`revents` all zero then).
    fn poll(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Rounded up, so a wait is never cut short into a busy loop of zero timeouts.
            let left_ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let count = self.fds.len() as libc::nfds_t;
            // SAFETY: `fds` is a live, exclusively borrowed slice of `count` initialised
            // pollfd structures; poll(2) writes only their `revents` fields.
            let ready = unsafe { libc::poll(self.fds.as_mut_ptr(), count, left_ms) };
            if ready >= 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error.into());
            }
            for fd in &mut self.fds {
                fd.revents = 0;
            }
        }
    }

    /// The first of the ready connections (ascending indexes) at or after the turn, wrapping
    /// around; the turn moves past it. `None` when none is ready.
    fn take_turn(&mut self) -> Option<usize> {
        let first = *self.ready.first()?;
        let chosen = self
            .ready
            .iter()
            .copied()
            .find(|&index| index >= self.turn)
            .unwrap_or(first);
        self.turn = chosen + 1;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake_server::{Behaviour, FakeServer};
    use crate::client::{Client, Connection};
    use crate::message::metadata;

    fn connect(server: &FakeServer) -> Connection {
        Client::connect(server.addr).unwrap().into_connection()
    }

    fn ask(connection: &mut Connection) -> u32 {
        connection
            .send(&metadata::Request { topics: &["t"] })
            .unwrap()
    }

    #[test]
    fn the_answered_connection_is_ready_and_ready_ones_take_turns() {
        let server = FakeServer::start("t", 1, Behaviour::default());
        let mut first = connect(&server);
        let mut second = connect(&server);
        let mut select = ResponseSelect::new();
        let short = Duration::from_millis(20);
        assert_eq!(
            select.wait([None, None], short).unwrap(),
            None,
            "nothing watched"
        );
        assert_eq!(
            select.wait([Some(&first), Some(&second)], short).unwrap(),
            None,
            "nothing asked, nothing ready"
        );
        let asked = ask(&mut second);
        let ready = select.wait([Some(&first), Some(&second)], Duration::from_secs(10));
        assert_eq!(ready.unwrap(), Some(1));
        second.receive(asked).unwrap();

        // Both answered (each waited for alone first), the turn past both: it wraps round.
        let long = Duration::from_secs(10);
        let (a, b) = (ask(&mut first), ask(&mut second));
        assert_eq!(select.wait([Some(&first), None], long).unwrap(), Some(0));
        assert_eq!(select.wait([None, Some(&second)], long).unwrap(), Some(1));
        assert_eq!(
            select.wait([Some(&first), Some(&second)], long).unwrap(),
            Some(0)
        );
        first.receive(a).unwrap();
        // The first is answered again; the turn is past it, so the second goes first.
        let a = ask(&mut first);
        assert_eq!(select.wait([Some(&first), None], long).unwrap(), Some(0));
        assert_eq!(
            select.wait([Some(&first), Some(&second)], long).unwrap(),
            Some(1)
        );
        second.receive(b).unwrap();
        assert_eq!(
            select.wait([Some(&first), Some(&second)], long).unwrap(),
            Some(0)
        );
        first.receive(a).unwrap();
    }
}
