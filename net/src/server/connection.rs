//! One client connection: a reader that splits frames and starts a task per request, and a
//! writer that sends finished responses in the order they finish.
//!
//! Bounds: a connection holds at most `requests_in_flight_max` requests (counted until their
//! response is sent); past it the reader stops reading, so a client that floods or never reads
//! its responses is slowed by TCP, and the server's memory for it stays bounded. The receive
//! buffer grows only to the frame being received, at most `frame_bytes_max`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use ringlog_engine::log::ReadSlice;
use ringlog_engine::reactor::{self, tcp::TcpStream};

use super::handler;
use super::latch::Latch;
use super::lending::LentPiece;
use super::recv_buffer;
use super::shard::Shard;
use crate::frame::{FrameDecoder, FrameError, FrameHeader, FRAME_HEADER_BYTES};

/// A request copied out of the receive buffer, so its task owns it.
pub(crate) struct Request {
    pub(crate) header: FrameHeader,
    /// The whole frame: its 12-byte header, the size-prefixed body, then raw batches. A large
    /// frame is the receive buffer itself, handed over without a copy.
    frame: Vec<u8>,
    /// Bytes of the size-prefixed body (after the header).
    body_bytes: usize,
    /// The end of the client's requests on this connection (long polls stop waiting).
    /// Set once the connection will carry no more requests: the client closed it (or its
    /// sending half), or broke the protocol. Requests already started still finish and are
    /// answered, but one that would only wait (a long poll) answers at once: a client that
    /// went away would otherwise keep its connection, and with it a descriptor and a place
    /// under `connections_max`, for as long as its `max_wait_ms` (up to 49 days), since the
    /// server cannot tell a client that closed from one that only shut down its sending half.
    pub(crate) hangup: Rc<Latch>,
}

impl Request {
    /// A request for `frame` (header, body of `body_bytes`, raw batches).
    fn new(header: FrameHeader, frame: Vec<u8>, body_bytes: usize, hangup: Rc<Latch>) -> Request {
        assert!(
            FRAME_HEADER_BYTES + body_bytes <= frame.len(),
            "the body lies within the frame"
        );
        Request {
            header,
            frame,
            body_bytes,
            hangup,
        }
    }

    /// The size-prefixed flatbuffer body.
    pub(crate) fn body(&self) -> &[u8] {
        &self.frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + self.body_bytes]
    }

    /// Raw batches after the body.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.frame[FRAME_HEADER_BYTES + self.body_bytes..]
    }

    /// Raw batches after the body, mutable so the owner can stamp offsets in place.
    pub(crate) fn raw_mut(&mut self) -> &mut [u8] {
        &mut self.frame[FRAME_HEADER_BYTES + self.body_bytes..]
    }
}

/// Raw batch bytes that follow a response body.
pub(crate) enum RawPart {
    /// Straight from the partition's buffers (no copy).
    Slice(ReadSlice),
    /// Copied from another shard.
    Owned(Vec<u8>),
    /// Lent by the shard that owns the partition (no copy).
    Lent(LentPiece),
}

impl RawPart {
    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            RawPart::Slice(slice) => slice.len(),
            RawPart::Owned(bytes) => bytes.len(),
            RawPart::Lent(piece) => piece.len(),
        }
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            RawPart::Slice(slice) => slice.bytes(),
            RawPart::Owned(bytes) => bytes,
            RawPart::Lent(piece) => piece.bytes(),
        }
    }
}

/// A finished response: frame header and body in `head`, then raw parts.
pub(crate) struct Response {
    pub(crate) head: Vec<u8>,
    pub(crate) raw: Vec<RawPart>,
}

struct Connection {
    stream: TcpStream,
    outbound: RefCell<VecDeque<Option<Response>>>,
    writer_waker: RefCell<Option<Waker>>,
    reader_waker: RefCell<Option<Waker>>,
    in_flight: Cell<usize>,
    closed: Cell<bool>,
    hangup: Rc<Latch>,
}

