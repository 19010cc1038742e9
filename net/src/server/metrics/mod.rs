//! The metrics endpoint: Prometheus scrapes `GET /metrics` over HTTP/1.1 on `metrics_listen`.
//!
//! Every shard listens on that address (SO_REUSEPORT) like the other listeners. The shard that
//! accepts a scrape asks every shard, itself included, for a [`ShardMetrics`] through the usual
//! shard call, then writes one body in the text format ([`exposition`]) and closes the
//! connection. Nothing is kept between scrapes and the data path only counts requests (a
//! `Cell` increment per request, see [`counters`]); everything else is read at scrape time.
//!
//! Families (labels in braces):
//! - `ringlog_up`, `ringlog_shards`, `ringlog_connections`: the server;
//! - `ringlog_requests_total`, `ringlog_request_errors_total` {shard, protocol, api};
//! - `ringlog_partition_log_start_offset`, `_high_watermark`, `_size_bytes` (gauges) and
//!   `_appended_batches_total`, `_appended_bytes_total`, `_writes_total`, `_syncs_total`,
//!   `_io_failures_total`, `_segment_rolls_total`, `_reads_total` {source: memory|disk}
//!   (counters since the partition was opened) {topic, partition, shard};
//! - `ringlog_group_committed_offset`, `ringlog_group_lag` {group, topic, partition}:
//!   consumer groups, lag in records up to the high watermark;
//! - `ringlog_share_group_start_offset`, `_in_flight_records`, `_acquired_records`, `_lag`
//!   {group, topic, partition}: share groups;
//! - `ringlog_shard_read_ahead_extents`, `_extents_max` {shard}.

mod counters;
mod exposition;
mod snapshot;

use std::rc::Rc;
use std::time::Duration;

use ringlog_engine::reactor::tcp::TcpStream;
use ringlog_engine::reactor::time;

pub(crate) use counters::RequestCounts;
use exposition::{Exposition, Kind, CONTENT_TYPE};
pub(crate) use snapshot::{snapshot, ShardMetrics};

use super::message::{ShardCall, ShardReturn};
use super::shard::Shard;

/// Largest request head (request line and headers) accepted; scrapers send a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// Headers parsed at most.
const HEADERS_MAX: usize = 64;
/// How long a client may take to send its request before the connection is closed.
const REQUEST_TIME_MAX: Duration = Duration::from_secs(10);
/// The one path served.
const METRICS_PATH: &str = "/metrics";
/// After refusing a request, what the client may still send is read and dropped for this long
/// and up to this many bytes, so that closing does not reset the connection before the client
/// has read the refusal.
const DRAIN_TIME_MAX: Duration = Duration::from_secs(1);
const DRAIN_BYTES_MAX: usize = 64 << 10;

/// Why a request gets no metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    Malformed,
}

impl Refusal {
    fn status_line(self) -> &'static str {
        match self {
            Refusal::NotFound => "404 Not Found",
            Refusal::MethodNotAllowed => "405 Method Not Allowed",
            Refusal::HeadTooLarge => "431 Request Header Fields Too Large",
            Refusal::Malformed => "400 Bad Request",
        }
    }
}

/// A request for the metrics, or for their headers only (HEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MetricsRequest {
    head_only: bool,
}

/// Serves one HTTP connection: one request, one response, then close.
pub(crate) async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let outcome = time::timeout(REQUEST_TIME_MAX, read_request(&stream)).await;
    let refused = matches!(outcome, Ok(Some(Err(_))));
    let response = match outcome {
        // Gone or silent: nobody to answer.
        Err(_) | Ok(None) => return,
        Ok(Some(Err(refusal))) => refusal_response(refusal),
        Ok(Some(Ok(request))) => {
            let body = scrape(&shard).await;
            response(
                "200 OK",
                CONTENT_TYPE,
                body.as_bytes(),
                request.head_only,
                "",
            )
        }
    };
    let len = response.len();
    let (result, _) = stream.send_all(response, 0..len, usize::MAX).await;
    if let Err(error) = result {
        tracing::debug!(%error, "metrics response not sent");
        return;
    }
    if refused {
        stream.shutdown_write();
        let _ = time::timeout(DRAIN_TIME_MAX, drain(&stream)).await;
    }
}

