//! One Kafka client connection: a reader that splits `i32 size | request` frames and starts a
//! task per request, and a writer that sends the responses in request order (Kafka clients
//! match responses to requests by position as well as by correlation id).
//!
//! Bounds, as on the native connection: at most `requests_in_flight_max` requests are held
//! (counted until their response is sent, or dropped for acks=0); past it the reader stops
//! reading, so TCP slows a client that floods or never reads. The receive buffer grows only
//! to the frame being received, at most `frame_bytes_max`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::{Buf, Bytes};
use ringlog_engine::reactor::{self, tcp::TcpStream};

use super::codec::{KafkaError, KafkaResponse, OutPart, SIZE_PREFIX_BYTES};
use super::dispatch::{self, ClientInfo};
use super::KafkaShard;
use crate::server::connection::{send_part, watching_for_hangup};
use crate::server::recv_buffer;

/// Smallest request: api key, api version and correlation id.
const REQUEST_BYTES_MIN: usize = 8;

/// The place of one request in the response order.
enum Slot {
    /// Still being worked on.
    Pending,
    Done(Finished),
}

/// What a finished request leaves to the writer.
enum Finished {
    /// A response to send, or none (produce with acks=0).
    Respond(Option<KafkaResponse>),
    /// The request broke the protocol: close after the responses before it.
    Close,
}

