//! Connecting to the shard that owns a partition.
//!
//! The server steers each new native connection to a shard by the client's TCP source port:
//! port `p` lands on shard `(p / 2) % shard_count` (a classic BPF program on its SO_REUSEPORT
//! listeners; halved because connect() picks even ports when it can, which would send every
//! ordinary connection to the even shards). A client that works with one shard's partitions
//! binds such a port before it connects, so its requests and their answers never travel
//! between shards. The port is an odd one of the system's ephemeral ports (connect() leaves
//! those to bind()), tried from a random start; when every attempt finds its port taken, the
//! caller falls back to an ordinary connection (which still works, one hop further from the
//! data).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::ops::RangeInclusive;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// Source ports tried before giving up on steering.
const ATTEMPTS_MAX: u32 = 32;
/// The kernel's default ephemeral range, when /proc does not say.
const EPHEMERAL_PORTS_DEFAULT: RangeInclusive<u16> = 32768..=60999;
const EPHEMERAL_PORTS_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Connects to `addr` from a source port that the server steers to `shard`. `Ok(None)` when
/// no such port was free after [`ATTEMPTS_MAX`] tries; errors other than a taken port (refused,
/// timed out) are returned as they are.
pub(crate) fn connect_steered(
    addr: SocketAddr,
    shard: u16,
    shard_count: u16,
    timeout: Duration,
) -> io::Result<Option<TcpStream>> {
    if shard_count <= 1 {
        return Ok(None);
    }
    assert!(shard < shard_count, "shard {shard} of {shard_count}");
    let halves = odd_port_halves(&ephemeral_ports());
    let mut half = first_port(&halves, shard, shard_count, random_u64());
    for _ in 0..ATTEMPTS_MAX {
        match connect_from(addr, odd_port(half), timeout) {
            Ok(stream) => return Ok(Some(stream)),
            Err(error) if port_taken(&error) => {}
            Err(error) => return Err(error),
        }
        half = next_port(&halves, half, shard_count);
    }
    Ok(None)
}

/// `p / 2` of the odd ports `p` in `ports`: the server steers port `p` by `p / 2`.
fn odd_port_halves(ports: &RangeInclusive<u16>) -> RangeInclusive<u16> {
    let (low, high) = (*ports.start(), *ports.end());
    // 2h + 1 >= low and 2h + 1 <= high.
    low / 2..=high.saturating_sub(1) / 2
}

/// The odd port whose half is `half`.
fn odd_port(half: u16) -> u16 {
    half * 2 + 1
}

fn connect_from(addr: SocketAddr, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A port whose last connection is in TIME_WAIT can be bound again; connect then fails
    // with AddrNotAvailable only if the very same peer is still remembered.
    socket.set_reuse_address(true)?;
    let unspecified = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    socket.bind(&SocketAddr::new(unspecified, port).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

fn port_taken(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
    )
}

/// The system's ephemeral port range (so steered ports never take a port a service expects).
fn ephemeral_ports() -> RangeInclusive<u16> {
    let Ok(text) = std::fs::read_to_string(EPHEMERAL_PORTS_PATH) else {
        return EPHEMERAL_PORTS_DEFAULT;
    };
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    match (bounds.next(), bounds.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low < high => low..=high,
        _ => EPHEMERAL_PORTS_DEFAULT,
    }
}

/// A port in `ports` congruent to `shard` modulo `shard_count`, chosen by `seed`.
fn first_port(ports: &RangeInclusive<u16>, shard: u16, shard_count: u16, seed: u64) -> u16 {
    let (low, high) = (u32::from(*ports.start()), u32::from(*ports.end()));
    let count = u32::from(shard_count);
    let span = high - low + 1;
    let start = low + (seed % u64::from(span)) as u32;
    let mut port = start - start % count + u32::from(shard);
    if port < low {
        port += count;
    }
    if port > high {
        port = first_at_or_after(low, shard, count);
    }
    debug_assert!(port % count == u32::from(shard) && (low..=high).contains(&port));
    port as u16
}

/// The next port of the same class, wrapping to the bottom of the range.
fn next_port(ports: &RangeInclusive<u16>, port: u16, shard_count: u16) -> u16 {
    let (low, high) = (u32::from(*ports.start()), u32::from(*ports.end()));
    let count = u32::from(shard_count);
    let next = u32::from(port) + count;
    if next <= high {
        return next as u16;
    }
    first_at_or_after(low, (u32::from(port) % count) as u16, count) as u16
}

fn first_at_or_after(low: u32, shard: u16, count: u32) -> u32 {
    let base = low - low % count + u32::from(shard);
    if base < low {
        base + count
    } else {
        base
    }
}

fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_stay_in_their_class_and_range() {
        let ports = 32768..=60999;
        for shard_count in [2u16, 3, 7, 64] {
            for shard in 0..shard_count {
                for seed in [0u64, 1, 28_231, 28_232, u64::MAX] {
                    let mut port = first_port(&ports, shard, shard_count, seed);
                    for _ in 0..100 {
                        assert!(ports.contains(&port), "{port}");
                        assert_eq!(port % shard_count, shard);
                        port = next_port(&ports, port, shard_count);
                    }
                }
            }
        }
    }

    #[test]
    fn odd_ports_of_the_range_map_to_halves_and_back() {
        for ports in [32768..=60999u16, 32769..=61000, 1024..=65535] {
            let halves = odd_port_halves(&ports);
            for half in [*halves.start(), *halves.end()] {
                let port = odd_port(half);
                assert!(ports.contains(&port) && port % 2 == 1, "{ports:?}: {port}");
                assert_eq!(port / 2, half);
            }
        }
    }

    #[test]
    fn a_taken_port_is_skipped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect_steered(addr, 1, 2, Duration::from_secs(5))
            .unwrap()
            .expect("a free port of class 1");
        let port = stream.local_addr().unwrap().port();
        assert_eq!((port / 2) % 2, 1, "{port}");
    }
}
