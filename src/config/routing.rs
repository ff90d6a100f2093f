//! The routing choices of `kite proxy`: how a backend is picked, which
//! address family a task is reached over, and the PROXY protocol header.
//! clap lists each one's values in `--help` and rejects others (exit 2).

use std::fmt;

/// `--balance`: how a connection picks among its port's backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// Uniformly at random.
    #[default]
    Random,
    /// Two distinct backends at random, and the one with fewer
    /// connections open through this kite.
    LeastConn,
}

/// `--proxy-protocol`: the PROXY protocol version of the header sent to
/// backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyProtocol {
    /// Version 1: one line of text.
    V1,
    /// Version 2: binary.
    V2,
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        })
    }
}

/// `--ip-family`: which address of a task with both an IPv4 and an IPv6
/// address kite connects to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IpFamily {
    /// IPv4 where the task has it, else IPv6.
    #[default]
    Auto,
    /// IPv4 only: a task without an IPv4 address is skipped.
    Ipv4,
    /// IPv6 only: a task without an IPv6 address is skipped.
    Ipv6,
}
