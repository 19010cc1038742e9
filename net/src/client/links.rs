//! [`Links`]: a reading client's connections to one server, one per shard that owns some of
//! the partitions it reads, the first the home connection. They are connected again after a
//! failure (on the [`ReconnectSchedule`]) and the partitions routed to the connection of their
//! shard, for the [`super::Consumer`] and the [`super::ShareConsumer`] alike; what each keeps
//! per connection, and which partitions it routes, stay theirs ([`LinkState`],
//! [`RoutesOverLinks`]).

use std::net::SocketAddr;
use std::ops::{Index, IndexMut};
use std::time::Instant;

use super::backoff::ReconnectSchedule;
use super::calls::{Client, CLIENT_NAME, CLIENT_VERSION};
use super::connection::ConnectionConfig;
use super::error::ClientError;

/// What a client keeps per link besides the connection.
pub(super) trait LinkState: Default {
    /// The connection failed: what was on its way over it will not be answered.
    fn forget_in_flight(&mut self);
}

/// A link that carries nothing of its own across calls.
impl LinkState for () {
    fn forget_in_flight(&mut self) {}
}

/// One connection of a client, and what the client keeps with it.
#[derive(Debug)]
pub(super) struct Link<S> {
    /// The server's shard this connection was steered to, or that the home connection was
    /// found on; `None` for a home connection not asked yet (wherever it landed).
    shard: Option<u16>,
    /// The connection.
    pub(super) client: Client,
    /// The client's own per-link state.
    pub(super) state: S,
    /// The connection failed (or an answer did not come in time): it waits to be replaced by
    /// a new one.
    failed: bool,
}

impl<S: LinkState> Link<S> {
    /// A link over `client`, steered to `shard` (`None`: the home connection).
    pub(super) fn new(shard: Option<u16>, client: Client) -> Self {
        Self {
            shard,
            client,
            state: S::default(),
            failed: false,
        }
    }
}

impl<S> Link<S> {
    /// Whether the connection can still carry requests.
    pub(super) fn is_up(&self) -> bool {
        !self.failed && self.client.connection_ref().broken().is_none()
    }
}

/// A client's connections to one server: the home connection first (it lands on whichever
/// shard accepts it, and serves Metadata), then one per other shard its items are routed to.
#[derive(Debug)]
pub(super) struct Links<S> {
    /// Never empty: the home link is first, and stays first.
    links: Vec<Link<S>>,
    /// The server's addresses, resolved once: a failed home connection is made again to them.
    addrs: Vec<SocketAddr>,
    /// Settings of every connection made.
    connection: ConnectionConfig,
    /// When failed links are connected again (and the items routed again).
    reconnect: ReconnectSchedule,
    /// Whether the items' link indexes follow the current links (set by [`Links::route`]).
    routed: bool,
    /// The server's shard count, as last asked (ApiVersions).
    shard_count: u16,
}

impl<S: LinkState> Links<S> {
    /// Makes the home connection to `addrs`; the items are not routed yet.
    pub(super) fn connect(
        addrs: Vec<SocketAddr>,
        connection: ConnectionConfig,
        reconnect: ReconnectSchedule,
    ) -> Result<Self, ClientError> {
        let client = Client::connect_with(addrs.as_slice(), connection)?;
        Ok(Self {
            links: vec![Link::new(None, client)],
            addrs,
            connection,
            reconnect,
            routed: false,
            shard_count: 1,
        })
    }

    /// Replaces the home connection with a new one when it failed; returns whether it did.
    /// The items must be routed again: the new connection may land on another shard.
    pub(super) fn reconnect_home(&mut self) -> Result<bool, ClientError> {
        if self.links[0].is_up() {
            return Ok(false);
        }
        let client = Client::connect_with(self.addrs.as_slice(), self.connection)?;
        self.links[0] = Link::new(None, client);
        self.routed = false;
        Ok(true)
    }