struct Connection {
    stream: TcpStream,
    /// One slot per request in flight, oldest first; `first_sequence` numbers the front.
    slots: RefCell<VecDeque<Slot>>,
    first_sequence: Cell<u64>,
    next_sequence: Cell<u64>,
    writer_waker: RefCell<Option<Waker>>,
    reader_waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl Connection {
    fn in_flight(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Opens the slot for the next request; returns its sequence number.
    fn open(&self) -> u64 {
        let sequence = self.next_sequence.get();
        self.next_sequence.set(sequence + 1);
        self.slots.borrow_mut().push_back(Slot::Pending);
        sequence
    }

    /// Fills the slot of request `sequence`.
    fn finish(&self, sequence: u64, outcome: Result<Option<KafkaResponse>, KafkaError>) {
        let slot = match outcome {
            Ok(response) => Slot::Done(Finished::Respond(response)),
            Err(error) => {
                tracing::debug!(%error, "closing Kafka connection");
                Slot::Done(Finished::Close)
            }
        };
        {
            let mut slots = self.slots.borrow_mut();
            // Absent once the connection closed and dropped its queue.
            let index = sequence.checked_sub(self.first_sequence.get());
            if let Some(entry) = index.and_then(|i| slots.get_mut(usize::try_from(i).ok()?)) {
                debug_assert!(matches!(entry, Slot::Pending));
                *entry = slot;
            }
        }
        wake(&self.writer_waker);
    }

    /// Takes the oldest request once it is finished, frees its place and wakes the reader.
    fn take_front(&self) -> Option<Finished> {
        let mut slots = self.slots.borrow_mut();
        if !matches!(slots.front(), Some(Slot::Done(_))) {
            return None;
        }
        let Some(Slot::Done(finished)) = slots.pop_front() else {
            return None;
        };
        self.first_sequence.set(self.first_sequence.get() + 1);
        drop(slots);
        wake(&self.reader_waker);
        Some(finished)
    }

    fn close(&self) {
        self.closed.set(true);
        wake(&self.writer_waker);
        wake(&self.reader_waker);
    }
}

fn wake(waker: &RefCell<Option<Waker>>) {
    let taken = waker.borrow_mut().take();
    if let Some(waker) = taken {
        waker.wake();
    }
}

/// Serves one connection until the client closes it or breaks the protocol.
pub(crate) async fn serve(kafka: Rc<KafkaShard>, stream: TcpStream, advertised: SocketAddr) {
    let connection = Rc::new(Connection {
        stream,
        slots: RefCell::new(VecDeque::new()),
        first_sequence: Cell::new(0),
        next_sequence: Cell::new(0),
        writer_waker: RefCell::new(None),
        reader_waker: RefCell::new(None),
        closed: Cell::new(false),
    });
    let zero_copy_min_bytes = kafka.shard.config.send_zero_copy_min_bytes;
    let writer = reactor::spawn(write_responses(Rc::clone(&connection), zero_copy_min_bytes));
    let client = Rc::new(ClientInfo::new(advertised));
    read_requests(&kafka, &connection, &client).await;
    client.hangup.set();
    // Let the requests already started finish and their responses go out, then stop.
    poll_fn(|cx| {
        if connection.in_flight() == 0 || connection.closed.get() {
            Poll::Ready(())
        } else {
            *connection.reader_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
    connection.close();
    writer.await;
    connection.stream.shutdown();
}

/// Why the byte stream is not a sequence of Kafka requests.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("request size {0} is out of range (at least {REQUEST_BYTES_MIN}, at most {1})")]
    Size(i64, usize),
}

/// The size of the request at the start of `bytes` once all of it has arrived.
fn complete_frame(bytes: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = bytes.get(..SIZE_PREFIX_BYTES) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let size = usize::try_from(size)
        .ok()
        .filter(|size| (REQUEST_BYTES_MIN..=frame_bytes_max).contains(size))
        .ok_or(FrameError::Size(i64::from(size), frame_bytes_max))?;
    Ok((bytes.len() >= SIZE_PREFIX_BYTES + size).then_some(size))
}

async fn read_requests(
    kafka: &Rc<KafkaShard>,
    connection: &Rc<Connection>,
    client: &Rc<ClientInfo>,
) {
    let frame_bytes_max = kafka.shard.config.frame_bytes_max;
    let in_flight_max = kafka.shard.config.requests_in_flight_max;
    let mut buf = recv_buffer::new();
    loop {
        let mut consumed = 0;
        loop {
            if connection.closed.get() {
                return;
            }
            match complete_frame(&buf[consumed..], frame_bytes_max) {
                Ok(Some(size)) => {
                    wait_for_slot(connection, client, in_flight_max).await;
                    if connection.closed.get() {
                        return;
                    }
                    let start = consumed + SIZE_PREFIX_BYTES;
                    let whole =
                        recv_buffer::take_whole(&mut buf, consumed, SIZE_PREFIX_BYTES + size);
                    let frame = if let Some(whole) = whole {
                        frame_of_buffer(whole)
                    } else {
                        // Exact capacity: the Bytes made from it can be regained mutably.
                        let mut frame = Vec::with_capacity(size);
                        frame.extend_from_slice(&buf[start..start + size]);
                        consumed = start + size;
                        Bytes::from(frame)
                    };
                    let sequence = connection.open();
                    let (kafka, connection, client) =
                        (Rc::clone(kafka), Rc::clone(connection), Rc::clone(client));
                    reactor::spawn(async move {
                        let outcome = dispatch::handle(&kafka, &client, frame).await;
                        connection.finish(sequence, outcome);
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "closing Kafka connection after a bad frame");
                    return;
                }
            }
        }
        buf.drain(..consumed);
        // A request in progress is already checked against frame_bytes_max above.
        let frame_bytes = match complete_frame(&buf, frame_bytes_max) {
            Ok(_) => buf
                .get(..SIZE_PREFIX_BYTES)
                .map(|prefix| i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]))
                .and_then(|size| usize::try_from(size).ok())
                .map(|size| SIZE_PREFIX_BYTES + size),
            Err(_) => None,
        };
        recv_buffer::fit(&mut buf, frame_bytes);
        match recv_buffer::receive(&connection.stream, buf).await {
            Some(more) => buf = more,
            None => return,
        }
    }
}

async fn wait_for_slot(connection: &Connection, client: &ClientInfo, in_flight_max: usize) {
    let slot = poll_fn(|cx| {
        if connection.in_flight() < in_flight_max || connection.closed.get() {
            Poll::Ready(())
        } else {
            *connection.reader_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    });
    watching_for_hangup(&connection.stream, &client.hangup, slot).await;
}

async fn write_responses(connection: Rc<Connection>, zero_copy_min_bytes: usize) {
    loop {
        let next = poll_fn(|cx| {
            if let Some(finished) = connection.take_front() {
                return Poll::Ready(Some(finished));
            }
            if connection.closed.get() {
                return Poll::Ready(None);
            }
            *connection.writer_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let sent = match next {
            None => return,
            Some(Finished::Respond(Some(response))) => {
                send_response(&connection.stream, response, zero_copy_min_bytes).await
            }
            Some(Finished::Respond(None)) => Ok(()), // acks=0: nothing to send.
            Some(Finished::Close) => Err(std::io::ErrorKind::InvalidData.into()),
        };
        if let Err(error) = sent {
            tracing::debug!(%error, "Kafka connection closing");
            connection.close();
            // Ends the reader's pending receive, so the connection winds down now rather than
            // when the client next sends.
            connection.stream.shutdown();
            // Drop everything still queued so the reader stops waiting.
            connection.slots.borrow_mut().clear();
            wake(&connection.reader_waker);
            return;
        }
    }
}

async fn send_response(
    stream: &TcpStream,
    response: KafkaResponse,
    zero_copy_min_bytes: usize,
) -> std::io::Result<()> {
    // Parts after the last non-empty one send nothing, so that one must go without
    // MSG_MORE (a Fetch answer before v12 ends with an empty part after its records).
    let last = response
        .parts
        .iter()
        .rposition(|part| part.len() > 0)
        .unwrap_or(0);
    for (index, part) in response.parts.into_iter().enumerate() {
        let more = index < last;
        match part {
            OutPart::Encoded(bytes) => {
                let len = bytes.len();
                stream.send_all(bytes, 0..len, usize::MAX, more).await.0?;
            }
            OutPart::Raw(raw) => send_part(stream, raw, zero_copy_min_bytes, more).await?,
        }
    }
    Ok(())
}

/// The request in a receive buffer that holds exactly one `i32 size | request` frame, without
/// its size prefix and without a copy: the produce path regains the same memory mutably.
fn frame_of_buffer(buf: Vec<u8>) -> Bytes {
    assert!(
        buf.len() >= SIZE_PREFIX_BYTES,
        "the buffer holds a whole frame"
    );
    let mut frame = Bytes::from(buf);
    frame.advance(SIZE_PREFIX_BYTES);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_of_one_frame_becomes_the_request_without_a_copy() {
        for spare_bytes in [0, 100] {
            let mut buf = Vec::with_capacity(12 + spare_bytes);
            buf.extend_from_slice(&8i32.to_be_bytes());
            buf.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
            let request_at = buf[SIZE_PREFIX_BYTES..].as_ptr();
            let frame = frame_of_buffer(buf);
            assert_eq!(&frame[..], &[1, 2, 3, 4, 5, 6, 7, 8]);
            let regained = frame.try_into_mut().expect("the only view of the frame");
            assert_eq!(regained.as_ptr(), request_at, "the same memory, not a copy");
        }
    }

    #[test]
    fn frames_are_split_by_their_size_prefix() {
        let mut bytes = 8i32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 7]);
        assert_eq!(complete_frame(&bytes, 1 << 20).unwrap(), None);
        bytes.push(0);
        assert_eq!(complete_frame(&bytes, 1 << 20).unwrap(), Some(8));
        assert_eq!(complete_frame(&bytes[..3], 1 << 20).unwrap(), None);
    }

    #[test]
    fn sizes_out_of_range_break_the_stream() {
        for size in [-1i32, 0, 7, (1 << 20) + 1] {
            let bytes = size.to_be_bytes();
            assert!(complete_frame(&bytes, 1 << 20).is_err(), "size {size}");
        }
    }
}

#[cfg(test)]
mod send_tests {
    use std::io::Read;

    use ringlog_engine::reactor::{block_on, RingConfig};

    use super::*;
    use crate::server::connection::RawPart;

    /// A Fetch answer of a version before 12 ends with the last partition's records: the part
    /// encoded after them is empty. The response must still be pushed whole when sent, not
    /// held (MSG_MORE) for a later response; on loopback a pushed segment is in the peer's
    /// queue when send returns.
    #[test]
    fn a_response_whose_last_part_is_empty_is_pushed_whole() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        block_on(RingConfig::default(), async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            peer.set_nonblocking(true).unwrap();
            let response = KafkaResponse {
                parts: vec![
                    OutPart::Encoded(b"head".to_vec()),
                    OutPart::Raw(RawPart::Owned(b"records".to_vec())),
                    OutPart::Encoded(Vec::new()),
                ],
            };
            send_response(&stream, response, usize::MAX).await.unwrap();
            let mut bytes = [0u8; 64];
            let read = peer.read(&mut bytes);
            assert!(
                matches!(read, Ok(11)),
                "the response was held back after its last part: {read:?}"
            );
            assert_eq!(&bytes[..11], b"headrecords");
        })
        .unwrap();
    }
}
