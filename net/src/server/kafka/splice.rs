//! Fetch responses whose large record sets go to the socket from where they are stored (the
//! shard's chunk cache, a disk read buffer, or a copy from another shard), not through a copy
//! into the encoded response.
//!
//! The response is encoded by the `kafka-protocol` crate with a one-byte placeholder for each
//! such record set, then decoded back by the crate, which gives every placeholder's exact
//! position (the decoder returns views of the encoded buffer). Each placeholder and its length
//! prefix are replaced by the real length prefix and the stored bytes; the size prefix of the
//! response is adjusted to match. The only bytes written here are those length prefixes
//! (INT32, or an unsigned varint of length + 1 in flexible versions); tests check the result
//! byte for byte against the crate encoding the same response with the records inline.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion};

use super::codec::{encode_response, KafkaError, KafkaResponse, OutPart, SIZE_PREFIX_BYTES};
use crate::server::connection::RawPart;

/// Record sets at least this large are spliced; smaller ones are cheaper to copy than to send
/// as a separate piece.
pub(crate) const SPLICE_MIN_BYTES: usize = 32 << 10;

/// The stand-in for a spliced record set.
const PLACEHOLDER: &[u8] = &[0xA5];

/// First Fetch version with flexible (compact) encodings.
const FLEXIBLE_FROM_VERSION: i16 = 12;

/// The value to put in `records` for a record set that will be spliced in.
pub(crate) fn placeholder() -> Bytes {
    Bytes::from_static(PLACEHOLDER)
}

/// The bytes of a stored record set (the pieces it is sent in, back to back).
pub(crate) fn raw_len(raw: &[RawPart]) -> usize {
    raw.iter().map(RawPart::len).sum()
}