    /// Link indexes of the items whose owning shards are `owners` (in the same order): the
    /// link to each one's shard when they are spread over several shards (keeping the links
    /// to those shards, connecting to shards not connected yet, dropping links no longer
    /// needed), else the home link, the only one kept. On failure every link stays, `routed`
    /// is left as it was, and the error is returned.
    pub(super) fn route(&mut self, owners: &[u16]) -> Result<Vec<usize>, ClientError> {
        let spread = owners.windows(2).any(|pair| pair[0] != pair[1]);
        if !spread {
            self.links.truncate(1);
            self.routed = true;
            return Ok(vec![0; owners.len()]);
        }
        let mut kept = vec![self.links.swap_remove(0)];
        let outcome = self.route_to_shards(&mut kept, owners);
        if outcome.is_err() {
            // Nothing is lost: every link stays, and the next rebuild routes again.
            kept.append(&mut self.links);
        } else {
            self.routed = true;
        }
        // Links to shards no longer needed close here, with anything on its way over them
        // (their items moved to other links).
        self.links = kept;
        outcome
    }

    /// Routes each item to the link of its shard (`owners`), moving links from `self.links`
    /// to `kept` (which holds the home link) or connecting new ones.
    fn route_to_shards(
        &mut self,
        kept: &mut Vec<Link<S>>,
        owners: &[u16],
    ) -> Result<Vec<usize>, ClientError> {
        self.find_home_shard(&mut kept[0])?;
        owners
            .iter()
            .map(|&shard| self.link_to(kept, shard))
            .collect()
    }

    /// Asks `home` which shard serves it (ApiVersions, which also tells the shard count new
    /// connections are steered with), once per connection: neither changes while it is up.
    fn find_home_shard(&mut self, home: &mut Link<S>) -> Result<(), ClientError> {
        if home.shard.is_some() {
            return Ok(());
        }
        let info = home.client.api_versions(CLIENT_NAME, CLIENT_VERSION)?;
        home.shard = Some(info.connection_shard);
        self.shard_count = info.shard_count;
        Ok(())
    }

    /// The index in `kept` of the link to `shard`: one kept already, else one taken from
    /// `self.links`, else a new connection steered to it.
    fn link_to(&mut self, kept: &mut Vec<Link<S>>, shard: u16) -> Result<usize, ClientError> {
        if let Some(index) = kept.iter().position(|link| link.shard == Some(shard)) {
            return Ok(index);
        }
        let link = match self.links.iter().position(|link| link.shard == Some(shard)) {
            Some(index) => self.links.swap_remove(index),
            None => Link::new(
                Some(shard),
                Client::connect_to_shard(
                    &kept[0].client,
                    shard,
                    self.shard_count,
                    self.connection,
                )?,
            ),
        };
        kept.push(link);
        Ok(kept.len() - 1)
    }
}

impl<S> Links<S> {
    /// The items must be routed again before the next fetch (their shards may have moved).
    pub(super) fn invalidate_routing(&mut self) {
        self.routed = false;
    }

    /// Sets when failed links are connected again, unless a time is set already (links that
    /// fail together count as one failure of the backoff).
    fn schedule_rebuild(&mut self) {
        self.reconnect.failed(Instant::now());
    }

    /// Whether links must be connected again or the items routed, and may be now.
    pub(super) fn rebuild_due(&self) -> bool {
        self.rebuild_needed() && self.reconnect.is_due(Instant::now())
    }

    /// Whether links must be connected again or the items routed, now or after the backoff.
    pub(super) fn rebuild_needed(&self) -> bool {
        !self.routed || self.links.iter().any(|link| !link.is_up())
    }

    /// When a needed rebuild waits for its backoff, the time it may be made.
    pub(super) fn rebuild_at(&self) -> Option<Instant> {
        self.reconnect.at().filter(|_| self.rebuild_needed())
    }

    /// A connection answered: the next failure waits the first backoff.
    pub(super) fn connection_worked(&mut self) {
        self.reconnect.succeeded();
    }

    /// How many links there are (at least one: the home link).
    pub(super) fn len(&self) -> usize {
        self.links.len()
    }

