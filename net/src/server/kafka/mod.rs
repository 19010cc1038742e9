//! The Kafka wire protocol front door: a listener per shard (SO_REUSEPORT, beside the native
//! one) that existing Kafka clients (librdkafka, the Java client, kafka-python) use unchanged.
//!
//! Every request and response is decoded and encoded with the `kafka-protocol` crate; this
//! module adds only the i32 size prefix. The handlers share the native server's building
//! blocks ([`super::routing`], [`super::partition_ops`], the shard's catalog), so topics,
//! partitions and offsets are one store whichever protocol wrote them. Record batches are
//! RecordBatch v2 on both sides and travel as the producer sent them.
//!
//! The server looks like a one-broker cluster: node 0 at the Kafka listener's address leads
//! every partition.
//!
//! - [`connection`]: framing, bounded in-flight requests, responses in request order.
//! - [`dispatch`]: request header, version checks, routing to the api handlers.
//! - [`versions`]: the supported apis and versions (what ApiVersions advertises).
//! - [`codec`]: response envelopes; [`errors`]: ringlog error codes as Kafka error codes;
//!   [`splice`]: fetch responses that send large record sets from where they are stored.
//! - One module per api group: [`cluster`] (ApiVersions, Metadata, DescribeCluster),
//!   [`produce`] (Produce, InitProducerId), [`fetch`] (Fetch, ListOffsets), [`topics`]
//!   (CreateTopics, DeleteTopics, DescribeConfigs), [`groups`] (FindCoordinator, JoinGroup,
//!   SyncGroup, Heartbeat, LeaveGroup), [`offsets`] (OffsetCommit, OffsetFetch) and
//!   [`group_admin`] (ListGroups, DescribeGroups, DeleteGroups), all on the native group
//!   coordinator.

mod cluster;
mod codec;
mod connection;
mod consumer_protocol;
mod dispatch;
mod errors;
mod fetch;
mod group_admin;
mod groups;
mod offsets;
mod produce;
mod share;
mod splice;
mod topics;
mod versions;

use std::net::SocketAddr;
use std::rc::Rc;

use ringlog_engine::reactor::tcp::TcpStream;

use super::shard::Shard;

/// The Kafka node id of this server: the only broker of its one-node cluster.
pub(crate) const NODE_ID: i32 = 0;

/// The cluster id reported to Kafka clients (they only compare it between brokers).
pub(crate) const CLUSTER_ID: &str = "ringlog";

/// Per-shard state of the Kafka front door.
pub(crate) struct KafkaShard {
    pub(crate) shard: Rc<Shard>,
    /// The Kafka listener's address (with the real port when 0 was asked).
    listen_addr: SocketAddr,
}

impl KafkaShard {
    /// Front door state for `shard`, listening on `listen_addr`.
    pub(crate) fn new(shard: Rc<Shard>, listen_addr: SocketAddr) -> Rc<KafkaShard> {
        Rc::new(KafkaShard { shard, listen_addr })
    }

    /// The address advertised for node 0 to a client on `stream`: the listener's address, or
    /// the address the client reached when the listener is bound to every interface.
    fn advertised_addr(&self, stream: &TcpStream) -> SocketAddr {
        if !self.listen_addr.ip().is_unspecified() {
            return self.listen_addr;
        }
        match stream.local_addr() {
            Ok(local) => SocketAddr::new(local.ip(), self.listen_addr.port()),
            Err(_) => self.listen_addr,
        }
    }
}

/// Serves one Kafka client connection until it closes or breaks the protocol.
pub(crate) async fn serve(kafka: Rc<KafkaShard>, stream: TcpStream) {
    let advertised = kafka.advertised_addr(&stream);
    connection::serve(kafka, stream, advertised).await;
}
