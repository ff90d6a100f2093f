//! A strict reader of the PROXY protocol header, written from HAProxy's
//! specification (proxy-protocol.txt), for the backends of the tests: it
//! reads exactly the header (never a byte of what follows) and rejects
//! anything the specification does not allow, or that kite should not
//! send (an UNKNOWN or LOCAL header, TLVs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The client's address and port.
    pub source: SocketAddr,
    /// The address and port the client connected to.
    pub destination: SocketAddr,
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads one header from `r`: version 1 or 2, told apart by the first
/// byte as the specification says.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<ProxyHeader, String> {
    let first = r.read_u8().await.map_err(|e| e.to_string())?;
    match first {
        b'P' => read_v1(r).await,
        b'\r' => read_v2(r).await,
        other => Err(format!("no PROXY header: first byte {other:#04x}")),
    }
}

/// Version 1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, at most 107 bytes,
/// single spaces, each address in its family, ports in 0..=65535 without
/// leading zeros. (The `P` is read.)
async fn read_v1<R: AsyncRead + Unpin>(r: &mut R) -> Result<ProxyHeader, String> {
    let mut line = vec![b'P'];
    while !line.ends_with(b"\r\n") {
        if line.len() >= 107 {
            return Err(format!("v1 line longer than 107 bytes: {line:?}"));
        }
        line.push(r.read_u8().await.map_err(|e| e.to_string())?);
    }
    let text = std::str::from_utf8(&line[..line.len() - 2]).map_err(|e| e.to_string())?;
    if text.contains('\r') || text.contains('\n') {
        return Err(format!("v1 line holds a stray CR or LF: {text:?}"));
    }
    let fields: Vec<&str> = text.split(' ').collect();
    let [proxy, family, src, dst, sport, dport] = fields[..] else {
        return Err(format!(
            "v1 line needs 6 fields split by single spaces: {text:?}"
        ));
    };
    if proxy != "PROXY" {
        return Err(format!("v1 line does not start with PROXY: {text:?}"));
    }
    let ip = |s: &str| -> Result<IpAddr, String> {
        match family {
            "TCP4" => s
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|e| format!("{s}: {e}")),
            "TCP6" => s
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|e| format!("{s}: {e}")),
            other => Err(format!("v1 protocol {other:?} is not TCP4 or TCP6")),
        }
    };
    let port = |s: &str| -> Result<u16, String> {
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "v1 port {s:?} is not a decimal without leading zeros"
            ));
        }
        s.parse().map_err(|e| format!("v1 port {s}: {e}"))
    };
    Ok(ProxyHeader {
        version: 1,
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

/// Version 2: the 12-byte signature, version 2 with command PROXY, TCP over
/// IPv4 (12 bytes of addresses) or IPv6 (36), big-endian length and ports.
/// (The first `\r` is read.)
async fn read_v2<R: AsyncRead + Unpin>(r: &mut R) -> Result<ProxyHeader, String> {
    let mut fixed = [0u8; 16];
    fixed[0] = b'\r';
    r.read_exact(&mut fixed[1..])
        .await
        .map_err(|e| e.to_string())?;
    if &fixed[..12] != V2_SIGNATURE {
        return Err(format!("v2 signature is wrong: {:?}", &fixed[..12]));
    }
    if fixed[12] != 0x21 {
        return Err(format!(
            "v2 version/command byte {:#04x} is not 0x21 (v2, PROXY)",
            fixed[12]
        ));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let want = match fixed[13] {
        0x11 => 12,
        0x21 => 36,
        other => {
            return Err(format!(
                "v2 family byte {other:#04x} is not TCP over IPv4 or IPv6"
            ))
        }
    };
    if len != want {
        return Err(format!(
            "v2 length {len}, where the addresses take {want} (no TLVs expected)"
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    let (src, dst, ports) = if want == 12 {
        let a = |i: usize| {
            IpAddr::V4(Ipv4Addr::new(
                body[i],
                body[i + 1],
                body[i + 2],
                body[i + 3],
            ))
        };
        (a(0), a(4), &body[8..12])
    } else {
        let a = |i: usize| {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&body[i..i + 16]).unwrap(),
            ))
        };
        (a(0), a(16), &body[32..36])
    };
    Ok(ProxyHeader {
        version: 2,
        source: SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
    })
}
