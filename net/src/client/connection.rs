//! A framed, pipelined connection over a blocking `std::net::TcpStream`.
//!
//! Requests are written as soon as they are sent; any number may be in flight. Responses are
//! matched to requests by correlation id, whatever order the server answers in (requests for
//! partitions on different shards may complete out of order).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;

use super::error::ClientError;
use crate::api::ApiKey;
use crate::frame::FRAME_HEADER_BYTES;
use crate::frame::{encode_header, FrameDecoder, FrameHeader, FRAME_BYTES_MAX_DEFAULT};
use crate::message::{Call, Decode, Encode};

/// Bytes read from the socket at a time; frames larger than this are read straight into a
/// buffer of their own size.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Largest response frame accepted (length field included).
    pub frame_bytes_max: usize,
    /// How long to wait for a response before giving up on the connection; also how long a
    /// request may wait to be written (a server that stopped reading).
    pub request_timeout_ms: u64,
    /// How long to wait for the TCP connection to be established.
    pub connect_timeout_ms: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
        }
    }
}

/// One received response frame, owning its bytes.
///
/// A large frame owns the buffer it was received into, which may be longer than the frame;
/// [`ResponseFrame::into_buffer`] gives that buffer back for [`Connection::recycle`], so the
/// next large frame is received without allocating and zeroing megabytes again.
#[derive(Debug, Clone)]
pub struct ResponseFrame {
    header: FrameHeader,
    /// The whole frame (header included) in `bytes[..len]`; what follows is unused room.
    bytes: Vec<u8>,
    /// Bytes of the frame.
    len: usize,
    /// End of the body within `bytes`; raw batches follow up to `len`.
    body_end: usize,
}

impl PartialEq for ResponseFrame {
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header && self.frame_bytes() == other.frame_bytes()
    }
}

impl Eq for ResponseFrame {}

impl ResponseFrame {
    /// Takes ownership of one complete frame's bytes, checking its framing.
    pub fn from_bytes(bytes: Vec<u8>, decoder: &FrameDecoder) -> Result<Self, ClientError> {
        let len = bytes.len();
        Self::from_buffer(bytes, len, decoder)
    }

    /// Takes ownership of a buffer whose first `len` bytes are one complete frame.
    fn from_buffer(
        bytes: Vec<u8>,
        len: usize,
        decoder: &FrameDecoder,
    ) -> Result<Self, ClientError> {
        let frame = decoder
            .decode(bytes.get(..len).unwrap_or_default())?
            .filter(|frame| frame.total_bytes == len)
            .ok_or(ClientError::UnexpectedResponse(
                "frame bytes do not hold exactly one frame".to_owned(),
            ))?;
        let (header, body_end) = (frame.header, FRAME_HEADER_BYTES + frame.body.len());
        Ok(Self {
            header,
            bytes,
            len,
            body_end,
        })
    }

    /// The frame header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The size-prefixed flatbuffer body.
    pub fn body(&self) -> &[u8] {
        self.bytes
            .get(FRAME_HEADER_BYTES..self.body_end)
            .unwrap_or_default()
    }

    /// The raw record batches after the body.
    pub fn raw(&self) -> &[u8] {
        self.bytes.get(self.body_end..self.len).unwrap_or_default()
    }

    /// The verified response view, e.g. `frame.view::<fetch::ResponseView>()`.
    pub fn view<'a, V: Decode<'a>>(&'a self) -> Result<V, ClientError> {
        Ok(V::decode(self.body())?)
    }

    /// The buffer the frame was received into, for [`Connection::recycle`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }

    fn frame_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// The sending half: encodes requests and writes whole frames.
pub struct FrameWriter {
    stream: TcpStream,
    fbb: FlatBufferBuilder<'static>,
    head: Vec<u8>,
    next_correlation_id: u32,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("stream", &self.stream)
            .field("next_correlation_id", &self.next_correlation_id)
            .finish_non_exhaustive()
    }
}

impl FrameWriter {
    /// The correlation id the next request will carry.
    pub fn next_correlation_id(&self) -> u32 {
        self.next_correlation_id
    }

