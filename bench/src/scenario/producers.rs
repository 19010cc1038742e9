//! Producer load threads as the options ask for them (`--produce-with`, `--producers`), for the
//! scenarios that produce over the network.

use std::time::Duration;

use ringlog_net::message::produce::Acks as WireAcks;

use super::batches::PrebuiltBatch;
use super::client_producer::ClientProducer;
use super::control::RunControl;
use super::pipelined_producer::{PipelinedProducer, ProducerCounters};
use super::recorder::LoadRecorder;
use super::server::BenchServer;
use super::ScenarioError;
use crate::options::{Acks, ProduceWith, RunConfig};

/// One producer thread's work.
#[derive(Clone, Debug)]
pub enum ProducerThread {
    /// The client's batching producer.
    Client(ClientProducer),
    /// Prebuilt batches as pipelined requests.
    Pipelined(PipelinedProducer),
}

impl ProducerThread {
    /// Runs the thread's load (see each variant).
    pub fn run(
        &self,
        control: &RunControl,
    ) -> Result<(LoadRecorder, ProducerCounters), ScenarioError> {
        match self {
            ProducerThread::Client(producer) => producer
                .run(control)
                .map(|recorder| (recorder, ProducerCounters::default())),
            ProducerThread::Pipelined(producer) => producer.run(control),
        }
    }
}

/// What the producers of one run are built from.
#[derive(Clone, Copy, Debug)]
pub struct ProducerPlan<'a> {
    /// The run's options (record size, batch size, linger, acks, producers, partitions).
    pub config: &'a RunConfig,
    /// How to send.
    pub produce_with: ProduceWith,
    /// Acknowledgement asked for.
    pub acks: Acks,
    /// Producer threads.
    pub threads: u32,
    /// Index of the first load thread these are (for core placement).
    pub first_load_thread: usize,
    /// Expected run length.
    pub expected: Option<Duration>,
}

impl<'a> ProducerPlan<'a> {
    /// The producers the run's options ask for, as the only load threads or the first ones.
    pub fn of_run(config: &'a RunConfig) -> Self {
        ProducerPlan {
            config,
            produce_with: config.produce_with,
            acks: config.acks,
            threads: config.producers,
            first_load_thread: 0,
            expected: config.expected_duration(),
        }
    }
}

/// The wire value of the options' acks.
pub fn wire_acks(acks: Acks) -> WireAcks {
    match acks {
        Acks::None => WireAcks::None,
        Acks::Leader => WireAcks::Leader,
        Acks::Durable => WireAcks::Durable,
    }
}

/// Builds the producer threads of `plan` for `topic` on `server`. Pipelined producers split
/// the partitions between them (thread i sends to partitions i, i + threads, ...; with more
/// threads than partitions they share); client producers each use every partition (sticky).
pub fn producer_threads(
    plan: &ProducerPlan<'_>,
    server: &BenchServer,
    topic: &str,
) -> Result<Vec<ProducerThread>, ScenarioError> {
    let config = plan.config;
    let batch = match plan.produce_with {
        ProduceWith::Requests => Some(PrebuiltBatch::build(
            config.record_size_bytes,
            config.batch_bytes,
        )?),
        ProduceWith::Producer => None,
    };
    let threads = (0..plan.threads)
        .map(|index| {
            let cpu = server.load_cpu(plan.first_load_thread + index as usize);
            match &batch {
                Some(batch) => ProducerThread::Pipelined(PipelinedProducer {
                    address: server.address(),
                    topic: topic.to_owned(),
                    partitions: partitions_of(index, plan.threads, config.partitions),
                    acks: wire_acks(plan.acks),
                    batch: batch.clone(),
                    cpu,
                    expected: plan.expected,
                }),
                None => ProducerThread::Client(ClientProducer {
                    address: server.address(),
                    topic: topic.to_owned(),
                    acks: wire_acks(plan.acks),
                    record_size_bytes: config.record_size_bytes,
                    batch_bytes: config.batch_bytes,
                    linger_ms: config.linger_ms,
                    cpu,
                    expected: plan.expected,
                }),
            }
        })
        .collect();
    Ok(threads)
}

/// The partitions client `index` of `clients` handles: `index, index + clients, ...`; when
/// there are more clients than partitions, client `index` gets partition `index % partitions`.
pub fn partitions_of(index: u32, clients: u32, partitions: u32) -> Vec<u32> {
    let own: Vec<u32> = (0..partitions)
        .filter(|partition| partition % clients.max(1) == index)
        .collect();
    if own.is_empty() && partitions > 0 {
        vec![index % partitions]
    } else {
        own
    }
}

/// One line on how the producers sent, for the notes.
pub fn describe(threads: &[ProducerThread]) -> String {
    match threads.first() {
        Some(ProducerThread::Client(producer)) => {
            let config = producer.producer_config();
            format!(
                "{} producer thread(s) with the client's batching Producer (one send per record; \
                 batch_bytes_max {}, linger_ms {}, in_flight_requests_max {}); ack latency sampled \
                 once per full batch of records, from send to the acknowledgement being seen",
                threads.len(),
                config.batch_bytes_max,
                config.linger_ms,
                config.in_flight_requests_max
            )
        }
        Some(ProducerThread::Pipelined(producer)) => format!(
            "{} producer thread(s) sending one prebuilt {}-byte batch of {} records per Produce \
             request, {} requests in flight per connection; latency per request, from write to answer",
            threads.len(),
            producer.batch.len_bytes(),
            producer.batch.records(),
            producer.window()
        ),
        None => "no producers".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_split_between_clients() {
        assert_eq!(partitions_of(0, 2, 4), vec![0, 2]);
        assert_eq!(partitions_of(1, 2, 4), vec![1, 3]);
        assert_eq!(
            partitions_of(2, 3, 2),
            vec![0],
            "more clients than partitions"
        );
        assert_eq!(partitions_of(0, 1, 3), vec![0, 1, 2]);
    }
}