/// Encodes `response` (version `version`, answering `correlation_id`), whose partitions at
/// the flat positions in `spliced` (ascending; counted over every topic's partitions) hold
/// [`placeholder`] records, with the stored record sets sent in their place (each record set
/// in one or more pieces, sent back to back behind one length prefix).
pub(crate) fn encode_fetch(
    correlation_id: i32,
    version: i16,
    response: &FetchResponse,
    spliced: Vec<(usize, Vec<RawPart>)>,
) -> Result<KafkaResponse, KafkaError> {
    let encoded = encode_response(ApiKey::Fetch, correlation_id, version, response)?;
    if spliced.is_empty() {
        return Ok(encoded);
    }
    let error = |message: &str| KafkaError::Encode {
        api_key: ApiKey::Fetch,
        version,
        message: format!("splicing records: {message}"),
    };
    let Some(OutPart::Encoded(bytes)) = encoded.parts.into_iter().next() else {
        return Err(error("the encoder gave no bytes"));
    };
    let encoded = Bytes::from(bytes);
    let positions = placeholder_positions(&encoded, version).map_err(|m| error(&m))?;
    let compact = version >= FLEXIBLE_FROM_VERSION;
    let old_prefix_bytes = if compact { 1 } else { 4 };
    let pieces: usize = spliced.iter().map(|(_, raw)| raw.len()).sum();
    let mut parts = Vec::with_capacity(spliced.len() + pieces + 1);
    let mut total_bytes = encoded.len() - SIZE_PREFIX_BYTES;
    let mut head: Vec<u8> = Vec::new();
    let mut cursor = 0usize;
    for (flat_index, raw) in spliced {
        let position = *positions
            .get(flat_index)
            .and_then(Option::as_ref)
            .ok_or_else(|| error("no placeholder where one was planned"))?;
        let prefix_start = position
            .checked_sub(old_prefix_bytes)
            .filter(|start| *start >= cursor)
            .ok_or_else(|| error("placeholders out of order"))?;
        let old_prefix = length_prefix(PLACEHOLDER.len(), compact).map_err(|m| error(&m))?;
        if encoded.get(prefix_start..position + PLACEHOLDER.len())
            != Some(&[old_prefix.as_slice(), PLACEHOLDER].concat()[..])
        {
            return Err(error("placeholder bytes not where the decoder put them"));
        }
        let new_prefix = length_prefix(raw_len(&raw), compact).map_err(|m| error(&m))?;
        head.extend_from_slice(&encoded[cursor..prefix_start]);
        head.extend_from_slice(&new_prefix);
        total_bytes =
            total_bytes - old_prefix.len() - PLACEHOLDER.len() + new_prefix.len() + raw_len(&raw);
        parts.push(OutPart::Encoded(std::mem::take(&mut head)));
        parts.extend(raw.into_iter().map(OutPart::Raw));
        cursor = position + PLACEHOLDER.len();
    }
    parts.push(OutPart::Encoded(encoded[cursor..].to_vec()));
    let size = i32::try_from(total_bytes).map_err(|_| error("response too large"))?;
    if let Some(OutPart::Encoded(first)) = parts.first_mut() {
        first[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    }
    Ok(KafkaResponse { parts })
}

/// For every partition, in order, where its records begin in `encoded` when they are the
/// placeholder.
fn placeholder_positions(encoded: &Bytes, version: i16) -> Result<Vec<Option<usize>>, String> {
    let mut view = encoded.slice(SIZE_PREFIX_BYTES..);
    ResponseHeader::decode(&mut view, FetchResponse::header_version(version))
        .map_err(|e| e.to_string())?;
    let decoded = FetchResponse::decode(&mut view, version).map_err(|e| e.to_string())?;
    let base = encoded.as_ptr() as usize;
    Ok(decoded
        .responses
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .map(|partition| {
            partition
                .records
                .as_ref()
                .filter(|records| records[..] == *PLACEHOLDER)
                .map(|records| records.as_ptr() as usize - base)
        })
        .collect())
}

/// The length prefix of a `len`-byte record set: INT32, or in flexible versions an unsigned
/// varint of `len + 1` (0 means null).
fn length_prefix(len: usize, compact: bool) -> Result<Vec<u8>, String> {
    if !compact {
        let len = i32::try_from(len).map_err(|_| format!("{len} bytes do not fit INT32"))?;
        return Ok(len.to_be_bytes().to_vec());
    }
    let mut value = u32::try_from(len + 1).map_err(|_| format!("{len} bytes do not fit"))?;
    let mut out = Vec::with_capacity(5);
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn response(records: &[Option<Bytes>]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, records)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(10 * i as i64)
                    .with_records(records.clone())
            })
            .collect();
        let topic = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions);
        FetchResponse::default().with_responses(vec![topic.clone(), topic])
    }

    fn flatten(response: KafkaResponse) -> Vec<u8> {
        let mut out = Vec::new();
        for part in response.parts {
            match part {
                OutPart::Encoded(bytes) => out.extend_from_slice(&bytes),
                OutPart::Raw(raw) => out.extend_from_slice(raw.bytes()),
            }
        }
        out
    }

    #[test]
    fn spliced_responses_equal_the_crate_encoding() {
        let sizes = [0usize, 100, 127, 128, 70_000, 3 << 20];
        let data: Vec<Bytes> = sizes
            .iter()
            .map(|&n| Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>()))
            .collect();
        for version in [4, 11, 12] {
            let inline: Vec<Option<Bytes>> = data.iter().cloned().map(Some).collect();
            let expected =
                flatten(encode_response(ApiKey::Fetch, 7, version, &response(&inline)).unwrap());
            // Splice every non-empty set, in both topics.
            let mut with_placeholders = inline.clone();
            let mut spliced = Vec::new();
            for topic in 0..2 {
                for (i, bytes) in data.iter().enumerate() {
                    if bytes.is_empty() {
                        continue;
                    }
                    if topic == 0 {
                        with_placeholders[i] = Some(placeholder());
                    }
                    // Sets in one piece in the first topic, in up to three in the second.
                    let pieces = if topic == 0 {
                        vec![RawPart::Owned(bytes.to_vec())]
                    } else {
                        let third = bytes.len() / 3 + 1;
                        bytes
                            .chunks(third)
                            .map(|piece| RawPart::Owned(piece.to_vec()))
                            .collect()
                    };
                    spliced.push((topic * data.len() + i, pieces));
                }
            }
            let encoded = encode_fetch(7, version, &response(&with_placeholders), spliced).unwrap();
            assert_eq!(flatten(encoded), expected, "version {version}");
        }
    }

    #[test]
    fn varint_prefixes() {
        assert_eq!(length_prefix(0, true).unwrap(), [1]);
        assert_eq!(length_prefix(126, true).unwrap(), [127]);
        assert_eq!(length_prefix(127, true).unwrap(), [0x80, 1]);
        assert_eq!(length_prefix(5, false).unwrap(), [0, 0, 0, 5]);
    }
}