/// Reads and drops what the peer sends until it closes, up to [`DRAIN_BYTES_MAX`].
async fn drain(stream: &TcpStream) {
    let mut buf = Vec::with_capacity(4 << 10);
    let mut drained = 0;
    // Bounded: every round reads at least one byte, up to DRAIN_BYTES_MAX in all.
    while drained < DRAIN_BYTES_MAX {
        buf.clear();
        let (received, returned) = stream.recv(buf).await;
        buf = returned;
        match received {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Reads a request head; `None` when the peer closed or failed first.
async fn read_request(stream: &TcpStream) -> Option<Result<MetricsRequest, Refusal>> {
    let mut buf = Vec::with_capacity(REQUEST_BYTES_MAX);
    // Bounded: every round receives at least one byte into a buffer of fixed capacity.
    loop {
        if buf.len() >= REQUEST_BYTES_MAX {
            return Some(Err(Refusal::HeadTooLarge));
        }
        let (received, returned) = stream.recv(buf).await;
        buf = returned;
        match received {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if let Some(parsed) = parse_request(&buf) {
            return Some(parsed);
        }
    }
}

/// Routes a request head; `None` while it is incomplete.
fn parse_request(head: &[u8]) -> Option<Result<MetricsRequest, Refusal>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Err(Refusal::HeadTooLarge)),
        Err(_) => Some(Err(Refusal::Malformed)),
        Ok(httparse::Status::Complete(_)) => {
            let path = request.path.unwrap_or_default();
            let path = path.split_once('?').map_or(path, |(path, _query)| path);
            if path != METRICS_PATH {
                return Some(Err(Refusal::NotFound));
            }
            match request.method {
                Some("GET") => Some(Ok(MetricsRequest { head_only: false })),
                Some("HEAD") => Some(Ok(MetricsRequest { head_only: true })),
                _ => Some(Err(Refusal::MethodNotAllowed)),
            }
        }
    }
}

fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let allow = match refusal {
        Refusal::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    let body = format!(
        "{}: ringlog serves GET {METRICS_PATH} here\n",
        refusal.status_line()
    );
    response(
        refusal.status_line(),
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
        allow,
    )
}

/// A whole HTTP/1.1 response that closes the connection; `extra_headers` end in CRLF each.
fn response(
    status_line: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    extra_headers: &str,
) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n",
        body.len()
    );
    let mut response = head.into_bytes();
    if !head_only {
        response.extend_from_slice(body);
    }
    response
}

/// Asks every shard for its metrics and writes the body.
async fn scrape(shard: &Rc<Shard>) -> String {
    let mut shards = Vec::with_capacity(shard.shard_count);
    for target in 0..shard.shard_count {
        match shard.call(target, ShardCall::Metrics).await {
            ShardReturn::Metrics(metrics) => shards.push(*metrics),
            _ => tracing::warn!(
                target,
                "a shard answered the metrics call with something else"
            ),
        }
    }
    render(&shards, shard.connection_count())
}

/// The scrape body for every shard's metrics.
fn render(shards: &[ShardMetrics], connections: usize) -> String {
    let mut body = Exposition::default();
    body.family("ringlog_up", Kind::Gauge, "1 while the server serves.");
    body.sample("ringlog_up", &[], 1);
    body.family("ringlog_shards", Kind::Gauge, "Shard threads.");
    body.sample("ringlog_shards", &[], shards.len());
    body.family(
        "ringlog_connections",
        Kind::Gauge,
        "Open client connections, all protocols (metrics scrapes included).",
    );
    body.sample("ringlog_connections", &[], connections);
    render_requests(&mut body, shards);
    render_partitions(&mut body, shards);
    render_groups(&mut body, shards);
    render_shards(&mut body, shards);
    body.into_text()
}

