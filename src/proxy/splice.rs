//! Placeholder until the splice(2) module lands.
#![allow(missing_docs)]
pub async fn splice_bidirectional(
    a: &mut tokio::net::TcpStream,
    b: &mut tokio::net::TcpStream,
) -> std::io::Result<(u64, u64)> {
    tokio::io::copy_bidirectional(a, b).await
}