    /// The links, the home link first.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, Link<S>> {
        self.links.iter()
    }

    /// The links, the home link first, to change their state.
    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, Link<S>> {
        self.links.iter_mut()
    }

    /// Link `index`, if there is one.
    pub(super) fn get(&self, index: usize) -> Option<&Link<S>> {
        self.links.get(index)
    }

    /// Link `index`, if there is one, to change.
    pub(super) fn get_mut(&mut self, index: usize) -> Option<&mut Link<S>> {
        self.links.get_mut(index)
    }

    /// Adds a link, as a test routing by hand does.
    #[cfg(test)]
    pub(super) fn push(&mut self, link: Link<S>) {
        self.links.push(link);
    }

    /// Takes the items as routed, as a test routing by hand does.
    #[cfg(test)]
    pub(super) fn set_routed(&mut self) {
        self.routed = true;
    }
}

impl<S> Index<usize> for Links<S> {
    type Output = Link<S>;

    /// Link `index` (0: the home link); panics when there is none, as a slice does.
    fn index(&self, index: usize) -> &Link<S> {
        &self.links[index]
    }
}

impl<S> IndexMut<usize> for Links<S> {
    /// Link `index` (0: the home link), to change; panics when there is none.
    fn index_mut(&mut self, index: usize) -> &mut Link<S> {
        &mut self.links[index]
    }
}

/// A client that reads over [`Links`] and routes its items (partitions) to them: what taking
/// a link's failure and rebuilding the links need of it. Its log lines are its own.
pub(super) trait RoutesOverLinks {
    /// What the client keeps per link.
    type State: LinkState;

    /// The client's links.
    fn links_mut(&mut self) -> &mut Links<Self::State>;

    /// Asks the server where the items live and routes them with [`Links::route`]. Link
    /// indexes set before are void (failed links were dropped): until routed, every item goes
    /// over the home link.
    fn route_items(&mut self) -> Result<(), ClientError>;

    /// Logs that the connection of a link (steered to `shard`) failed, once per failure.
    fn log_link_failed(&self, error: &ClientError, shard: Option<u16>);

    /// Logs that connecting again failed, to be tried again after the backoff.
    fn log_rebuild_failed(&self, error: &ClientError);

    /// Takes the failure of a request on link `index`. When the connection failed, the link
    /// forgets what was on its way and is marked to be connected again after the backoff
    /// (logged once per failure); any other error is returned.
    fn link_failed(&mut self, index: usize, error: ClientError) -> Result<(), ClientError> {
        let Some(link) = self.links_mut().links.get_mut(index) else {
            return Err(error);
        };
        if !error.is_connection_failure() && link.is_up() {
            return Err(error);
        }
        link.state.forget_in_flight();
        if !link.failed {
            link.failed = true;
            let shard = link.shard;
            self.log_link_failed(&error, shard);
        }
        self.links_mut().schedule_rebuild();
        Ok(())
    }

