//! How a connection picks its backend among its port's: the [`Policy`],
//! and the backends left out for a while after they failed
//! ([`Ejections`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// How a connection picks its backend among those of its port. Every
/// policy skips the backends a connection has tried already, and takes
/// ejected ones only as a last resort.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Uniformly at random ([`pick`]).
    #[default]
    Random,
}

impl Policy {
    /// Picks a backend among `backends` by this policy, skipping those
    /// `tried`, and those ejected unless nothing else is left; `None` once
    /// all have been tried.
    ///
    /// Synchronous on purpose: no guard or RNG is held across an `.await`.
    pub fn pick(
        self,
        backends: &[SocketAddr],
        tried: &[SocketAddr],
        ejections: &Ejections,
    ) -> Option<SocketAddr> {
        match self {
            Policy::Random => pick(backends, tried, ejections),
        }
    }
}

/// Backends that recently failed to connect, left out of picks for a while.
///
/// Writes happen only on connect failures; the pick path reads an atomic
/// count and takes the lock only while some backend is ejected.
#[derive(Debug, Default)]
pub struct Ejections {
    until: Mutex<HashMap<SocketAddr, Instant>>,
    count: AtomicUsize,
}

impl Ejections {
    /// Leaves `addr` out of picks for `period`.
    pub fn eject(&self, addr: SocketAddr, period: Duration) {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.insert(addr, now + period);
        self.count.store(until.len(), Ordering::Release);
    }

    /// Puts `addr` back after it accepted a connection.
    pub fn restore(&self, addr: SocketAddr) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.remove(&addr);
        self.count.store(until.len(), Ordering::Release);
    }

    /// Whether `addr` is currently left out.
    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.get(&addr).is_some_and(|t| *t > Instant::now())
    }
}

/// Picks a backend uniformly at random among those not yet `tried`,
/// preferring ones that are not ejected; ejected ones are a last resort, so
/// a client fails only when every backend has been tried.
///
/// Synchronous on purpose: no guard or RNG is held across an `.await`.
pub fn pick(
    backends: &[SocketAddr],
    tried: &[SocketAddr],
    ejections: &Ejections,
) -> Option<SocketAddr> {
    let untried = |a: &&SocketAddr| !tried.contains(a);
    let mut rng = rand::rng();
    // The common case: nothing tried, nothing ejected: one random draw.
    if tried.is_empty() && ejections.count.load(Ordering::Acquire) == 0 {
        if backends.is_empty() {
            return None;
        }
        return Some(backends[rng.random_range(0..backends.len())]);
    }
    let healthy = |a: &&SocketAddr| untried(a) && !ejections.is_ejected(**a);
    let n = backends.iter().filter(healthy).count();
    if n > 0 {
        return backends
            .iter()
            .filter(healthy)
            .nth(rng.random_range(0..n))
            .copied();
    }
    let n = backends.iter().filter(untried).count();
    if n == 0 {
        return None;
    }
    backends
        .iter()
        .filter(untried)
        .nth(rng.random_range(0..n))
        .copied()
}
