//! TCP sockets through the ring.
//!
//! Every shard binds its own listening socket to the same address with SO_REUSEPORT, so the
//! kernel spreads new connections across shards and a connection stays on the shard that
//! accepted it.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types};

use super::op::Op;
use crate::buffer::{IoBuf, IoBufMut};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_int_option(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn local_addr_of(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is valid; getsockname writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: pointers to live locals with the matching length.
    cvt(unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family checked).
            let sin = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family checked).
            let sin6 = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                0,
                sin6.sin6_scope_id,
            )))
        }
        family => Err(io::Error::other(format!(
            "unexpected address family {family}"
        ))),
    }
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the libc crate defines it for Android only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// The classic BPF program of [`TcpListener::steer_by_source_port`]: returns the TCP source port
/// of the SYN, halved, modulo `count`: the index of the listener to take the connection. Halved
/// because Linux gives connect() ephemeral ports of one parity (even) when it can: `port %
/// count` would send every ordinary connection to the even listeners. The reuseport hook runs
/// it with the packet's data past the TCP header, so the port is read relative to the network
/// header (`SKF_NET_OFF`), past an IPv4 header of any length or a fixed IPv6 header.
fn source_port_steering(count: u32) -> [libc::sock_filter; 10] {
    const NET: u32 = libc::SKF_NET_OFF as u32;
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD,
        BPF_LDX, BPF_MOD, BPF_MSH, BPF_RET, BPF_RSH,
    };
    [
        // A = IP version.
        statement(BPF_LD | BPF_B | BPF_ABS, NET),
        statement(BPF_ALU | BPF_RSH | BPF_K, 4),
        // IPv6: to 6.
        jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 3, 0),
        // IPv4: X = header length, A = source port after it; to 7.
        statement(BPF_LDX | BPF_B | BPF_MSH, NET),
        statement(BPF_LD | BPF_H | BPF_IND, NET),
        jump(BPF_JMP | BPF_JA, 1, 0, 0),
        // 6: IPv6 (no extension headers on a SYN in practice).
        statement(BPF_LD | BPF_H | BPF_ABS, NET + 40),
        // 7: the listener index.
        statement(BPF_ALU | BPF_RSH | BPF_K, 1),
        statement(BPF_ALU | BPF_MOD | BPF_K, count),
        statement(BPF_RET | BPF_A, 0),
    ]
}

/// A listening socket owned by one shard.
#[derive(Debug)]
pub struct TcpListener {
    fd: OwnedFd,
}