    /// Connects failed links again and routes the items (again: a restarted server may have
    /// another shard count). A connection failure is logged and tried again after the
    /// backoff, meanwhile the links that work go on; other errors are returned.
    fn rebuild(&mut self) -> Result<(), ClientError> {
        self.links_mut().reconnect.attempting();
        match reconnect_and_route(self) {
            Ok(()) => Ok(()),
            Err(error) if error.is_connection_failure() || !self.links_mut()[0].is_up() => {
                self.log_rebuild_failed(&error);
                self.links_mut().schedule_rebuild();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// Connects the home link again if it failed, drops the other failed links and routes the
/// items, which connects their shards again.
fn reconnect_and_route<C: RoutesOverLinks + ?Sized>(client: &mut C) -> Result<(), ClientError> {
    let fresh = client.links_mut().reconnect_home()?;
    // The home link is up now, and stays first.
    client.links_mut().links.retain(Link::is_up);
    match client.route_items() {
        // The home link had failed unnoticed (nothing had gone over it since).
        Err(_) if !fresh && !client.links_mut()[0].is_up() => {
            client.links_mut().reconnect_home()?;
            client.route_items()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::client::fake_server::{Behaviour, FakeServer};

    /// A link state that says whether something is on its way.
    #[derive(Debug, Default)]
    struct Sent(bool);

    impl LinkState for Sent {
        fn forget_in_flight(&mut self) {
            self.0 = false;
        }
    }

    /// A reader of items all on one shard, counting its routings and log lines.
    struct Reader {
        links: Links<Sent>,
        routings: usize,
        failures_logged: Cell<usize>,
        rebuild_failures_logged: Cell<usize>,
    }

    impl RoutesOverLinks for Reader {
        type State = Sent;

        fn links_mut(&mut self) -> &mut Links<Sent> {
            &mut self.links
        }

        fn route_items(&mut self) -> Result<(), ClientError> {
            self.routings += 1;
            self.links.route(&[]).map(drop)
        }

        fn log_link_failed(&self, _error: &ClientError, _shard: Option<u16>) {
            self.failures_logged.set(self.failures_logged.get() + 1);
        }

        fn log_rebuild_failed(&self, _error: &ClientError) {
            self.rebuild_failures_logged
                .set(self.rebuild_failures_logged.get() + 1);
        }
    }

    fn connect<S: LinkState>(addr: SocketAddr) -> Links<S> {
        let reconnect = ReconnectSchedule::from_ms(1, 10);
        Links::connect(vec![addr], ConnectionConfig::default(), reconnect).unwrap()
    }

    #[test]
    fn a_failure_is_logged_once_forgets_what_was_sent_and_is_made_again() {
        let server = FakeServer::start("t", 1, Behaviour::default());
        let mut reader = Reader {
            links: connect(server.addr),
            routings: 0,
            failures_logged: Cell::new(0),
            rebuild_failures_logged: Cell::new(0),
        };
        assert!(reader.links.rebuild_needed(), "nothing is routed yet");
        reader.rebuild().unwrap();
        assert_eq!(reader.routings, 1);
        assert!(!reader.links.rebuild_needed());
        // An error that is not the connection's is the caller's.
        let refused = ClientError::InvalidArgument("no".to_owned());
        assert!(reader.link_failed(0, refused).is_err());
        assert!(reader.links[0].is_up());

        reader.links[0].state = Sent(true);
        reader.link_failed(0, ClientError::Disconnected).unwrap();
        reader.link_failed(0, ClientError::Disconnected).unwrap();
        assert_eq!(reader.failures_logged.get(), 1, "one failure, one line");
        assert!(!reader.links[0].state.0, "its answer will not come");
        assert!(!reader.links[0].is_up());
        assert!(reader.links.rebuild_needed());
        assert!(reader.links.rebuild_at().is_some(), "after the backoff");

        reader.rebuild().unwrap();
        assert!(reader.links[0].is_up(), "a new home connection");
        assert!(!reader.links.rebuild_needed());
        assert_eq!(reader.routings, 2);
        assert_eq!(reader.rebuild_failures_logged.get(), 0);
    }

    #[test]
    fn items_go_over_one_link_per_shard_and_over_the_home_link_on_one_shard() {
        let dir = tempfile::tempdir().unwrap();
        let server = crate::server::Server::start(crate::server::ServerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(2),
            cache_bytes_per_shard: 8 << 20,
            ..crate::server::ServerConfig::default()
        })
        .unwrap();
        let mut links: Links<()> = connect(server.local_addr());
        let owners = [1, 0, 0, 1];
        let link_of = links.route(&owners).unwrap();
        assert_eq!(links.len(), 2, "one link per shard");
        for (&owner, &index) in owners.iter().zip(&link_of) {
            assert_eq!(links[index].shard, Some(owner));
        }
        assert!(!links.rebuild_needed());
        // Routed again, the items stay on their links.
        assert_eq!(links.route(&owners).unwrap(), link_of);
        links.invalidate_routing();
        assert!(links.rebuild_needed());
        assert_eq!(links.route(&[1, 1, 1]).unwrap(), [0, 0, 0]);
        assert_eq!(links.len(), 1, "the home link alone serves one shard");
        assert!(!links.rebuild_needed());
        server.shutdown();
    }
}
