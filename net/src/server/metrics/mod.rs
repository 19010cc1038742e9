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
//! - `ringlog_shard_read_ahead_extents`, `_extents_max`, `ringlog_shard_remote_waits` {shard}.

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
    let (result, _) = stream.send_all(response, 0..len, usize::MAX, false).await;
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
    body.sample("ringlog_up", NO_LABELS, 1);
    body.family("ringlog_shards", Kind::Gauge, "Shard threads.");
    body.sample("ringlog_shards", NO_LABELS, shards.len());
    body.family(
        "ringlog_connections",
        Kind::Gauge,
        "Open client connections, all protocols (metrics scrapes included).",
    );
    body.sample("ringlog_connections", NO_LABELS, connections);
    render_requests(&mut body, shards);
    render_partitions(&mut body, shards);
    render_groups(&mut body, shards);
    render_shards(&mut body, shards);
    body.into_text()
}

const NO_LABELS: &[(&str, &str)] = &[];

/// The labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// One metric family of items of type `T`: one sample per item.
struct Family<T> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&T) -> i128,
}

/// Writes `families`, each with one sample per item of `items` (the item's labels, made once
/// for all families, and the item).
fn write_families<T>(body: &mut Exposition, families: &[Family<T>], items: &[(Labels, &T)]) {
    for family in families {
        body.family(family.name, family.kind, family.help);
        for (labels, item) in items {
            body.sample(family.name, labels, (family.value)(item));
        }
    }
}

fn render_requests(body: &mut Exposition, shards: &[ShardMetrics]) {
    let families = [
        Family {
            name: "ringlog_requests_total",
            kind: Kind::Counter,
            help: "Requests received, per shard, protocol and api.",
            value: |count: &counters::RequestCount| count.requests.into(),
        },
        Family {
            name: "ringlog_request_errors_total",
            kind: Kind::Counter,
            help: "Requests answered with a request-level error (unsupported, malformed, failed).",
            value: |count| count.errors.into(),
        },
    ];
    let items: Vec<(Labels, &counters::RequestCount)> = shards
        .iter()
        .flat_map(|shard| {
            shard.requests.iter().map(move |count| {
                let labels = vec![
                    ("shard", shard.shard.to_string()),
                    ("protocol", count.protocol.to_string()),
                    ("api", count.api.clone()),
                ];
                (labels, count)
            })
        })
        .collect();
    write_families(body, &families, &items);
}

fn render_partitions(body: &mut Exposition, shards: &[ShardMetrics]) {
    let families = [
        Family {
            name: "ringlog_partition_log_start_offset",
            kind: Kind::Gauge,
            help: "Oldest offset kept.",
            value: |p: &snapshot::PartitionMetrics| p.log_start_offset.into(),
        },
        Family {
            name: "ringlog_partition_high_watermark",
            kind: Kind::Gauge,
            help: "Offset after the last record consumers can read.",
            value: |p| p.high_watermark.into(),
        },
        Family {
            name: "ringlog_partition_size_bytes",
            kind: Kind::Gauge,
            help: "Bytes of the partition's segments.",
            value: |p| p.size_bytes.into(),
        },
        Family {
            name: "ringlog_partition_appended_batches_total",
            kind: Kind::Counter,
            help: "Record batches appended since the partition was opened.",
            value: |p| p.stats.appends.into(),
        },
        Family {
            name: "ringlog_partition_appended_bytes_total",
            kind: Kind::Counter,
            help: "Bytes appended since the partition was opened.",
            value: |p| p.stats.appended_bytes.into(),
        },
        Family {
            name: "ringlog_partition_writes_total",
            kind: Kind::Counter,
            help: "Segment file writes completed since the partition was opened.",
            value: |p| p.stats.writes.into(),
        },
        Family {
            name: "ringlog_partition_syncs_total",
            kind: Kind::Counter,
            help: "fdatasyncs completed since the partition was opened.",
            value: |p| p.stats.syncs.into(),
        },
        Family {
            name: "ringlog_partition_io_failures_total",
            kind: Kind::Counter,
            help:
                "Segment writes and syncs that failed (full disk, I/O errors); appends retry them.",
            value: |p| p.stats.failures.into(),
        },
        Family {
            name: "ringlog_partition_segment_rolls_total",
            kind: Kind::Counter,
            help: "Segments rolled since the partition was opened.",
            value: |p| p.stats.rolls.into(),
        },
    ];
    let items: Vec<(Labels, &snapshot::PartitionMetrics)> = shards
        .iter()
        .flat_map(|shard| {
            shard.partitions.iter().map(move |partition| {
                let labels = vec![
                    ("topic", partition.topic.clone()),
                    ("partition", partition.partition.to_string()),
                    ("shard", shard.shard.to_string()),
                ];
                (labels, partition)
            })
        })
        .collect();
    write_families(body, &families, &items);
    // Two samples per partition, told apart by one more label.
    let name = "ringlog_partition_reads_total";
    body.family(
        name,
        Kind::Counter,
        "Read steps of fetches, served from memory or from disk.",
    );
    for (labels, partition) in &items {
        for (source, count) in [
            ("memory", partition.stats.memory_reads),
            ("disk", partition.stats.disk_reads),
        ] {
            let mut with_source = labels.clone();
            with_source.push(("source", source.to_string()));
            body.sample(name, &with_source, count);
        }
    }
}