impl TcpListener {
    /// Binds `addr` with SO_REUSEADDR and SO_REUSEPORT and listens with `backlog`.
    ///
    /// Blocking setup: call it at startup, before the shard serves.
    pub fn bind_reuse_port(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain syscall; the result is checked.
        let raw = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_int_option(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        set_int_option(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        let (storage, len) = sockaddr_of(&addr);
        // SAFETY: storage holds a valid sockaddr of `len` bytes.
        cvt(unsafe { libc::bind(raw, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
        // SAFETY: plain syscall on our descriptor.
        cvt(unsafe { libc::listen(raw, backlog) })?;
        Ok(TcpListener { fd })
    }

    /// Fails with `AddrInUse` when another socket, in this process or another, listens on
    /// `addr`. SO_REUSEPORT would otherwise let a second server on the same port silently take
    /// a share of the connections, so startup checks with a plain bind first.
    ///
    /// Blocking setup: call it at startup.
    pub fn check_address_free(addr: SocketAddr) -> io::Result<()> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain syscall; the result is checked.
        let raw = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a new descriptor we own; it closes when `_fd` drops.
        let _fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_int_option(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        let (storage, len) = sockaddr_of(&addr);
        // SAFETY: storage holds a valid sockaddr of `len` bytes.
        cvt(unsafe { libc::bind(raw, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
        Ok(())
    }

    /// Steers the connections of this listener's SO_REUSEPORT group by the client's source
    /// port: a connection from port `p` goes to the listener that joined the group
    /// `(p / 2) % count`-th (the servers binds its shards' listeners in shard order). A client
    /// that knows which shard owns its partitions binds such a source port, so its requests
    /// never cross shards; clients that do not still spread evenly, as their ephemeral ports do
    /// (halved, since connect() picks ports of one parity).
    ///
    /// Blocking setup: call it once every listener of the group is bound.
    pub fn steer_by_source_port(&self, count: u16) -> io::Result<()> {
        assert!(count >= 1, "a group has at least one listener");
        let mut program = source_port_steering(u32::from(count));
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: passes a pointer to a live sock_fprog (whose filter points at `program`,
        // alive for the call; the kernel copies it) and its exact size.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                (&fprog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr_of(self.fd.as_raw_fd())
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        let entry = opcode::Accept::new(
            types::Fd(self.fd.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        let (completion, ()) = Op::submit_returning_fd(entry, ()).await;
        let raw = completion.into_io()? as RawFd;
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_int_option(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        Ok(TcpStream { fd })
    }
}

/// A connected TCP socket owned by one shard.
#[derive(Debug)]
pub struct TcpStream {
    fd: OwnedFd,
}

impl TcpStream {
    /// Connects to `addr` through the ring (used by tools and tests that run on a shard).
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain syscall; the result is checked.
        let raw = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let (storage, len) = sockaddr_of(&addr);
        let storage = Box::new(storage);
        let entry = opcode::Connect::new(
            types::Fd(raw),
            (&*storage as *const libc::sockaddr_storage).cast(),
            len,
        )
        .build();
        let (completion, _storage) = Op::submit(entry, storage).await;
        completion.into_io()?;
        set_int_option(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        Ok(TcpStream { fd })
    }

    /// The raw descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The local address of the connection (the address the peer reached).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr_of(self.fd.as_raw_fd())
    }

    /// Receives into `buf` after its initialised bytes; returns the bytes received (0 at EOF).
    pub async fn recv<B: IoBufMut + Unpin>(&self, mut buf: B) -> (io::Result<usize>, B) {
        let filled = buf.bytes_init();
        let spare = buf.bytes_total() - filled;
        assert!(spare > 0, "recv into a full buffer");
        // SAFETY: `filled` is within the buffer's capacity.
        let ptr = unsafe { buf.stable_mut_ptr().add(filled) };
        let len = u32::try_from(spare).unwrap_or(u32::MAX);
        let entry = opcode::Recv::new(types::Fd(self.raw_fd()), ptr, len).build();
        let (completion, mut buf) = Op::submit(entry, buf).await;
        match completion.into_io() {
            Ok(received) => {
                // SAFETY: the kernel initialised `received` bytes after `filled`.
                unsafe { buf.set_init(filled + received as usize) };
                (Ok(received as usize), buf)
            }
            Err(error) => (Err(error), buf),
        }
    }

    /// Completes once the peer has shut its side down (closed, or shutdown(SHUT_WR)), the
    /// connection broke, or it was reset: what a receive would see as EOF or an error,
    /// without receiving (a server that stopped reading, at its bound of requests in flight,
    /// still learns its client is gone).
    pub async fn peer_closed(&self) {
        let events = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32;
        let entry = opcode::PollAdd::new(types::Fd(self.raw_fd()), events).build();
        // Whatever the result (the events, or an error on a descriptor gone bad), there is
        // nothing more to learn from this socket.
        let _ = Op::submit(entry, ()).await;
    }

    /// Sends `buf[range]`; may send less than asked.
    pub async fn send<B: IoBuf + Unpin>(
        &self,
        buf: B,
        range: Range<usize>,
    ) -> (io::Result<usize>, B) {
        self.send_flagged(buf, range, libc::MSG_NOSIGNAL).await
    }

    async fn send_flagged<B: IoBuf + Unpin>(
        &self,
        buf: B,
        range: Range<usize>,
        flags: i32,
    ) -> (io::Result<usize>, B) {
        let (ptr, len) = send_span(&buf, &range);
        let entry = opcode::Send::new(types::Fd(self.raw_fd()), ptr, len)
            .flags(flags)
            .build();
        let (completion, buf) = Op::submit(entry, buf).await;
        (completion.into_io().map(|n| n as usize), buf)
    }

    /// Sends `buf[range]` with SEND_ZC: the kernel transmits from `buf` itself and the future
    /// completes once it has released the memory.
    pub async fn send_zc<B: IoBuf + Unpin>(
        &self,
        buf: B,
        range: Range<usize>,
    ) -> (io::Result<usize>, B) {
        self.send_zc_flagged(buf, range, libc::MSG_NOSIGNAL).await
    }

    async fn send_zc_flagged<B: IoBuf + Unpin>(
        &self,
        buf: B,
        range: Range<usize>,
        flags: i32,
    ) -> (io::Result<usize>, B) {
        let (ptr, len) = send_span(&buf, &range);
        let entry = opcode::SendZc::new(types::Fd(self.raw_fd()), ptr, len)
            .flags(flags)
            .build();
        let (completion, buf) = Op::submit(entry, buf).await;
        (completion.into_io().map(|n| n as usize), buf)
    }

    /// Sends all of `buf[range]`, using SEND_ZC for spans of at least `zero_copy_min_bytes`.
    /// With `more`, the bytes are sent with MSG_MORE: the caller has more of the same message
    /// to send at once, so TCP holds a part smaller than a segment for it instead of pushing
    /// it alone (the peer then wakes once for the message, not once per part). The last part
    /// of a message must go without it. A SEND_ZC span is pushed with what was held whatever
    /// the flag (Linux 6.18), so only plain sends gather.
    pub async fn send_all<B: IoBuf + Unpin>(
        &self,
        mut buf: B,
        mut range: Range<usize>,
        zero_copy_min_bytes: usize,
        more: bool,
    ) -> (io::Result<()>, B) {
        let flags = if more {
            libc::MSG_NOSIGNAL | libc::MSG_MORE
        } else {
            libc::MSG_NOSIGNAL
        };
        // Bounded: every round sends at least one byte or returns.
        while !range.is_empty() {
            let (result, returned) = if range.len() >= zero_copy_min_bytes {
                self.send_zc_flagged(buf, range.clone(), flags).await
            } else {
                self.send_flagged(buf, range.clone(), flags).await
            };
            buf = returned;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(sent) => range.start += sent,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Shuts down both directions, so a peer blocked on us sees EOF.
    pub fn shutdown(&self) {
        // SAFETY: plain syscall on our descriptor; failure (already closed) is harmless.
        unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_RDWR) };
    }

    /// Shuts down the sending direction only: the peer reads EOF after what was sent, and
    /// this side can still read what the peer sends (to drain it before closing, since closing
    /// with unread bytes makes the kernel reset the connection, losing what was sent).
    pub fn shutdown_write(&self) {
        // SAFETY: plain syscall on our descriptor; failure (already closed) is harmless.
        unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_WR) };
    }
}

fn send_span<B: IoBuf>(buf: &B, range: &Range<usize>) -> (*const u8, u32) {
    assert!(
        range.start <= range.end && range.end <= buf.bytes_init(),
        "send range outside the buffer"
    );
    // SAFETY: the range lies inside the buffer's initialised bytes (checked above).
    let ptr = unsafe { buf.stable_ptr().add(range.start) };
    (ptr, u32::try_from(range.len()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{block_on, spawn, RingConfig};

    #[test]
    fn loopback_echo() {
        block_on(RingConfig::default(), async {
            let listener =
                TcpListener::bind_reuse_port("127.0.0.1:0".parse().unwrap(), 16).unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(async move {
                let stream = listener.accept().await.unwrap();
                let (n, buf) = stream.recv(Vec::with_capacity(64)).await;
                let n = n.unwrap();
                let (sent, _) = stream.send_all(buf, 0..n, 0, false).await;
                sent.unwrap();
            });
            let client = TcpStream::connect(addr).await.unwrap();
            let payload = vec![7u8; 100_000];
            let (sent, _) = client.send_zc(b"ping".to_vec(), 0..4).await;
            assert_eq!(sent.unwrap(), 4);
            let (n, echoed) = client.recv(Vec::with_capacity(64)).await;
            assert_eq!(&echoed[..n.unwrap()], b"ping");
            server.await;
            drop(payload);
        })
        .unwrap();
    }

    /// The parts of one message sent with `more` wait for its last part, so the peer reads
    /// them together; on loopback a pushed segment is in the peer's queue when send returns.
    /// The last part goes with SEND_ZC, as a large part of a response may.
    #[test]
    fn parts_sent_with_more_wait_for_the_last_part() {
        use std::io::Read;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        block_on(RingConfig::default(), async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            peer.set_nonblocking(true).unwrap();
            let mut bytes = [0u8; 64];

            let (sent, _) = stream
                .send_all(b"head".to_vec(), 0..4, usize::MAX, true)
                .await;
            sent.unwrap();
            let (sent, _) = stream
                .send_all(b"part".to_vec(), 0..4, usize::MAX, true)
                .await;
            sent.unwrap();
            let early = peer.read(&mut bytes);
            assert!(
                early
                    .as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock),
                "parts sent with more went out before the last part: {early:?}"
            );

            let (sent, _) = stream.send_all(b"tail".to_vec(), 0..4, 0, false).await;
            sent.unwrap();
            let read = peer.read(&mut bytes).unwrap();
            assert_eq!(&bytes[..read], b"headparttail");
        })
        .unwrap();
    }
}