impl Connection {
    fn push(&self, response: Option<Response>) {
        if self.closed.get() {
            self.release();
            return;
        }
        self.outbound.borrow_mut().push_back(response);
        if let Some(waker) = self.writer_waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn release(&self) {
        let in_flight = self.in_flight.get();
        assert!(in_flight > 0, "released more requests than started");
        self.in_flight.set(in_flight - 1);
        if let Some(waker) = self.reader_waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        if let Some(waker) = self.writer_waker.borrow_mut().take() {
            waker.wake();
        }
        if let Some(waker) = self.reader_waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Serves one connection until the client closes it or breaks the protocol.
pub(crate) async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let connection = Rc::new(Connection {
        stream,
        outbound: RefCell::new(VecDeque::new()),
        writer_waker: RefCell::new(None),
        reader_waker: RefCell::new(None),
        in_flight: Cell::new(0),
        closed: Cell::new(false),
        hangup: Rc::default(),
    });
    let writer = reactor::spawn(write_responses(Rc::clone(&shard), Rc::clone(&connection)));
    read_requests(&shard, &connection).await;
    connection.hangup.set();
    // Let the requests already started finish and their responses go out, then stop.
    poll_fn(|cx| {
        if connection.in_flight.get() == 0 || connection.closed.get() {
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

async fn read_requests(shard: &Rc<Shard>, connection: &Rc<Connection>) {
    let decoder = FrameDecoder::new(shard.config.frame_bytes_max);
    let in_flight_max = shard.config.requests_in_flight_max;
    let mut buf = recv_buffer::new();
    loop {
        let mut consumed = 0;
        loop {
            if connection.closed.get() {
                return;
            }
            match decoder.decode(&buf[consumed..]) {
                Ok(Some(frame)) => {
                    let (header, total_bytes, body_bytes) =
                        (frame.header, frame.total_bytes, frame.body.len());
                    wait_for_slot(connection, in_flight_max).await;
                    if connection.closed.get() {
                        // Its answer could not be sent: a produce would be stored for a
                        // client that is told nothing (and retries it elsewhere).
                        return;
                    }
                    let frame = match recv_buffer::take_whole(&mut buf, consumed, total_bytes) {
                        Some(whole) => whole,
                        None => {
                            let bytes = buf[consumed..consumed + total_bytes].to_vec();
                            consumed += total_bytes;
                            bytes
                        }
                    };
                    let hangup = Rc::clone(&connection.hangup);
                    let request = Request::new(header, frame, body_bytes, hangup);
                    connection.in_flight.set(connection.in_flight.get() + 1);
                    let (shard, connection) = (Rc::clone(shard), Rc::clone(connection));
                    reactor::spawn(async move {
                        let response = handler::handle(&shard, request).await;
                        connection.push(response);
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    reject_frame(connection, &buf[consumed..], error);
                    return;
                }
            }
        }
        buf.drain(..consumed);
        // A frame in progress is already checked against frame_bytes_max by the decoder.
        let frame_bytes = decoder.peek_total_bytes(&buf).ok().flatten();
        recv_buffer::fit(&mut buf, frame_bytes);
        match recv_buffer::receive(&connection.stream, buf).await {
            Some(more) => buf = more,
            None => return,
        }
    }
}

async fn wait_for_slot(connection: &Connection, in_flight_max: usize) {
    let slot = poll_fn(|cx| {
        if connection.in_flight.get() < in_flight_max || connection.closed.get() {
            Poll::Ready(())
        } else {
            *connection.reader_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    });
    watching_for_hangup(&connection.stream, &connection.hangup, slot).await;
}

/// Runs `wait` (the reader waiting for a free slot) while watching for the client going away.
/// A reader that waits does not receive, so it would not see the EOF: the long polls holding
/// the slots would then run their whole `max_wait_ms`, and the connection with them. Once the
/// client is gone, `hangup` is set, which ends them.
pub(crate) async fn watching_for_hangup(
    stream: &TcpStream,
    hangup: &Latch,
    wait: impl Future<Output = ()>,
) {
    let mut wait = pin!(wait);
    let mut closed = pin!(stream.peer_closed());
    let mut watching = true;
    poll_fn(|cx| {
        if wait.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if watching && closed.as_mut().poll(cx).is_ready() {
            watching = false;
            hangup.set();
        }
        Poll::Pending
    })
    .await;
}

/// Answers a frame that cannot be decoded (too large or malformed) and closes the connection:
/// after a framing error the byte stream cannot be trusted.
fn reject_frame(connection: &Connection, bytes: &[u8], error: FrameError) {
    tracing::debug!(%error, "closing connection after a bad frame");
    if let Some(header) = FrameHeader::decode(bytes) {
        connection.in_flight.set(connection.in_flight.get() + 1);
        connection.push(Some(handler::frame_error_response(&header, &error)));
    }
}

async fn write_responses(shard: Rc<Shard>, connection: Rc<Connection>) {
    let zero_copy_min_bytes = shard.config.send_zero_copy_min_bytes;
    loop {
        let next = poll_fn(|cx| {
            if let Some(response) = connection.outbound.borrow_mut().pop_front() {
                return Poll::Ready(Some(response));
            }
            if connection.closed.get() {
                return Poll::Ready(None);
            }
            *connection.writer_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(response) = next else { return };
        let sent = match response {
            Some(response) => {
                send_response(&connection.stream, response, zero_copy_min_bytes).await
            }
            None => Ok(()), // acks=none: nothing to send.
        };
        connection.release();
        if let Err(error) = sent {
            tracing::debug!(%error, "connection send failed");
            connection.close();
            // Release everything still queued so the reader stops waiting.
            let queued: Vec<_> = connection.outbound.borrow_mut().drain(..).collect();
            for _ in queued {
                connection.release();
            }
            return;
        }
    }
}

async fn send_response(
    stream: &TcpStream,
    response: Response,
    zero_copy_min_bytes: usize,
) -> std::io::Result<()> {
    let len = response.head.len();
    // An empty part sends nothing: the last non-empty one must go without MSG_MORE.
    let last = response.raw.iter().rposition(|part| part.len() > 0);
    let (result, _) = stream
        .send_all(response.head, 0..len, usize::MAX, last.is_some())
        .await;
    result?;
    for (index, part) in response.raw.into_iter().enumerate() {
        let more = last.is_some_and(|last| index < last);
        send_part(stream, part, zero_copy_min_bytes, more).await?;
    }
    Ok(())
}

/// Sends one raw part of a response; `more` when parts of the same response follow.
pub(crate) async fn send_part(
    stream: &TcpStream,
    part: RawPart,
    zero_copy_min_bytes: usize,
    more: bool,
) -> std::io::Result<()> {
    match part {
        RawPart::Slice(slice) => {
            let len = slice.len();
            stream
                .send_all(slice, 0..len, zero_copy_min_bytes, more)
                .await
                .0
        }
        RawPart::Owned(bytes) => {
            let len = bytes.len();
            stream
                .send_all(bytes, 0..len, zero_copy_min_bytes, more)
                .await
                .0
        }
        RawPart::Lent(piece) => {
            let len = piece.len();
            stream
                .send_all(piece, 0..len, zero_copy_min_bytes, more)
                .await
                .0
        }
    }
}
