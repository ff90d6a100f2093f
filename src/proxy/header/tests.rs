use std::net::SocketAddr;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn version_1_ipv4() {
    let h = Header::new(
        ProxyProtocol::V1,
        addr("192.0.2.7:51234"),
        addr("10.0.0.1:8080"),
    );
    assert_eq!(
        h.as_bytes(),
        b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 8080\r\n"
    );
}

#[test]
fn version_1_ipv6_and_mapped_ipv4() {
    let h = Header::new(ProxyProtocol::V1, addr("[2001:db8::7]:1"), addr("[::1]:80"));
    assert_eq!(h.as_bytes(), b"PROXY TCP6 2001:db8::7 ::1 1 80\r\n");
    // An IPv4 client of a listener on `::` is told as IPv4.
    let h = Header::new(
        ProxyProtocol::V1,
        addr("[::ffff:192.0.2.7]:5"),
        addr("[::ffff:10.0.0.1]:80"),
    );
    assert_eq!(h.as_bytes(), b"PROXY TCP4 192.0.2.7 10.0.0.1 5 80\r\n");
}

#[test]
fn version_1_longest_line_fits() {
    let a = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535";
    let b = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd]:65534";
    let h = Header::new(ProxyProtocol::V1, addr(a), addr(b));
    assert_eq!(h.as_bytes().len(), 104);
    assert!(h.as_bytes().ends_with(b" 65535 65534\r\n"));
}

#[test]
fn version_2_ipv4() {
    let h = Header::new(
        ProxyProtocol::V2,
        addr("192.0.2.7:51234"),
        addr("10.0.0.1:8080"),
    );
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend([0x21, 0x11, 0, 12]);
    want.extend([192, 0, 2, 7, 10, 0, 0, 1]);
    want.extend(51234u16.to_be_bytes());
    want.extend(8080u16.to_be_bytes());
    assert_eq!(h.as_bytes(), &want[..]);
}

#[test]
fn version_2_ipv6_and_mixed_families() {
    let h = Header::new(ProxyProtocol::V2, addr("[2001:db8::7]:1"), addr("[::1]:80"));
    let b = h.as_bytes();
    assert_eq!(b.len(), 16 + 36);
    assert_eq!(&b[12..16], &[0x21, 0x21, 0, 36]);
    let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    assert_eq!(&b[16..32], &src.octets());
    assert_eq!(&b[32..48], &std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(&b[48..52], &[0, 1, 0, 80]);
    // An IPv4 source with an IPv6 destination: both told as IPv6.
    let h = Header::new(ProxyProtocol::V2, addr("192.0.2.7:1"), addr("[::1]:80"));
    let b = h.as_bytes();
    assert_eq!(b[13], 0x21);
    let mapped = std::net::Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped();
    assert_eq!(&b[16..32], &mapped.octets());
}