    /// Encodes `request` and writes it as one frame (header, body, raw parts) with a single
    /// vectored write where the socket allows. Returns its correlation id.
    pub fn write_request<R: Encode>(&mut self, request: &R) -> Result<u32, ClientError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let body = request.encode(&mut self.fbb);
        let raw_bytes = request.raw_parts().map(<[u8]>::len).sum();
        let header = FrameHeader::for_message(
            R::API.as_u16(),
            R::VERSION,
            correlation_id,
            body.len(),
            raw_bytes,
        )?;
        self.head.clear();
        self.head.extend_from_slice(&encode_header(&header));
        self.head.extend_from_slice(body);
        let mut slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&self.head))
            .chain(request.raw_parts().map(IoSlice::new))
            .collect();
        if let Err(error) = write_all_vectored(&mut self.stream, &mut slices) {
            return Err(write_failure(&self.stream, error));
        }
        Ok(correlation_id)
    }

    /// Closes both directions of the socket, which also wakes a [`FrameReader`] blocked on it.
    pub fn shutdown(&self) {
        // Already closed or broken sockets are fine to leave as they are.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Another handle to the same socket (for shutting it down from elsewhere).
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }
}

/// A failed write as a client error: one that made no progress for the socket's write
/// timeout (the request timeout: the server stopped reading) is a [`ClientError::Timeout`].
fn write_failure(stream: &TcpStream, error: io::Error) -> ClientError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            let timeout = stream.write_timeout().ok().flatten().unwrap_or_default();
            ClientError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }
        }
        _ => error.into(),
    }
}

