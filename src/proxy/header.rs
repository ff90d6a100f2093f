//! The PROXY protocol header (HAProxy's specification, versions 1 and 2):
//! the first bytes kite sends a backend when `--proxy-protocol` asks for
//! it, so that the backend learns the client's address and port, and the
//! address and port the client connected to, instead of kite's.
//!
//! A header is built on the stack, without allocating, and written before
//! any of the client's bytes.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::config::ProxyProtocol;

/// The signature that opens every version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2, command PROXY (the connection was relayed for a client).
const V2_PROXY: u8 = 0x21;
/// Version 2 address families, with transport STREAM (TCP).
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// The longest header: a version 1 line is at most 107 bytes (the
/// specification's bound, IPv6 both ways); version 2 over IPv6 is 52.
const MAX_LEN: usize = 107;

/// One header, ready to send.
#[derive(Clone, Copy)]
pub struct Header {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Header").field(&self.as_bytes()).finish()
    }
}

impl Header {
    /// The header of `version` for a client at `source` that connected to
    /// `destination` (kite's own address of that connection). An IPv4
    /// client of an IPv6 listener (`::ffff:a.b.c.d`) is told as IPv4.
    pub fn new(version: ProxyProtocol, source: SocketAddr, destination: SocketAddr) -> Header {
        let (source, destination) = one_family(source, destination);
        let mut buf = [0u8; MAX_LEN];
        let len = match version {
            ProxyProtocol::V1 => {
                let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
                let mut rest = &mut buf[..];
                // At most 107 bytes (MAX_LEN), so the write cannot run out
                // of room.
                let _ = write!(
                    rest,
                    "PROXY {family} {} {} {} {}\r\n",
                    source.ip(),
                    destination.ip(),
                    source.port(),
                    destination.port()
                );
                MAX_LEN - rest.len()
            }
            ProxyProtocol::V2 => {
                buf[..12].copy_from_slice(&V2_SIGNATURE);
                buf[12] = V2_PROXY;
                let mut at = 16;
                let mut put = |bytes: &[u8]| {
                    buf[at..at + bytes.len()].copy_from_slice(bytes);
                    at += bytes.len();
                };
                let family = match (source.ip(), destination.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        put(&s.octets());
                        put(&d.octets());
                        V2_TCP4
                    }
                    (s, d) => {
                        put(&v6(s).octets());
                        put(&v6(d).octets());
                        V2_TCP6
                    }
                };
                put(&source.port().to_be_bytes());
                put(&destination.port().to_be_bytes());
                buf[13] = family;
                let addresses = u16::try_from(at - 16).unwrap_or(0);
                buf[14..16].copy_from_slice(&addresses.to_be_bytes());
                at
            }
        };
        Header { buf, len }
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Both addresses in one family, as the header needs: IPv4-mapped IPv6
/// addresses become IPv4, and should the two still differ, the IPv4 one
/// becomes IPv4-mapped IPv6.
fn one_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (a, b) = (canonical(a), canonical(b));
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let mapped = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port());
    (mapped(a), mapped(b))
}

/// `ip` as IPv6 (IPv4-mapped for an IPv4 address).
fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests;
