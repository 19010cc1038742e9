//! A connection's receive buffer, shared by the native and the Kafka listeners.
//!
//! It starts at [`RECV_BYTES_INITIAL`], grows only to hold the frame being received (which the
//! caller has already checked against `frame_bytes_max`), and shrinks back once a large frame
//! has been consumed, so an idle connection holds a small, fixed amount of memory.

use ringlog_engine::reactor::tcp::TcpStream;

/// Receive buffer size of a new connection.
pub(crate) const RECV_BYTES_INITIAL: usize = 64 << 10;

/// A new, empty receive buffer.
pub(crate) fn new() -> Vec<u8> {
    Vec::with_capacity(RECV_BYTES_INITIAL)
}

/// Sizes `buf` for a frame of `frame_bytes` in progress (`None`: size unknown yet).
pub(crate) fn fit(buf: &mut Vec<u8>, frame_bytes: Option<usize>) {
    let wanted = frame_bytes.map_or(RECV_BYTES_INITIAL, |bytes| bytes.max(RECV_BYTES_INITIAL));
    if buf.capacity() < wanted {
        buf.reserve_exact(wanted - buf.len());
    } else if buf.capacity() > RECV_BYTES_INITIAL
        && buf.len() < RECV_BYTES_INITIAL
        && wanted == RECV_BYTES_INITIAL
    {
        buf.shrink_to(RECV_BYTES_INITIAL);
    }
}

/// Takes the frame of `frame_bytes` at `start` out of `buf` as it is, when it is all `buf`
/// holds (a large frame does: the buffer was sized to it); `buf` starts afresh. `None`
/// otherwise: the caller copies the frame out.
pub(crate) fn take_whole(buf: &mut Vec<u8>, start: usize, frame_bytes: usize) -> Option<Vec<u8>> {
    (start == 0 && frame_bytes == buf.len()).then(|| std::mem::replace(buf, new()))
}

/// Receives more bytes after those in `buf`; `None` when the peer closed the connection or the
/// receive failed (the connection is then over).
pub(crate) async fn receive(stream: &TcpStream, buf: Vec<u8>) -> Option<Vec<u8>> {
    let (received, buf) = stream.recv(buf).await;
    match received {
        Ok(0) => None,
        Ok(_) => Some(buf),
        Err(error) => {
            tracing::debug!(%error, "connection receive failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_buffer_holding_exactly_the_frame_is_taken() {
        let mut buf = vec![7u8; 100];
        assert!(take_whole(&mut buf, 0, 99).is_none(), "more bytes follow");
        assert!(
            take_whole(&mut buf, 1, 99).is_none(),
            "the frame starts later"
        );
        let whole = take_whole(&mut buf, 0, 100).expect("the whole buffer");
        assert_eq!(whole, vec![7u8; 100]);
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), RECV_BYTES_INITIAL);
    }
}