/// Writes every byte of `slices`, retrying short and interrupted writes.
fn write_all_vectored(stream: &mut TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The receiving half: reads whole frames. A read timeout leaves a partly received frame in
/// place, so reading may simply continue afterwards.
///
/// Frames that fit the read buffer are read in `READ_BUFFER_BYTES` reads and copied out;
/// a larger frame is read straight into a buffer of its own (a recycled one when it is large
/// enough), which the frame then owns.
#[derive(Debug)]
pub struct FrameReader {
    stream: TcpStream,
    decoder: FrameDecoder,
    /// Received bytes are `buf[start..filled]`.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// The frame too large for `buf` being received, if any.
    large: Option<LargeFrame>,
    /// A buffer of an earlier large frame, given back with [`FrameReader::recycle`].
    spare: Option<Vec<u8>>,
    read_timeout: Option<Duration>,
}

/// A frame larger than the read buffer, being read into a buffer of its own.
#[derive(Debug)]
struct LargeFrame {
    /// At least `total` bytes long; the frame goes to `bytes[..total]`.
    bytes: Vec<u8>,
    /// Bytes of the frame received so far.
    filled: usize,
    /// Bytes of the whole frame.
    total: usize,
}

impl FrameReader {
    /// A reader of frames up to `decoder`'s limit from `stream`.
    pub(crate) fn new(stream: TcpStream, decoder: FrameDecoder, buffer_bytes: usize) -> Self {
        Self {
            stream,
            decoder,
            buf: vec![0; buffer_bytes.max(FRAME_HEADER_BYTES)],
            start: 0,
            filled: 0,
            large: None,
            spare: None,
            read_timeout: None,
        }
    }

    /// Sets how long one read may block; `None` blocks indefinitely.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        if self.read_timeout != timeout {
            self.stream.set_read_timeout(timeout)?;
            self.read_timeout = timeout;
        }
        Ok(())
    }

    /// Reads the next frame. Fails with [`ClientError::Timeout`] when the read timeout passes
    /// (call again to keep waiting), [`ClientError::Disconnected`] at end of stream.
    pub fn read_frame(&mut self) -> Result<ResponseFrame, ClientError> {
        self.next_frame(true)?.ok_or_else(|| ClientError::Timeout {
            timeout_ms: self.read_timeout.map_or(0, |t| t.as_millis() as u64),
        })
    }

    /// Reads the next frame if it is there whole (buffered or on the socket) now; `None`
    /// when more of it is still to come. Received bytes of an incomplete frame stay buffered.
    fn try_read_frame(&mut self) -> Result<Option<ResponseFrame>, ClientError> {
        self.next_frame(false)
    }

    /// Reads the next frame, waiting for its bytes (`wait`) or taking only those already
    /// received (`None` when the frame is not whole yet).
    fn next_frame(&mut self, wait: bool) -> Result<Option<ResponseFrame>, ClientError> {
        loop {
            if let Some(large) = &mut self.large {
                if large.filled == large.total {
                    let LargeFrame { bytes, total, .. } =
                        self.large.take().expect("a large frame is in progress");
                    return ResponseFrame::from_buffer(bytes, total, &self.decoder).map(Some);
                }
                let free = large
                    .bytes
                    .get_mut(large.filled..large.total)
                    .unwrap_or_default();
                match read_some(&mut self.stream, free, self.read_timeout, wait)? {
                    Some(read) => large.filled += read,
                    None => return Ok(None),
                }
                continue;
            }
            let available = self.buf.get(self.start..self.filled).unwrap_or_default();
            let needed = match self.decoder.peek_total_bytes(available)? {
                Some(total) if available.len() >= total => return self.take_frame(total).map(Some),
                Some(total) if total > self.buf.len() => {
                    self.start_large(total);
                    continue;
                }
                Some(total) => total,
                None => FRAME_HEADER_BYTES,
            };
            self.make_room(needed);
            if !self.fill(wait)? {
                return Ok(None);
            }
        }
    }

    /// Keeps `buffer` (from [`ResponseFrame::into_buffer`]) to receive a later large frame
    /// into, if it is larger than the one kept already.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        let kept_bytes = self.spare.as_ref().map_or(0, Vec::len);
        if buffer.len() > self.buf.len() && buffer.len() > kept_bytes {
            self.spare = Some(buffer);
        }
    }

    /// Whether bytes of a frame were received and not yet taken: reading on needs no wait
    /// for the socket to become readable.
    /// Whether a whole frame is buffered (or bytes that are no frame, which reading reports):
    /// reading it needs nothing more from the socket.
    fn has_whole_frame(&self) -> bool {
        if let Some(large) = &self.large {
            return large.filled == large.total;
        }
        let available = self.buf.get(self.start..self.filled).unwrap_or_default();
        match self.decoder.peek_total_bytes(available) {
            Ok(Some(total)) => available.len() >= total,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// The correlation id of the frame whose first bytes are buffered, once its header is.
    fn buffered_correlation_id(&self) -> Option<u32> {
        let buffered = match &self.large {
            Some(large) => large.bytes.get(..large.filled),
            None => self.buf.get(self.start..self.filled),
        };
        FrameHeader::decode(buffered.unwrap_or_default()).map(|header| header.correlation_id)
    }

    /// Moves the start of a frame of `total` bytes, larger than the read buffer, into a
    /// buffer of its own.
    fn start_large(&mut self, total: usize) {
        let mut bytes = match self.spare.take() {
            Some(spare) if spare.len() >= total => spare,
            // Room to spare, so slightly larger frames later fit the recycled buffer too.
            _ => vec![
                0;
                total
                    .next_power_of_two()
                    .min(self.decoder.frame_bytes_max())
                    .max(total)
            ],
        };
        let received = self.filled - self.start;
        debug_assert!(received < total, "a complete frame is taken, not moved");
        bytes[..received].copy_from_slice(&self.buf[self.start..self.filled]);
        self.start = 0;
        self.filled = 0;
        self.large = Some(LargeFrame {
            bytes,
            filled: received,
            total,
        });
    }

    /// Ensures the buffer can hold `needed` bytes from `start`, compacting first.
    fn make_room(&mut self, needed: usize) {
        debug_assert!(
            needed <= self.buf.len(),
            "larger frames get a buffer of their own"
        );
        if self.buf.len() - self.start >= needed {
            return;
        }
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
    }

    /// One read into the free part of the buffer; `false` when `wait` is not set and the
    /// socket had nothing.
    fn fill(&mut self, wait: bool) -> Result<bool, ClientError> {
        debug_assert!(
            self.filled < self.buf.len(),
            "make_room leaves space to read"
        );
        let free = self.buf.get_mut(self.filled..).unwrap_or_default();
        match read_some(&mut self.stream, free, self.read_timeout, wait)? {
            Some(read) => {
                self.filled += read;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Copies the complete frame of `total` bytes at `start` out of the buffer.
    fn take_frame(&mut self, total: usize) -> Result<ResponseFrame, ClientError> {
        let end = self.start + total;
        let bytes = self.buf.get(self.start..end).unwrap_or_default().to_vec();
        self.start = end;
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
        ResponseFrame::from_bytes(bytes, &self.decoder)
    }
}

/// One read into `free` (not empty); returns the bytes read. Without `wait`, only what the
/// socket holds now is read: `None` when it holds nothing.
fn read_some(
    stream: &mut TcpStream,
    free: &mut [u8],
    read_timeout: Option<Duration>,
    wait: bool,
) -> Result<Option<usize>, ClientError> {
    debug_assert!(!free.is_empty(), "reads go into free room");
    loop {
        let result = if wait {
            stream.read(free)
        } else {
            read_now(stream, free)
        };
        match result {
            Ok(0) => return Err(ClientError::Disconnected),
            Ok(read) => return Ok(Some(read)),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if !wait && error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let timeout_ms = read_timeout.map_or(0, |t| t.as_millis() as u64);
                return Err(ClientError::Timeout { timeout_ms });
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// A read that does not wait. MSG_DONTWAIT rather than O_NONBLOCK: the flag would also
/// change the writer's descriptor, which shares the socket's open file description.
fn read_now(stream: &TcpStream, free: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `free` is a live, exclusively borrowed buffer of `free.len()` bytes; recv(2)
    // writes at most that many into it.
    let read = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            free.as_mut_ptr().cast(),
            free.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(read).map_err(|_| io::Error::last_os_error())
}

/// A pipelined connection: send many requests, then receive each response by correlation id.
///
/// ```no_run
/// use ringlog_net::client::Connection;
/// use ringlog_net::message::{metadata, list_topics};
///
/// # fn main() -> Result<(), ringlog_net::client::ClientError> {
/// let mut connection = Connection::connect("127.0.0.1:9092", Default::default())?;
/// let first = connection.send(&list_topics::Request)?;
/// let second = connection.send(&metadata::Request { topics: &[] })?;
/// let metadata = connection.receive(second)?; // answered in any order
/// let topics = connection.receive(first)?;
/// let view = topics.view::<list_topics::ResponseView>()?;
/// # let _ = (view, metadata);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Connection {
    writer: FrameWriter,
    reader: FrameReader,
    /// Requests awaiting a response: correlation id and api.
    pending: Vec<(u32, ApiKey)>,
    /// Responses received while waiting for another one.
    arrived: VecDeque<ResponseFrame>,
    /// Requests whose responses are dropped when they arrive (see [`Connection::abandon`]).
    abandoned: Vec<u32>,
    /// Set once the connection failed; every later call returns it.
    broken: Option<ClientError>,
    request_timeout: Duration,
}

impl Connection {
    /// Connects (TCP_NODELAY on) to the first address that accepts.
    pub fn connect(
        addr: impl ToSocketAddrs,
        config: ConnectionConfig,
    ) -> Result<Self, ClientError> {
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
        let mut last_error = None;
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, connect_timeout) {
                Ok(stream) => return Self::from_stream(stream, config),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error
            .unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
            })
            .into())
    }

    /// Connects so that the server's shard `shard` (of `shard_count`, as ApiVersions or
    /// Metadata tell) serves the connection: requests for that shard's partitions then never
    /// travel between shards. Falls back to [`Connection::connect`] when no suitable source
    /// port is free.
    pub fn connect_to_shard(
        addr: impl ToSocketAddrs,
        shard: u16,
        shard_count: u16,
        config: ConnectionConfig,
    ) -> Result<Self, ClientError> {
        if shard >= shard_count {
            return Err(ClientError::InvalidArgument(format!(
                "shard {shard} is not below the shard count {shard_count}"
            )));
        }
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        for addr in &addrs {
            if let Ok(Some(stream)) =
                super::steering::connect_steered(*addr, shard, shard_count, connect_timeout)
            {
                return Self::from_stream(stream, config);
            }
        }
        Self::connect(addrs.as_slice(), config)
    }

    /// Wraps an established stream.
    pub fn from_stream(stream: TcpStream, config: ConnectionConfig) -> Result<Self, ClientError> {
        // Requests are whole frames written at once; never hold them back (Nagle).
        stream.set_nodelay(true)?;
        let reader_stream = stream.try_clone()?;
        let request_timeout = Duration::from_millis(config.request_timeout_ms.max(1));
        // The request timeout bounds sending too: a server that stopped reading (hung,
        // stopped, past its in-flight bound for that long) would otherwise hold a request
        // larger than the socket buffers, and every caller behind it, in write forever. The
        // timeout applies to each write, so a large request that keeps moving is not cut off.
        // Set on the socket, it holds for the halves of `split` too (the producer's sender).
        stream.set_write_timeout(Some(request_timeout))?;
        let mut reader = FrameReader::new(
            reader_stream,
            FrameDecoder::new(config.frame_bytes_max),
            READ_BUFFER_BYTES,
        );
        reader.set_read_timeout(Some(request_timeout))?;
        Ok(Self {
            writer: FrameWriter {
                stream,
                fbb: FlatBufferBuilder::with_capacity(4096),
                head: Vec::with_capacity(4096),
                next_correlation_id: 0,
            },
            reader,
            pending: Vec::new(),
            arrived: VecDeque::new(),
            abandoned: Vec::new(),
            broken: None,
            request_timeout,
        })
    }

    /// Sends a request that will be answered; returns its correlation id for [`Self::receive`].
    pub fn send<R: Encode>(&mut self, request: &R) -> Result<u32, ClientError> {
        let correlation_id = self.send_without_response(request)?;
        self.pending.push((correlation_id, R::API));
        Ok(correlation_id)
    }

    /// Sends a request the server does not answer (Produce with `Acks::None`).
    pub fn send_without_response<R: Encode>(&mut self, request: &R) -> Result<u32, ClientError> {
        self.check_usable()?;
        let result = self.writer.write_request(request);
        self.note_failure(result)
    }

    /// Sends `request` and waits for its response.
    pub fn call<R: Call>(&mut self, request: &R) -> Result<ResponseFrame, ClientError> {
        let correlation_id = self.send(request)?;
        self.receive(correlation_id)
    }

    /// Waits for the response to `correlation_id`, keeping other responses that arrive first.
    pub fn receive(&mut self, correlation_id: u32) -> Result<ResponseFrame, ClientError> {
        self.receive_within(correlation_id, self.request_timeout)
    }

    /// [`Self::receive`] with a longer wait, for long polls (a fetch's `max_wait_ms` plus the
    /// request timeout).
    pub fn receive_within(
        &mut self,
        correlation_id: u32,
        timeout: Duration,
    ) -> Result<ResponseFrame, ClientError> {
        if let Some(index) = self
            .arrived
            .iter()
            .position(|frame| frame.header().correlation_id == correlation_id)
        {
            if let Some(frame) = self.arrived.remove(index) {
                return Ok(frame);
            }
        }
        if !self.pending.iter().any(|(id, _)| *id == correlation_id) {
            return Err(ClientError::UnexpectedResponse(format!(
                "no request with correlation id {correlation_id} is awaiting a response"
            )));
        }
        loop {
            let frame = self.read_response(timeout)?;
            if frame.header().correlation_id == correlation_id {
                return Ok(frame);
            }
            self.arrived.push_back(frame);
        }
    }

    /// Requests sent and not yet received (abandoned ones included until they arrive).
    pub fn in_flight(&self) -> usize {
        self.pending.len() + self.arrived.len() + self.abandoned.len()
    }

    /// Stops waiting for the response to `correlation_id` (a prefetch that is no longer
    /// wanted): it is read and dropped when it arrives, and [`Self::receive`] no longer knows
    /// it.
    pub fn abandon(&mut self, correlation_id: u32) {
        if let Some(index) = self
            .arrived
            .iter()
            .position(|frame| frame.header().correlation_id == correlation_id)
        {
            if let Some(frame) = self.arrived.remove(index) {
                self.recycle(frame.into_buffer());
            }
            return;
        }
        if let Some(index) = self
            .pending
            .iter()
            .position(|(id, _)| *id == correlation_id)
        {
            self.pending.swap_remove(index);
            self.abandoned.push(correlation_id);
        }
    }

    /// Keeps a received frame's buffer ([`ResponseFrame::into_buffer`]) to receive a later
    /// large frame into, instead of allocating (and zeroing) a new one.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        self.reader.recycle(buffer);
    }

    /// Splits into independent sending and receiving halves (e.g. for a sender thread and a
    /// receiver thread). Fails if responses are still awaited, which the halves would not know.
    pub fn split(self) -> Result<(FrameWriter, FrameReader), ClientError> {
        self.check_usable()?;
        if self.in_flight() > 0 {
            return Err(ClientError::InvalidArgument(
                "cannot split a connection with requests in flight".to_owned(),
            ));
        }
        Ok((self.writer, self.reader))
    }

    /// Reads one response and checks it against the requests in flight; responses to
    /// abandoned requests are dropped on the way.
    fn read_response(&mut self, timeout: Duration) -> Result<ResponseFrame, ClientError> {
        self.check_usable()?;
        let result = self.reader.set_read_timeout(Some(timeout));
        self.note_failure(result)?;
        loop {
            let result = self.reader.read_frame();
            let frame = self.note_failure(result)?;
            if let Some(frame) = self.accept(frame)? {
                return Ok(frame);
            }
        }
    }

    /// Reads, without waiting, the responses that arrived whole: those to abandoned requests
    /// are dropped, the others kept for [`Self::receive`]. Returns whether receiving the
    /// response to `correlation_id` now waits at most for the rest of it: it arrived, or its
    /// first bytes did. A socket found readable may hold only abandoned responses, and
    /// receiving would then wait for this one as long as the server takes to answer it.
    pub(crate) fn response_started(&mut self, correlation_id: u32) -> Result<bool, ClientError> {
        self.check_usable()?;
        loop {
            let arrived = self.arrived.iter();
            if arrived
                .map(|frame| frame.header().correlation_id)
                .any(|id| id == correlation_id)
            {
                return Ok(true);
            }
            let result = self.reader.try_read_frame();
            let Some(frame) = self.note_failure(result)? else {
                break;
            };
            if let Some(frame) = self.accept(frame)? {
                self.arrived.push_back(frame);
            }
        }
        Ok(self.reader.buffered_correlation_id() == Some(correlation_id))
    }

    /// Checks a received response against the requests in flight; `None` for an abandoned
    /// request's, which is dropped.
    fn accept(&mut self, frame: ResponseFrame) -> Result<Option<ResponseFrame>, ClientError> {
        let id = frame.header().correlation_id;
        if let Some(index) = self.abandoned.iter().position(|abandoned| *abandoned == id) {
            self.abandoned.swap_remove(index);
            self.recycle(frame.into_buffer());
            return Ok(None);
        }
        let Some(index) = self.pending.iter().position(|(pending, _)| *pending == id) else {
            return self.note_failure(Err(ClientError::UnexpectedResponse(format!(
                "response with unknown correlation id {id}"
            ))));
        };
        let (_, api) = self.pending.swap_remove(index);
        if frame.header().api != api.as_u16() {
            return self.note_failure(Err(ClientError::UnexpectedResponse(format!(
                "response to {api} carries api {}",
                frame.header().api
            ))));
        }
        Ok(Some(frame))
    }

    /// Whether receiving starts without waiting on the socket: a response arrived already,
    /// one is buffered whole, or the connection is broken (receiving reports it). Part of a
    /// response buffered does not count: the rest comes through the socket, which a wait
    /// watches; counting it would make a waiter that reads only whole responses spin.
    pub(crate) fn has_buffered_response(&self) -> bool {
        self.broken.is_some() || !self.arrived.is_empty() || self.reader.has_whole_frame()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.reader.stream.peer_addr()?)
    }

    /// The socket responses arrive on, for waiting on several connections at once.
    pub(crate) fn receive_fd(&self) -> RawFd {
        self.reader.stream.as_raw_fd()
    }

    /// The failure that broke the connection, if one did (every later call returns it).
    pub(crate) fn broken(&self) -> Option<&ClientError> {
        self.broken.as_ref()
    }

    /// Errors once the connection is broken.
    fn check_usable(&self) -> Result<(), ClientError> {
        match &self.broken {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Any failure on the socket or in framing leaves the stream in an unknown state (a
    /// partial frame, a late response), so the connection is closed and not used again.
    fn note_failure<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(error) = &result {
            self.broken = Some(error.clone());
            self.writer.shutdown();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::TopicConfig;
    use crate::message::{list_topics, metadata, produce, ResponseStatus as _, Status};
    use std::net::TcpListener;
    use std::thread;

    /// A tiny server: reads `count` request frames, then answers them in reverse order with
    /// ListTopics/Metadata responses naming the request's correlation id in a topic name.
    fn reverse_echo_server(count: usize) -> (std::net::SocketAddr, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader =
                FrameReader::new(stream.try_clone().unwrap(), FrameDecoder::default(), 16);
            let mut requests = Vec::new();
            for _ in 0..count {
                requests.push(*reader.read_frame().unwrap().header());
            }
            let mut out = stream;
            let mut fbb = FlatBufferBuilder::new();
            for header in requests.iter().rev() {
                let name = format!("c{}", header.correlation_id);
                let body = if header.api == ApiKey::ListTopics.as_u16() {
                    let topics = [TopicConfig {
                        name: &name,
                        partitions: 1,
                        retention_ms: -1,
                        retention_bytes: -1,
                        segment_bytes: 0,
                    }];
                    list_topics::Response {
                        status: Status::OK,
                        topics: &topics,
                    }
                    .encode(&mut fbb)
                    .to_vec()
                } else {
                    metadata::Response {
                        status: Status::OK,
                        shard_count: 1,
                        topics: &[],
                    }
                    .encode(&mut fbb)
                    .to_vec()
                };
                let mut frame = Vec::new();
                crate::frame::write_frame(
                    &mut frame,
                    header.api,
                    0,
                    header.correlation_id,
                    &body,
                    &[],
                )
                .unwrap();
                // Dribble the bytes to exercise partial reads on the client side.
                for chunk in frame.chunks(7) {
                    out.write_all(chunk).unwrap();
                }
            }
        });
        (addr, handle)
    }

    #[test]
    fn pipelined_requests_are_matched_by_correlation_id() {
        let (addr, server) = reverse_echo_server(6);
        let mut connection = Connection::connect(addr, ConnectionConfig::default()).unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            let id = if i % 2 == 0 {
                connection.send(&list_topics::Request).unwrap()
            } else {
                connection.send(&metadata::Request { topics: &[] }).unwrap()
            };
            ids.push(id);
        }
        assert_eq!(connection.in_flight(), 6);
        for (i, id) in ids.iter().enumerate() {
            let frame = connection.receive(*id).unwrap();
            assert_eq!(frame.header().correlation_id, *id);
            if i % 2 == 0 {
                let view = frame.view::<list_topics::ResponseView>().unwrap();
                assert!(view.status().is_ok());
                assert_eq!(view.topics().unwrap().get(0).name(), format!("c{id}"));
            } else {
                let view = frame.view::<metadata::ResponseView>().unwrap();
                assert_eq!(view.shard_count(), 1);
            }
        }
        assert_eq!(connection.in_flight(), 0);
        server.join().unwrap();
        // The server closed the socket: the connection reports it and stays broken.
        let id = connection.send(&list_topics::Request);
        if let Ok(id) = id {
            assert!(connection.receive(id).is_err());
        }
        assert!(connection.send(&list_topics::Request).is_err());
    }

    #[test]
    fn raw_parts_follow_the_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = FrameReader::new(stream, FrameDecoder::default(), 64);
            let frame = reader.read_frame().unwrap();
            let view = frame.view::<produce::RequestView>().unwrap();
            let pairs: Vec<(u32, Vec<u8>)> = produce::batches(&view, frame.raw())
                .unwrap()
                .map(|(p, b)| (p, b.to_vec()))
                .collect();
            pairs
        });
        let mut connection = Connection::connect(addr, ConnectionConfig::default()).unwrap();
        let big = vec![7u8; 200_000];
        connection
            .send_without_response(&produce::Request {
                acks: produce::Acks::None,
                timeout_ms: 1000,
                topic: "t",
                partitions: &[
                    produce::PartitionBatches {
                        partition: 0,
                        batches: b"first",
                    },
                    produce::PartitionBatches {
                        partition: 1,
                        batches: &big,
                    },
                ],
            })
            .unwrap();
        let pairs = server.join().unwrap();
        assert_eq!(pairs[0], (0, b"first".to_vec()));
        assert_eq!(pairs[1], (1, big));
    }

    /// A ListTopics response naming one topic of `name_bytes` bytes (a frame of about that
    /// size).
    fn large_response(correlation_id: u32, name_bytes: usize) -> Vec<u8> {
        let name = "n".repeat(name_bytes);
        let topics = [TopicConfig {
            name: &name,
            partitions: 1,
            retention_ms: -1,
            retention_bytes: -1,
            segment_bytes: 0,
        }];
        let mut fbb = FlatBufferBuilder::new();
        let body = list_topics::Response {
            status: Status::OK,
            topics: &topics,
        }
        .encode(&mut fbb)
        .to_vec();
        let mut frame = Vec::new();
        crate::frame::write_frame(
            &mut frame,
            ApiKey::ListTopics.as_u16(),
            0,
            correlation_id,
            &body,
            &[],
        )
        .unwrap();
        frame
    }

    #[test]
    fn large_frames_are_received_into_recycled_buffers() {
        // Sizes around and far above the read buffer, growing and shrinking.
        let sizes = [
            3 * READ_BUFFER_BYTES,
            READ_BUFFER_BYTES / 2,
            2 * READ_BUFFER_BYTES,
            5 * READ_BUFFER_BYTES,
            3 * READ_BUFFER_BYTES,
        ];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader =
                FrameReader::new(stream.try_clone().unwrap(), FrameDecoder::default(), 64);
            let mut out = stream;
            for (index, name_bytes) in sizes.iter().enumerate() {
                let header = *reader.read_frame().unwrap().header();
                assert_eq!(header.correlation_id, index as u32);
                out.write_all(&large_response(header.correlation_id, *name_bytes))
                    .unwrap();
            }
        });
        let mut connection = Connection::connect(addr, ConnectionConfig::default()).unwrap();
        let mut recycled: Option<*const u8> = None;
        for name_bytes in sizes {
            let frame = connection.call(&list_topics::Request).unwrap();
            let view = frame.view::<list_topics::ResponseView>().unwrap();
            assert_eq!(view.topics().unwrap().get(0).name().len(), name_bytes);
            let buffer = frame.into_buffer();
            if let Some(pointer) = recycled {
                if buffer.len() > READ_BUFFER_BYTES && name_bytes <= 3 * READ_BUFFER_BYTES {
                    assert_eq!(buffer.as_ptr(), pointer, "the recycled buffer was reused");
                }
            }
            if buffer.len() > READ_BUFFER_BYTES {
                recycled = Some(buffer.as_ptr());
            }
            connection.recycle(buffer);
        }
        server.join().unwrap();
    }

    #[test]
    fn abandoned_responses_are_read_and_dropped() {
        let (addr, server) = reverse_echo_server(3);
        let mut connection = Connection::connect(addr, ConnectionConfig::default()).unwrap();
        let first = connection.send(&list_topics::Request).unwrap();
        let second = connection.send(&metadata::Request { topics: &[] }).unwrap();
        let third = connection.send(&list_topics::Request).unwrap();
        connection.abandon(third);
        connection.abandon(second);
        assert_eq!(
            connection.in_flight(),
            3,
            "abandoned responses are still to be read"
        );
        // The reverse echo answers third, second, first: the first two are dropped.
        let frame = connection.receive(first).unwrap();
        assert_eq!(frame.header().correlation_id, first);
        assert_eq!(connection.in_flight(), 0);
        assert!(matches!(
            connection.receive(second),
            Err(ClientError::UnexpectedResponse(_))
        ));
        server.join().unwrap();
    }

    #[test]
    fn a_request_the_server_never_reads_fails_after_the_request_timeout() {
        // A server that accepts and then never reads (hung, stopped): a request larger than
        // the socket buffers cannot be written out.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (held_sender, held) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            // Kept open, unread, until the test ends.
            let _ = held_sender.send(stream);
        });
        let (done_sender, done) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let config = ConnectionConfig {
                request_timeout_ms: 200,
                ..ConnectionConfig::default()
            };
            let mut connection = Connection::connect(addr, config).unwrap();
            let big = vec![0u8; 48 << 20];
            let result = connection.call(&produce::Request {
                acks: produce::Acks::Leader,
                timeout_ms: 200,
                topic: "t",
                partitions: &[produce::PartitionBatches {
                    partition: 0,
                    batches: &big,
                }],
            });
            let _ = done_sender.send(result.map(|_| ()));
        });
        // Generous: the call should fail about 200 ms after the write stops moving.
        let result = done
            .recv_timeout(Duration::from_secs(30))
            .expect("the call returned instead of blocking in its write");
        assert!(
            matches!(result, Err(ClientError::Timeout { timeout_ms: 200 })),
            "{result:?}"
        );
        drop(held);
    }

    #[test]
    fn unknown_correlation_id_is_refused() {
        let (addr, _server) = reverse_echo_server(1);
        let mut connection = Connection::connect(addr, ConnectionConfig::default()).unwrap();
        assert!(matches!(
            connection.receive(99),
            Err(ClientError::UnexpectedResponse(_))
        ));
        let id = connection.send(&list_topics::Request).unwrap();
        assert!(connection.receive(id).is_ok());
    }
}
