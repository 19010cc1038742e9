//! Requests a shard served, counted per protocol and api. Single-threaded: each shard counts
//! its own in `Cell`s, and a scrape reads every shard's through a shard call, so counting costs
//! one increment and no atomic.

use std::cell::Cell;

use kafka_protocol::messages::ApiKey as KafkaApiKey;

use crate::api::ApiKey;

/// Counter slots per protocol: api keys at or above this are counted as `other`. Native keys
/// are below 32; Kafka's served keys are below 64 (and KIP-932's share apis below 96).
const NATIVE_SLOTS: usize = 32;
const KAFKA_SLOTS: usize = 128;

/// One counted api of one protocol, as a scrape reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestCount {
    /// `native` or `kafka`.
    pub(crate) protocol: &'static str,
    /// The api's name (`Produce`, `Fetch`, ...), `other` for keys past the slots, `unknown`
    /// for keys the server does not serve.
    pub(crate) api: String,
    /// Requests received.
    pub(crate) requests: u64,
    /// Of those, answered with a request-level error (unsupported, malformed, failed).
    pub(crate) errors: u64,
}

#[derive(Default)]
struct Counted {
    requests: Cell<u64>,
    errors: Cell<u64>,
}

impl Counted {
    fn add(&self, failed: bool) {
        self.requests.set(self.requests.get() + 1);
        if failed {
            self.errors.set(self.errors.get() + 1);
        }
    }
}

/// Request counters of one shard.
pub(crate) struct RequestCounts {
    native: [Counted; NATIVE_SLOTS],
    kafka: [Counted; KAFKA_SLOTS],
    /// Requests whose api key the protocol does not know, per protocol (native, kafka).
    unknown: [Counted; 2],
}

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts {
            native: std::array::from_fn(|_| Counted::default()),
            kafka: std::array::from_fn(|_| Counted::default()),
            unknown: std::array::from_fn(|_| Counted::default()),
        }
    }
}

impl RequestCounts {
    /// A native request with api key `api` (raw, possibly unknown) was answered.
    pub(crate) fn native(&self, api: u16, failed: bool) {
        match ApiKey::try_from(api) {
            Ok(api) => slot(&self.native, usize::from(api.as_u16())).add(failed),
            Err(_) => self.unknown[0].add(failed),
        }
    }

    /// A Kafka request with api key `api` (raw, possibly unknown) was answered.
    pub(crate) fn kafka(&self, api: i16, failed: bool) {
        match (KafkaApiKey::try_from(api), usize::try_from(api)) {
            (Ok(_), Ok(index)) => slot(&self.kafka, index).add(failed),
            _ => self.unknown[1].add(failed),
        }
    }

    /// Every api with at least one request.
    pub(crate) fn snapshot(&self) -> Vec<RequestCount> {
        let mut counts = Vec::new();
        let mut push = |protocol, api: String, counted: &Counted| {
            if counted.requests.get() > 0 {
                counts.push(RequestCount {
                    protocol,
                    api,
                    requests: counted.requests.get(),
                    errors: counted.errors.get(),
                });
            }
        };
        for (index, counted) in self.native.iter().enumerate() {
            push("native", native_name(index), counted);
        }
        for (index, counted) in self.kafka.iter().enumerate() {
            push("kafka", kafka_name(index), counted);
        }
        push("native", "unknown".into(), &self.unknown[0]);
        push("kafka", "unknown".into(), &self.unknown[1]);
        counts
    }
}

/// The slot of `index`, the last one (`other`) for keys past the array.
fn slot<const N: usize>(slots: &[Counted; N], index: usize) -> &Counted {
    &slots[index.min(N - 1)]
}

fn native_name(index: usize) -> String {
    if index == NATIVE_SLOTS - 1 {
        return "other".into();
    }
    u16::try_from(index)
        .ok()
        .and_then(|key| ApiKey::try_from(key).ok())
        .map_or_else(|| "other".into(), |api| api.name().to_string())
}

fn kafka_name(index: usize) -> String {
    if index == KAFKA_SLOTS - 1 {
        return "other".into();
    }
    i16::try_from(index)
        .ok()
        .and_then(|key| KafkaApiKey::try_from(key).ok())
        .map_or_else(|| "other".into(), |api| format!("{api:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_protocol_and_api_with_errors() {
        let counts = RequestCounts::default();
        counts.native(ApiKey::Produce.as_u16(), false);
        counts.native(ApiKey::Produce.as_u16(), true);
        counts.native(999, true);
        counts.kafka(KafkaApiKey::Fetch as i16, false);
        counts.kafka(-5, true);
        let snapshot = counts.snapshot();
        let find = |protocol, api: &str| {
            snapshot
                .iter()
                .find(|count| count.protocol == protocol && count.api == api)
                .map(|count| (count.requests, count.errors))
        };
        assert_eq!(find("native", "Produce"), Some((2, 1)));
        assert_eq!(find("native", "unknown"), Some((1, 1)));
        assert_eq!(find("kafka", "Fetch"), Some((1, 0)));
        assert_eq!(find("kafka", "unknown"), Some((1, 1)));
        assert_eq!(
            find("native", "Fetch"),
            None,
            "apis never asked are left out"
        );
        assert_eq!(snapshot.len(), 4);
    }
}