fn render_requests(body: &mut Exposition, shards: &[ShardMetrics]) {
    type Field = fn(&counters::RequestCount) -> u64;
    let families: [(&str, &str, Field); 2] = [
        (
            "ringlog_requests_total",
            "Requests received, per shard, protocol and api.",
            |count| count.requests,
        ),
        (
            "ringlog_request_errors_total",
            "Requests answered with a request-level error (unsupported, malformed, failed).",
            |count| count.errors,
        ),
    ];
    for (name, help, field) in families {
        body.family(name, Kind::Counter, help);
        for shard in shards {
            let shard_id = shard.shard.to_string();
            for count in &shard.requests {
                let labels = [
                    ("shard", shard_id.as_str()),
                    ("protocol", count.protocol),
                    ("api", count.api.as_str()),
                ];
                body.sample(name, &labels, field(count));
            }
        }
    }
}

fn render_partitions(body: &mut Exposition, shards: &[ShardMetrics]) {
    type Field = fn(&snapshot::PartitionMetrics) -> i128;
    let families: [(&str, Kind, &str, Field); 9] = [
        (
            "ringlog_partition_log_start_offset",
            Kind::Gauge,
            "Oldest offset kept.",
            |p| p.log_start_offset.into(),
        ),
        (
            "ringlog_partition_high_watermark",
            Kind::Gauge,
            "Offset after the last record consumers can read.",
            |p| p.high_watermark.into(),
        ),
        (
            "ringlog_partition_size_bytes",
            Kind::Gauge,
            "Bytes of the partition's segments.",
            |p| p.size_bytes.into(),
        ),
        (
            "ringlog_partition_appended_batches_total",
            Kind::Counter,
            "Record batches appended since the partition was opened.",
            |p| p.stats.appends.into(),
        ),
        (
            "ringlog_partition_appended_bytes_total",
            Kind::Counter,
            "Bytes appended since the partition was opened.",
            |p| p.stats.appended_bytes.into(),
        ),
        (
            "ringlog_partition_writes_total",
            Kind::Counter,
            "Segment file writes completed since the partition was opened.",
            |p| p.stats.writes.into(),
        ),
        (
            "ringlog_partition_syncs_total",
            Kind::Counter,
            "fdatasyncs completed since the partition was opened.",
            |p| p.stats.syncs.into(),
        ),
        (
            "ringlog_partition_io_failures_total",
            Kind::Counter,
            "Segment writes and syncs that failed (full disk, I/O errors); appends retry them.",
            |p| p.stats.failures.into(),
        ),
        (
            "ringlog_partition_segment_rolls_total",
            Kind::Counter,
            "Segments rolled since the partition was opened.",
            |p| p.stats.rolls.into(),
        ),
    ];
    for (name, kind, help, field) in families {
        body.family(name, kind, help);
        for_each_partition(shards, |labels, partition| {
            body.sample(name, labels, field(partition))
        });
    }
    let name = "ringlog_partition_reads_total";
    body.family(
        name,
        Kind::Counter,
        "Read steps of fetches, served from memory or from disk.",
    );
    for_each_partition(shards, |labels, partition| {
        for (source, count) in [
            ("memory", partition.stats.memory_reads),
            ("disk", partition.stats.disk_reads),
        ] {
            let mut with_source = labels.to_vec();
            with_source.push(("source", source));
            body.sample(name, &with_source, count);
        }
    });
}

/// Calls `each` with the labels (topic, partition, shard) of every partition.
fn for_each_partition(
    shards: &[ShardMetrics],
    mut each: impl FnMut(&[(&str, &str)], &snapshot::PartitionMetrics),
) {
    for shard in shards {
        let shard_id = shard.shard.to_string();
        for partition in &shard.partitions {
            let partition_id = partition.partition.to_string();
            let labels = [
                ("topic", partition.topic.as_str()),
                ("partition", partition_id.as_str()),
                ("shard", shard_id.as_str()),
            ];
            each(&labels, partition);
        }
    }
}

