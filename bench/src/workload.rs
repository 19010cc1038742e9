//! What one invocation measures: a load scenario against ringlog, or a hardware reference.

use std::fmt;

/// A load scenario (against ringlog) or a hardware reference (`disk`, `net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Engine only, no network: append batches straight into partition logs.
    Append,
    /// Producers send batches over the network; throughput and acknowledgement latency.
    Produce,
    /// Consumers read a topic that the run first fills (hot from memory, or `--cold`).
    Consume,
    /// Producers at a fixed rate while consumers follow; latency from send to receipt.
    E2e,
    /// Several consumer groups read one topic; total egress.
    Fanout,
    /// Share-group consumers with simulated work per record.
    Share,
    /// The same records produced and consumed through the native protocol and through the
    /// Kafka front door (kcat, librdkafka), side by side.
    Kafka,
    /// Many partitions: server memory idle and after one small record each.
    Partitions,
    /// Reference only: raw O_DIRECT sequential write and read, and write+fdatasync commits.
    Disk,
    /// Reference only: raw loopback TCP through io_uring.
    Net,
}

impl Workload {
    /// Every workload, in the order the help text and the suite use.
    pub const ALL: [Workload; 10] = [
        Workload::Append,
        Workload::Produce,
        Workload::Consume,
        Workload::E2e,
        Workload::Fanout,
        Workload::Share,
        Workload::Kafka,
        Workload::Partitions,
        Workload::Disk,
        Workload::Net,
    ];

    /// The name used on the command line and in the JSON `scenario` field.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Append => "append",
            Workload::Produce => "produce",
            Workload::Consume => "consume",
            Workload::E2e => "e2e",
            Workload::Fanout => "fanout",
            Workload::Share => "share",
            Workload::Kafka => "kafka",
            Workload::Partitions => "partitions",
            Workload::Disk => "disk",
            Workload::Net => "net",
        }
    }

    /// The workload called `name` on the command line, if any.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL
            .into_iter()
            .find(|workload| workload.name() == name)
    }

    /// True for `disk` and `net`, which measure the machine rather than ringlog.
    pub fn is_reference(self) -> bool {
        matches!(self, Workload::Disk | Workload::Net)
    }

    /// True for scenarios that produce records (and so write to the log).
    pub fn produces(self) -> bool {
        !self.is_reference()
    }

    /// True for scenarios with consumers.
    pub fn consumes(self) -> bool {
        matches!(
            self,
            Workload::Consume
                | Workload::E2e
                | Workload::Fanout
                | Workload::Share
                | Workload::Kafka
        )
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for workload in Workload::ALL {
            assert_eq!(Workload::from_name(workload.name()), Some(workload));
        }
        assert_eq!(Workload::from_name("bogus"), None);
    }
}