fn render_groups(body: &mut Exposition, shards: &[ShardMetrics]) {
    let families = [
        Family {
            name: "ringlog_group_committed_offset",
            kind: Kind::Gauge,
            help: "A consumer group's committed offset.",
            value: |offset: &snapshot::GroupOffset| offset.committed.into(),
        },
        Family {
            name: "ringlog_group_lag",
            kind: Kind::Gauge,
            help: "Records from a consumer group's committed offset to the high watermark.",
            value: |offset| offset.lag().into(),
        },
    ];
    let items: Vec<(Labels, &snapshot::GroupOffset)> = shards
        .iter()
        .flat_map(|shard| &shard.group_offsets)
        .map(|offset| {
            (
                group_labels(&offset.group, &offset.topic, offset.partition),
                offset,
            )
        })
        .collect();
    write_families(body, &families, &items);
    let families = [
        Family {
            name: "ringlog_share_group_start_offset",
            kind: Kind::Gauge,
            help:
                "A share group's start offset: records below it are all acknowledged or archived.",
            value: |share: &snapshot::SharePartitionMetrics| share.start_offset.into(),
        },
        Family {
            name: "ringlog_share_group_in_flight_records",
            kind: Kind::Gauge,
            help:
                "Records of a share group past its start offset not yet acknowledged or archived.",
            value: |share| share.in_flight_records.into(),
        },
        Family {
            name: "ringlog_share_group_acquired_records",
            kind: Kind::Gauge,
            help: "Records a share group's consumers hold leases on.",
            value: |share| share.acquired_records.into(),
        },
        Family {
            name: "ringlog_share_group_lag",
            kind: Kind::Gauge,
            help: "Records from a share group's start offset to the high watermark.",
            value: |share| (share.high_watermark - share.start_offset).max(0).into(),
        },
    ];
    let items: Vec<(Labels, &snapshot::SharePartitionMetrics)> = shards
        .iter()
        .flat_map(|shard| &shard.share_partitions)
        .map(|share| {
            (
                group_labels(&share.group, &share.topic, share.partition),
                share,
            )
        })
        .collect();
    write_families(body, &families, &items);
}

/// The labels of a group's samples on one partition.
fn group_labels(group: &str, topic: &str, partition: u32) -> Labels {
    vec![
        ("group", group.to_string()),
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

fn render_shards(body: &mut Exposition, shards: &[ShardMetrics]) {
    let families = [
        Family {
            name: "ringlog_shard_read_ahead_extents",
            kind: Kind::Gauge,
            help: "Read-ahead extents (1 MiB) the shard's partitions hold.",
            value: |shard: &ShardMetrics| shard.read_ahead_extents.0 as i128,
        },
        Family {
            name: "ringlog_shard_read_ahead_extents_max",
            kind: Kind::Gauge,
            help: "Read-ahead extents the shard allows (read_ahead_bytes_per_shard).",
            value: |shard| shard.read_ahead_extents.1 as i128,
        },
        Family {
            name: "ringlog_shard_remote_waits",
            kind: Kind::Gauge,
            help: "Long polls (fetches, share fetches) of other shards' connections waiting on this shard.",
            value: |shard| shard.waits_for_others as i128,
        },
    ];
    let items: Vec<(Labels, &ShardMetrics)> = shards
        .iter()
        .map(|shard| (vec![("shard", shard.shard.to_string())], shard))
        .collect();
    write_families(body, &families, &items);
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
