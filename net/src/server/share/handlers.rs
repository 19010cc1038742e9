//! ShareFetch and ShareAcknowledge handlers: decode, run on the partition's owner (here or
//! over shard mail), build the response. Acquired batches travel as an owned copy: the share
//! path hands out records one by one, so the copy is small next to the work per record.

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;

use super::partition::{AckResult, ShareFetched};
use crate::error_code::ErrorCode;
use crate::message::share_acknowledge::AckRange;
use crate::message::{self, AckRangeResult, Encode, Status};
use crate::protocol;
use crate::server::connection::{RawPart, Request, Response};
use crate::server::group::meta::{validate_group_name, IN_FLIGHT_RECORDS_LIMIT};
use crate::server::group::{
    call, unexpected, GroupCall, GroupReturn, ShareAckArgs, ShareFetchArgs,
};
use crate::server::handler::{decode, respond};
use crate::server::message::{Failure, ShardCall, ShardReturn};
use crate::server::shard::{unknown_topic, Shard};
use futures_util::future::Either;

/// Most acknowledgement ranges one request may carry: a member holds at most a window of
/// records (`IN_FLIGHT_RECORDS_LIMIT` at most), and may settle each twice (renew, then accept).
/// Each range gets a result, so without a bound one frame of small ranges (a 24-byte struct
/// each) would make the server build results and a response many times the frame's size.
pub(crate) const ACK_RANGES_MAX: usize = 2 * IN_FLIGHT_RECORDS_LIMIT as usize;

/// Reads acknowledgement ranges; an unknown ack type, or more than [`ACK_RANGES_MAX`] ranges,
/// fails the request.
fn ack_ranges<'a>(
    ranges: Option<flatbuffers::Vector<'a, protocol::AckRange>>,
) -> Result<Vec<AckRange>, Failure> {
    let ranges = ranges.unwrap_or_default();
    if ranges.len() > ACK_RANGES_MAX {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            format!(
                "{} acknowledgement ranges in one request; at most {ACK_RANGES_MAX}",
                ranges.len()
            ),
        ));
    }
    ranges
        .iter()
        .map(|range| {
            AckRange::from_wire(range)
                .ok_or_else(|| Failure::new(ErrorCode::InvalidRequest, "unknown ack type"))
        })
        .collect()
}

/// Longest member id accepted (ids are kept per share partition).
const MEMBER_ID_BYTES_MAX: usize = 255;

/// Checks a share request's group name and member id, which the share partitions keep (the
/// Kafka listener's share requests too).
pub(crate) fn check_member(group: &str, member_id: &str) -> Result<(), Failure> {
    validate_group_name(group)?;
    if member_id.is_empty() || member_id.len() > MEMBER_ID_BYTES_MAX {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            format!("member_id must be 1 to {MEMBER_ID_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Checks what can be checked before routing: the group name, the member id and the topic.
fn check(shard: &Shard, group: &str, member_id: &str, topic: &str) -> Result<(), Failure> {
    check_member(group, member_id)?;
    if shard.topic(topic).is_none() {
        return Err(unknown_topic(topic));
    }
    Ok(())
}

fn ack_results(results: &[AckResult]) -> Vec<AckRangeResult<'_>> {
    results
        .iter()
        .map(|r| AckRangeResult {
            first_offset: r.first,
            last_offset: r.last,
            status: r
                .failure
                .as_ref()
                .map_or(Status::OK, |f| Status::error(f.code, &f.message)),
        })
        .collect()
}

/// ShareFetch.
pub(crate) async fn share_fetch(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::share_fetch::RequestView = decode(request.body())?;
    check(shard, view.group(), view.member_id(), view.topic())?;
    let args = ShareFetchArgs {
        group: view.group().to_string(),
        member_id: view.member_id().to_string(),
        topic: view.topic().to_string(),
        partition: view.partition(),
        max_records: view.max_records(),
        max_wait_ms: view.max_wait_ms(),
        max_bytes: view.max_bytes(),
        acks: ack_ranges(view.acks())?,
    };
    let owner = shard.owner(&args.topic, args.partition);
    let fetched = if owner == shard.id {
        super::fetch(shard, args, &request.hangup).await?
    } else {
        // A hang-up drops the call, which ends its wait on the owner (Mail::Cancel).
        let call = ShardCall::Group(GroupCall::ShareFetch(args));
        let called = shard.call(owner, call);
        let hangup = request.hangup.wait();
        futures_util::pin_mut!(called, hangup);
        match futures_util::future::select(called, hangup).await {
            Either::Left((ShardReturn::Group(GroupReturn::ShareFetched(result)), _)) => result?,
            Either::Left(_) => return Err(unexpected()),
            // Nobody reads the answer: any will do.
            Either::Right(_) => ShareFetched::default(),
        }
    };
    let ShareFetched {
        acquired,
        lock_expires_ms,
        bytes,
        ack_results: acks,
        failure,
    } = fetched;
    let results = ack_results(&acks);
    let status = failure
        .as_ref()
        .map_or(Status::OK, |f| Status::error(f.code, &f.message));
    let response = message::share_fetch::Response {
        status,
        topic: view.topic(),
        partition: view.partition(),
        acquired: &acquired,
        lock_expires_ms,
        batch_bytes: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        ack_results: &results,
    };
    let raw = if bytes.is_empty() {
        Vec::new()
    } else {
        vec![RawPart::Owned(bytes)]
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(&request.header, response.encode(&mut fbb), raw))
}

/// ShareAcknowledge.
pub(crate) async fn share_acknowledge(
    shard: &Rc<Shard>,
    request: &Request,
) -> Result<Response, Failure> {
    let view: message::share_acknowledge::RequestView = decode(request.body())?;
    check(shard, view.group(), view.member_id(), view.topic())?;
    let args = ShareAckArgs {
        group: view.group().to_string(),
        member_id: view.member_id().to_string(),
        topic: view.topic().to_string(),
        partition: view.partition(),
        ranges: ack_ranges(view.ranges())?,
        leave: view.leave(),
    };
    let owner = shard.owner(&args.topic, args.partition);
    let results = if owner == shard.id {
        super::acknowledge(shard, args).await?
    } else {
        match call(shard, owner, GroupCall::ShareAck(args)).await {
            GroupReturn::Acked(result) => result?,
            _ => return Err(unexpected()),
        }
    };
    let results = ack_results(&results);
    let response = message::share_acknowledge::Response {
        status: Status::OK,
        results: &results,
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::share_acknowledge::{AckType, RequestView};
    use crate::message::test_support::round_trip;

    fn ranges_of(count: usize) -> Result<Vec<AckRange>, Failure> {
        let ranges = vec![
            AckRange {
                first_offset: 0,
                last_offset: 0,
                ack_type: AckType::Renew,
            };
            count
        ];
        let body = round_trip::<_, RequestView>(&message::share_acknowledge::Request {
            group: "g",
            member_id: "m",
            topic: "t",
            partition: 0,
            ranges: &ranges,
            leave: false,
        });
        let view: RequestView = decode(body).unwrap();
        ack_ranges(view.ranges())
    }

    #[test]
    fn a_request_with_more_ack_ranges_than_a_member_can_use_is_refused() {
        let count = |count| {
            ranges_of(count)
                .map(|ranges| ranges.len())
                .map_err(|f| f.code)
        };
        assert_eq!(count(ACK_RANGES_MAX), Ok(ACK_RANGES_MAX));
        assert_eq!(count(ACK_RANGES_MAX + 1), Err(ErrorCode::InvalidRequest));
    }
}
