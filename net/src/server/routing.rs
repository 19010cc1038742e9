//! Partition work routed to the shard that owns the partition, shared by both front doors
//! (the native protocol and the Kafka protocol): append, read with long polling, offset
//! lookups, per-topic offsets and catalog changes. Each function runs the work here when this
//! shard owns the partition and otherwise sends it to the owner with [`Shard::call`].

use std::collections::{BTreeMap, HashMap};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ringlog_engine::batch::BatchIter;
use ringlog_engine::log::Acks;
use ringlog_engine::reactor::time;
use ringlog_engine::topic::TopicConfig;

use super::connection::RawPart;
use super::message::{
    Failure, FetchedBytes, OffsetQuery, PartitionOffsets, ShardCall, ShardReturn, TopicChange,
};
use super::partition_ops::{self, Produced};
use super::shard::{expect_done, unknown_topic, Shard, CATALOG_SHARD};
use crate::error_code::ErrorCode;

/// A boxed local future.
pub(crate) type BoxedFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The failure for an answer of the wrong kind from another shard (a bug).
pub(crate) fn unexpected_answer() -> Failure {
    Failure::new(ErrorCode::Unknown, "internal: unexpected shard answer")
}

/// Appends whole batches to `topic`/`partition` on its owner; returns the first base offset.
/// The first poll stamps the offsets (or sends the batches to the owner), so callers that
/// start appends in request order keep that order per partition.
pub(crate) async fn append(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    acks: Acks,
    batches: &mut [u8],
) -> Result<Produced, Failure> {
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return partition_ops::produce(shard, topic, partition, acks, batches, true).await;
    }
    if shard.topic(topic).is_none() {
        return Err(unknown_topic(topic));
    }
    let call = ShardCall::Produce {
        topic: topic.to_string(),
        partition,
        acks,
        batches: batches.to_vec(),
        from_client: true,
    };
    match shard.call(owner, call).await {
        ShardReturn::Produced(result) => result,
        _ => Err(unexpected_answer()),
    }
}

/// Runs every future until all are done; returns their outputs in order.
///
/// A request can touch thousands of partitions (a keyed produce to a 10,000-partition topic
/// reaches every one); polling all of them whenever one is woken made such a request
/// quadratic (minutes of CPU). `futures_util`'s `join_all` polls only the futures that were
/// woken once there are more than a handful.
pub(crate) async fn join_all<T>(futures: Vec<BoxedFuture<'_, T>>) -> Vec<T> {
    futures_util::future::join_all(futures).await
}

/// One partition a fetch reads.
pub(crate) struct ReadTarget {
    /// Index into the fetch's topic names.
    pub(crate) topic_index: usize,
    pub(crate) partition: u32,
    pub(crate) offset: i64,
    pub(crate) max_bytes: usize,
}

/// The watermarks of a partition left out of a full response (filled in later).
const LEFT_OUT_MARKS: (i64, i64) = (-1, -1);

/// What reading one partition gave: `(high watermark, log start offset)` or the failure, and
/// the batches in one or more pieces, to be sent back to back (none when there is nothing at
/// the offset yet).
pub(crate) struct PartitionRead {
    pub(crate) status: Result<(i64, i64), Failure>,
    pub(crate) raw: Vec<RawPart>,
}

impl PartitionRead {
    /// Bytes of batches read.
    pub(crate) fn bytes(&self) -> usize {
        self.raw.iter().map(RawPart::len).sum()
    }

    /// A partition left out of a full response, its watermarks not known yet.
    fn left_out() -> PartitionRead {
        PartitionRead {
            status: Ok(LEFT_OUT_MARKS),
            raw: Vec::new(),
        }
    }

    fn failed(failure: Failure) -> PartitionRead {
        PartitionRead {
            status: Err(failure),
            raw: Vec::new(),
        }
    }
}

/// Limits of a fetch with long polling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchLimits {
    /// Bytes of batches in the whole response (the first partition with data always gets a
    /// whole batch, even a larger one).
    pub(crate) max_bytes: usize,
    /// Answer at once when at least this much is available.
    pub(crate) min_bytes: usize,
    /// How long to wait for `min_bytes`.
    pub(crate) max_wait: Duration,
}

/// Rounds of waiting one long poll makes for `min_bytes` (each ends with new data, the
/// deadline or the client gone): with tiny batches the fetch answers with what it has after
/// this many, rather than gathering pieces without end.
const LONG_POLL_ROUNDS_MAX: usize = 16;

/// Most partitions of a fetch read together (the others are read one after another, against
/// what is left of the response's budget).
const READS_AT_ONCE_MAX: usize = 16;