fn render_groups(body: &mut Exposition, shards: &[ShardMetrics]) {
    type OffsetField = fn(&snapshot::GroupOffset) -> i64;
    let families: [(&str, &str, OffsetField); 2] = [
        (
            "ringlog_group_committed_offset",
            "A consumer group's committed offset.",
            |offset| offset.committed,
        ),
        (
            "ringlog_group_lag",
            "Records from a consumer group's committed offset to the high watermark.",
            snapshot::GroupOffset::lag,
        ),
    ];
    for (name, help, field) in families {
        body.family(name, Kind::Gauge, help);
        for offset in shards.iter().flat_map(|shard| &shard.group_offsets) {
            let partition = offset.partition.to_string();
            let labels = [
                ("group", offset.group.as_str()),
                ("topic", offset.topic.as_str()),
                ("partition", partition.as_str()),
            ];
            body.sample(name, &labels, field(offset));
        }
    }
    type ShareField = fn(&snapshot::SharePartitionMetrics) -> i64;
    let families: [(&str, &str, ShareField); 4] = [
        (
            "ringlog_share_group_start_offset",
            "A share group's start offset: records below it are all acknowledged or archived.",
            |share| share.start_offset,
        ),
        (
            "ringlog_share_group_in_flight_records",
            "Records of a share group past its start offset not yet acknowledged or archived.",
            |share| share.in_flight_records.into(),
        ),
        (
            "ringlog_share_group_acquired_records",
            "Records a share group's consumers hold leases on.",
            |share| share.acquired_records.into(),
        ),
        (
            "ringlog_share_group_lag",
            "Records from a share group's start offset to the high watermark.",
            |share| (share.high_watermark - share.start_offset).max(0),
        ),
    ];
    for (name, help, field) in families {
        body.family(name, Kind::Gauge, help);
        for share in shards.iter().flat_map(|shard| &shard.share_partitions) {
            let partition = share.partition.to_string();
            let labels = [
                ("group", share.group.as_str()),
                ("topic", share.topic.as_str()),
                ("partition", partition.as_str()),
            ];
            body.sample(name, &labels, field(share));
        }
    }
}

fn render_shards(body: &mut Exposition, shards: &[ShardMetrics]) {
    type Field = fn(&ShardMetrics) -> usize;
    let families: [(&str, &str, Field); 2] = [
        (
            "ringlog_shard_read_ahead_extents",
            "Read-ahead extents (1 MiB) the shard's partitions hold.",
            |shard| shard.read_ahead_extents.0,
        ),
        (
            "ringlog_shard_read_ahead_extents_max",
            "Read-ahead extents the shard allows (read_ahead_bytes_per_shard).",
            |shard| shard.read_ahead_extents.1,
        ),
    ];
    for (name, help, field) in families {
        body.family(name, Kind::Gauge, help);
        for shard in shards {
            let shard_id = shard.shard.to_string();
            body.sample(name, &[("shard", shard_id.as_str())], field(shard));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let get = |head: &str| parse_request(head.as_bytes());
        assert_eq!(get("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Ok(MetricsRequest { head_only: false }))
        );
        assert_eq!(
            get("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Ok(MetricsRequest { head_only: true }))
        );
        assert_eq!(
            get("POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Err(Refusal::MethodNotAllowed))
        );
        assert_eq!(get("GET / HTTP/1.1\r\n\r\n"), Some(Err(Refusal::NotFound)));
        assert_eq!(
            get("\x16\x03\x01garbage\r\n\r\n"),
            Some(Err(Refusal::Malformed))
        );
        let many = format!(
            "GET /metrics HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(HEADERS_MAX + 1)
        );
        assert_eq!(get(&many), Some(Err(Refusal::HeadTooLarge)));
    }

    #[test]
    fn responses_close_and_give_the_length() {
        let response =
            String::from_utf8(response("200 OK", CONTENT_TYPE, b"abc", true, "")).expect("ascii");
        assert_eq!(
            response,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\n"
        );
        let refused =
            String::from_utf8(refusal_response(Refusal::MethodNotAllowed)).expect("ascii");
        assert!(refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(refused.contains("\r\nAllow: GET, HEAD\r\n"));
    }
}