/// Reads every target once; while that gives fewer than `min_bytes` (0 answers at once, as
/// in Kafka) and the client allows a wait, waits until a target has data past what was read
/// (or `max_wait` passes, or `give_up` completes: the client is gone) and reads on from
/// there, adding to what was read. Reading on from the end, not again from the start, keeps the work linear
/// in the bytes however small the appends. Local partitions come straight from the shard's
/// buffers; others as copies or lent pieces.
pub(crate) async fn read_with_long_poll(
    shard: &Rc<Shard>,
    topics: &[String],
    targets: &[ReadTarget],
    limits: FetchLimits,
    give_up: impl Future<Output = ()>,
) -> Vec<PartitionRead> {
    let (mut reads, mut full) = read_all(shard, topics, targets, limits.max_bytes, false).await;
    assert_eq!(reads.len(), targets.len(), "one read per target");
    if limits.max_wait.is_zero() || targets.is_empty() {
        return reads;
    }
    let deadline = Instant::now() + limits.max_wait;
    let mut give_up = pin!(give_up);
    let mut gave_up = false;
    for _ in 0..LONG_POLL_ROUNDS_MAX {
        let total: usize = reads.iter().map(PartitionRead::bytes).sum();
        let any_error = reads.iter().any(|read| read.status.is_err());
        if total >= limits.min_bytes || total >= limits.max_bytes || full || any_error || gave_up {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Each partition from where its read ended, with what is left of its budget.
        let (waiting, more_targets): (Vec<usize>, Vec<ReadTarget>) = targets
            .iter()
            .zip(&reads)
            .enumerate()
            .filter(|(_, (target, read))| read.bytes() < target.max_bytes)
            .map(|(index, (target, read))| {
                let target = ReadTarget {
                    offset: read_end(read).unwrap_or(target.offset),
                    max_bytes: target.max_bytes - read.bytes(),
                    ..*target
                };
                (index, target)
            })
            .unzip();
        if more_targets.is_empty() {
            break;
        }
        let left = deadline - now;
        let mut waited = pin!(time::timeout(
            left,
            wait_any(shard, topics, &more_targets, left)
        ));
        poll_fn(|cx| {
            if waited.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if give_up.as_mut().poll(cx).is_ready() {
                gave_up = true;
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        let (more, more_full) = read_all(
            shard,
            topics,
            &more_targets,
            limits.max_bytes - total,
            total > 0,
        )
        .await;
        // A batch that did not fit ends the wait: waiting on would only find it again.
        full = more_full;
        assert_eq!(more.len(), more_targets.len(), "one read per target");
        for (index, more) in waiting.into_iter().zip(more) {
            add_read(&mut reads[index], more);
        }
    }
    reads
}

/// The offset after the last batch `read` holds; `None` when it holds none.
fn read_end(read: &PartitionRead) -> Option<i64> {
    read.raw
        .iter()
        .rev()
        .find_map(|part| {
            BatchIter::new(part.bytes())
                .without_crc_check()
                .map_while(Result::ok)
                .last()
        })
        .map(|(header, _)| header.next_offset())
}

/// Adds `more`, read from where `read` ended, to `read`. A partition left out of the second
/// read's response keeps its watermarks; a failure replaces them only when nothing was read
/// (batches already read are served, the next fetch meets the failure).
fn add_read(read: &mut PartitionRead, more: PartitionRead) {
    match more.status {
        Ok(marks) if marks == LEFT_OUT_MARKS => {}
        Ok(marks) => read.status = Ok(marks),
        Err(failure) => {
            if read.raw.is_empty() {
                read.status = Err(failure);
            }
        }
    }
    read.raw.extend(more.raw);
}

/// Reads every target, together at most `max_bytes` of batches, except that when the response
/// holds no data yet (`has_data` false: nothing from earlier rounds either) the first batch
/// found is served whole however large (see [`keep_within`]). Also says whether a batch was
/// left out for want of room.
async fn read_all(
    shard: &Rc<Shard>,
    topics: &[String],
    targets: &[ReadTarget],
    max_bytes: usize,
    has_data: bool,
) -> (Vec<PartitionRead>, bool) {
    let wanted_bytes = targets
        .iter()
        .fold(0usize, |sum, target| sum.saturating_add(target.max_bytes));
    // Reads at once each hold at least one whole batch, whatever their limits add up to (0
    // for limits of 0), until all are done: only a few may run together, or one small
    // request naming a partition thousands of times would hold thousands of batches.
    if targets.len() > 1 && targets.len() <= READS_AT_ONCE_MAX && wanted_bytes <= max_bytes {
        let mut reads = read_all_at_once(shard, topics, targets, max_bytes).await;
        let full = keep_within(&mut reads, max_bytes, has_data);
        return (reads, full);
    }
    let mut reads = Vec::with_capacity(targets.len());
    let mut left_out = Vec::new();
    let mut budget = max_bytes;
    let mut any_data = has_data;
    for (index, target) in targets.iter().enumerate() {
        // Once the response is full, later partitions are answered without data (their
        // offsets stay where they were), as Kafka does.
        let limit = target.max_bytes.min(budget);
        if limit == 0 && any_data {
            reads.push(PartitionRead::left_out());
            left_out.push(index);
            continue;
        }
        let topic = &topics[target.topic_index];
        let read = read(shard, topic, target.partition, target.offset, limit.max(1)).await;
        budget = budget.saturating_sub(read.bytes());
        any_data |= read.bytes() > 0;
        reads.push(read);
    }
    let full = keep_within(&mut reads, max_bytes, has_data) || !left_out.is_empty();
    fill_watermarks(shard, topics, targets, &mut reads, &left_out).await;
    (reads, full)
}

/// Drops the batches of each read, in order, that would take the response past `max_bytes`
/// (their watermarks stand, as for a partition left out of a full response): a read returns
/// at least one whole batch, however small its limit. Only the first read with data keeps an
/// oversized batch, and only when the response held none before it (`has_data` false), so
/// that a batch larger than the limit does not stop a consumer, as in Kafka. Without this a
/// later partition's (or a later long-poll round's) first batch could take a native response
/// past the frame limit the client applies: refused, and asked again forever. Returns
/// whether it dropped any.
fn keep_within(reads: &mut [PartitionRead], max_bytes: usize, mut has_data: bool) -> bool {
    let mut total = 0usize;
    let mut dropped = false;
    for read in reads.iter_mut() {
        let bytes = read.bytes();
        if bytes == 0 {
            continue;
        }
        if has_data && total.saturating_add(bytes) > max_bytes {
            read.raw.clear();
            dropped = true;
            continue;
        }
        total = total.saturating_add(bytes);
        has_data = true;
    }
    dropped
}

/// Gives the partitions `left_out` of a full response their watermarks, as Kafka answers them
/// (consumers compute their lag from them): local ones from their logs, the others from one
/// PartitionInfo call per (topic, owner) with any, all at once. A partition gone meanwhile
/// stays at -1.
async fn fill_watermarks(
    shard: &Rc<Shard>,
    topics: &[String],
    targets: &[ReadTarget],
    reads: &mut [PartitionRead],
    left_out: &[usize],
) {
    let mut remote: HashMap<(usize, usize), Vec<PartitionOffsets>> = HashMap::new();
    for &index in left_out {
        let target = &targets[index];
        let topic = &topics[target.topic_index];
        let owner = shard.owner(topic, target.partition);
        if owner != shard.id {
            remote.entry((target.topic_index, owner)).or_default();
        } else if let Ok(log) = shard.local_log(topic, target.partition) {
            reads[index].status = Ok((log.high_watermark(), log.log_start_offset()));
        }
    }
    if remote.is_empty() {
        return;
    }
    let asks: Vec<(usize, usize)> = remote.keys().copied().collect();
    let calls: Vec<BoxedFuture<'_, ShardReturn>> = asks
        .iter()
        .map(|&(topic_index, owner)| {
            let call = ShardCall::PartitionInfo {
                topic: topics[topic_index].clone(),
            };
            Box::pin(shard.call(owner, call)) as BoxedFuture<'_, ShardReturn>
        })
        .collect();
    for (ask, answer) in asks.iter().zip(join_all(calls).await) {
        if let ShardReturn::Partitions(Ok(mut partitions)) = answer {
            partitions.sort_by_key(|p| p.partition);
            remote.insert(*ask, partitions);
        }
    }
    for &index in left_out {
        let target = &targets[index];
        let owner = shard.owner(&topics[target.topic_index], target.partition);
        let Some(partitions) = remote.get(&(target.topic_index, owner)) else {
            continue;
        };
        if let Ok(at) = partitions.binary_search_by_key(&target.partition, |p| p.partition) {
            let found = &partitions[at];
            reads[index].status = Ok((found.high_watermark, found.log_start_offset));
        }
    }
}

/// Reads every target at once, when their own limits fit the response's: no read depends on
/// what another returned, so the owners' disk reads and shard round trips overlap. The answer
/// is what reading one by one gives: only oversized first batches can overfill the response,
/// and then a later partition gets nothing once it is full, or is read again with the room
/// left (at least one batch) if it got more than that.
async fn read_all_at_once(
    shard: &Rc<Shard>,
    topics: &[String],
    targets: &[ReadTarget],
    max_bytes: usize,
) -> Vec<PartitionRead> {
    let reads: Vec<BoxedFuture<'_, PartitionRead>> = targets
        .iter()
        .map(|target| {
            let topic = &topics[target.topic_index];
            let read = read(
                shard,
                topic,
                target.partition,
                target.offset,
                target.max_bytes.max(1),
            );
            Box::pin(read) as BoxedFuture<'_, PartitionRead>
        })
        .collect();
    let mut reads = join_all(reads).await;
    let mut budget = max_bytes;
    for (index, target) in targets.iter().enumerate() {
        if budget == 0 && index > 0 {
            // No room for its batches; its watermarks (or error) as read stand, as Kafka
            // answers a partition left out of a full response.
            reads[index].raw.clear();
            continue;
        }
        if reads[index].bytes() > budget && budget < target.max_bytes {
            let topic = &topics[target.topic_index];
            reads[index] = read(shard, topic, target.partition, target.offset, budget.max(1)).await;
        }
        budget = budget.saturating_sub(reads[index].bytes());
    }
    reads
}

/// Reads whole batches of `topic`/`partition` from `offset`, up to `max_bytes` (at least one
/// batch), on the owner.
pub(crate) async fn read(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    offset: i64,
    max_bytes: usize,
) -> PartitionRead {
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return match partition_ops::fetch_local(shard, topic, partition, offset, max_bytes).await {
            Ok((log, parts)) => PartitionRead {
                status: Ok((log.high_watermark(), log.log_start_offset())),
                raw: parts
                    .into_slices()
                    .into_iter()
                    .map(RawPart::Slice)
                    .collect(),
            },
            Err(failure) => PartitionRead::failed(failure),
        };
    }
    if shard.topic(topic).is_none() {
        return PartitionRead::failed(unknown_topic(topic));
    }
    let call = ShardCall::Fetch {
        topic: topic.to_string(),
        partition,
        offset,
        max_bytes,
    };
    match shard.call(owner, call).await {
        ShardReturn::Fetched(Ok(fetched)) => PartitionRead {
            status: Ok((fetched.high_watermark, fetched.log_start_offset)),
            raw: match fetched.bytes {
                FetchedBytes::Lent(pieces) => pieces.into_iter().map(RawPart::Lent).collect(),
                FetchedBytes::Copied(bytes) if bytes.is_empty() => Vec::new(),
                FetchedBytes::Copied(bytes) => vec![RawPart::Owned(bytes)],
            },
        },
        ShardReturn::Fetched(Err(failure)) => PartitionRead::failed(failure),
        _ => PartitionRead::failed(unexpected_answer()),
    }
}

/// Completes when any target has data at its offset. The targets are grouped by owner
/// shard, one per partition (at its lowest offset: data there is data for any of them): one
/// wait per owner (one timer on each other owner, none here: the caller's timeout bounds
/// this one) and one waiter per partition, however often the fetch names it.
async fn wait_any(
    shard: &Rc<Shard>,
    topics: &[String],
    targets: &[ReadTarget],
    max_wait: Duration,
) {
    let max_wait_ms = u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX);
    // By topic name: a request may name one topic in several entries.
    let mut lowest: HashMap<(&str, u32), i64> = HashMap::with_capacity(targets.len());
    for target in targets {
        let key = (topics[target.topic_index].as_str(), target.partition);
        let offset = lowest.entry(key).or_insert(target.offset);
        *offset = (*offset).min(target.offset);
    }
    let mut by_owner: BTreeMap<usize, Vec<(String, u32, i64)>> = BTreeMap::new();
    for ((topic, partition), offset) in lowest {
        by_owner
            .entry(shard.owner(topic, partition))
            .or_default()
            .push((topic.to_string(), partition, offset));
    }
    let mut waits: Vec<BoxedFuture<'_, ()>> = Vec::with_capacity(by_owner.len());
    for (owner, owned) in by_owner {
        let shard = Rc::clone(shard);
        waits.push(Box::pin(async move {
            if owner == shard.id {
                partition_ops::wait_for_any(&shard, &owned, None).await;
            } else {
                shard.wait_on_other_shard(owner, owned, max_wait_ms).await;
            }
        }));
    }
    poll_fn(|cx| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// Resolves an offset query on `topic`/`partition`'s owner: `(offset, timestamp_ms)`.
pub(crate) async fn list_offset(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    query: OffsetQuery,
) -> Result<(i64, i64), Failure> {
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return partition_ops::list_offset(shard, topic, partition, query).await;
    }
    if shard.topic(topic).is_none() {
        return Err(unknown_topic(topic));
    }
    let call = ShardCall::ListOffset {
        topic: topic.to_string(),
        partition,
        query,
    };
    match shard.call(owner, call).await {
        ShardReturn::Offset(result) => result,
        _ => Err(unexpected_answer()),
    }
}

/// Moves the log start of `topic`/`partition` on its owner (DeleteRecords); see
/// [`partition_ops::delete_records`].
pub(crate) async fn delete_records(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    offset: i64,
) -> Result<i64, Failure> {
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return partition_ops::delete_records(shard, topic, partition, offset).await;
    }
    if shard.topic(topic).is_none() {
        return Err(unknown_topic(topic));
    }
    let call = ShardCall::DeleteRecords {
        topic: topic.to_string(),
        partition,
        offset,
    };
    match shard.call(owner, call).await {
        ShardReturn::LogStart(result) => result,
        _ => Err(unexpected_answer()),
    }
}

/// Offsets of every partition of `topic`, asked of every shard, sorted by partition.
pub(crate) async fn topic_offsets(
    shard: &Rc<Shard>,
    topic: &str,
) -> Result<Vec<PartitionOffsets>, Failure> {
    if shard.topic(topic).is_none() {
        return Err(unknown_topic(topic));
    }
    let mut all = Vec::new();
    for target in 0..shard.shard_count {
        let call = ShardCall::PartitionInfo {
            topic: topic.to_string(),
        };
        match shard.call(target, call).await {
            ShardReturn::Partitions(partitions) => all.extend(partitions?),
            _ => return Err(unexpected_answer()),
        }
    }
    all.sort_by_key(|p| p.partition);
    Ok(all)
}

/// Creates a topic through the catalog shard; returns once every shard has opened it.
pub(crate) async fn create_topic(
    shard: &Rc<Shard>,
    name: String,
    config: TopicConfig,
) -> Result<(), Failure> {
    expect_done(
        shard
            .call(CATALOG_SHARD, ShardCall::CreateTopic { name, config })
            .await,
    )
}

/// Changes a topic's retention or partition count through the catalog shard.
pub(crate) async fn alter_topic(
    shard: &Rc<Shard>,
    name: String,
    change: TopicChange,
) -> Result<(), Failure> {
    expect_done(
        shard
            .call(CATALOG_SHARD, ShardCall::AlterTopic { name, change })
            .await,
    )
}

/// Deletes a topic through the catalog shard.
pub(crate) async fn delete_topic(shard: &Rc<Shard>, name: String) -> Result<(), Failure> {
    expect_done(
        shard
            .call(CATALOG_SHARD, ShardCall::DeleteTopic { name })
            .await,
    )
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::task::Waker;

    use ringlog_engine::reactor::{block_on, RingConfig};

    use super::*;

    /// Futures that finish one after another, last first, each waking the one before it:
    /// `n` wakes in all.
    fn relay(n: usize, polls: &Rc<Cell<usize>>) -> Vec<BoxedFuture<'static, usize>> {
        let turn = Rc::new(Cell::new(0));
        let wakers: Rc<RefCell<Vec<Option<Waker>>>> = Rc::new(RefCell::new(vec![None; n]));
        (0..n)
            .map(|index| {
                let (turn, wakers, polls) =
                    (Rc::clone(&turn), Rc::clone(&wakers), Rc::clone(polls));
                Box::pin(poll_fn(move |cx| {
                    polls.set(polls.get() + 1);
                    if turn.get() != n - 1 - index {
                        wakers.borrow_mut()[index] = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    turn.set(turn.get() + 1);
                    if let Some(before) = index.checked_sub(1) {
                        if let Some(waker) = wakers.borrow_mut()[before].take() {
                            waker.wake();
                        }
                    }
                    Poll::Ready(index)
                })) as BoxedFuture<'static, usize>
            })
            .collect()
    }

    #[test]
    fn join_all_polls_only_the_futures_that_were_woken() {
        let n = 2_000;
        let polls = Rc::new(Cell::new(0));
        let futures = relay(n, &polls);
        let outputs = block_on(RingConfig::default(), join_all(futures)).unwrap();
        assert_eq!(outputs, (0..n).collect::<Vec<_>>());
        // Polling every future at each wake would take about n * n / 2 polls.
        assert!(
            polls.get() <= 3 * n,
            "{} polls for {n} futures",
            polls.get()
        );
    }
}
