//! How a connection picks its backend among its port's: the [`Policy`]
//! (random or least connections, kite's own zone first or not), and the
//! backends left out for a while after they failed ([`Ejections`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use super::Backends;
use crate::config::Balance;

/// How a connection picks its backend among those of its port. Every
/// policy skips the backends a connection has tried already, and takes
/// ejected ones only as a last resort: a client fails only when every
/// backend has been tried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Among the candidates: at random, or the less loaded of two.
    pub balance: Balance,
    /// `Some(n)`: the candidates are the backends in kite's own zone while
    /// at least `n` of them are usable (not tried, not ejected); else, and
    /// with `None`, every backend.
    pub zone_affinity: Option<usize>,
}

impl Policy {
    /// Picks a backend of `backends` by this policy, skipping those
    /// `tried`, and those ejected unless nothing else is left; returns its
    /// index, `None` once all have been tried.
    ///
    /// Synchronous on purpose: no guard or RNG is held across an `.await`.
    /// It allocates nothing, and takes no lock while no backend is ejected.
    pub fn pick(
        self,
        backends: &Backends,
        tried: &[SocketAddr],
        ejections: &Ejections,
    ) -> Option<usize> {
        let all = 0..backends.len();
        let local = 0..backends.local();
        let own_zone = match self.zone_affinity {
            Some(min) if !local.is_empty() => {
                usable(backends, local.clone(), tried, ejections) >= min
            }
            _ => false,
        };
        let among = if own_zone { local } else { all };
        self.pick_in(backends, among, tried, ejections)
    }

    /// The pick within the backends at `among`: the usable ones, else the
    /// ejected ones not tried.
    fn pick_in(
        self,
        backends: &Backends,
        among: Range<usize>,
        tried: &[SocketAddr],
        ejections: &Ejections,
    ) -> Option<usize> {
        let addrs = backends.addrs();
        // The common case: nothing tried, nothing ejected.
        if tried.is_empty() && ejections.count.load(Ordering::Acquire) == 0 {
            let start = among.start;
            return self.choose(backends, among.len(), |k| start + k);
        }
        let untried = |i: &usize| !tried.contains(&addrs[*i]);
        let healthy = |i: &usize| is_usable(addrs[*i], tried, ejections);
        let n = among.clone().filter(healthy).count();
        if n > 0 {
            let nth = |k| among.clone().filter(healthy).nth(k).unwrap_or(among.start);
            return self.choose(backends, n, nth);
        }
        let n = among.clone().filter(untried).count();
        let nth = |k| among.clone().filter(untried).nth(k).unwrap_or(among.start);
        self.choose(backends, n, nth)
    }

    /// Chooses among `n` candidates, the `k`-th of which is backend
    /// `nth(k)`: one at random, or with least connections the one with
    /// fewer of two distinct ones at random.
    fn choose(self, backends: &Backends, n: usize, nth: impl Fn(usize) -> usize) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let mut rng = rand::rng();
        let first = rng.random_range(0..n);
        if self.balance == Balance::Random || n == 1 {
            return Some(nth(first));
        }
        let mut second = rng.random_range(0..n - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = (nth(first), nth(second));
        Some(if backends.load(b).get() < backends.load(a).get() {
            b
        } else {
            a
        })
    }
}

/// How many of the backends at `among` are neither tried nor ejected.
fn usable(
    backends: &Backends,
    among: Range<usize>,
    tried: &[SocketAddr],
    ejections: &Ejections,
) -> usize {
    if tried.is_empty() && ejections.count.load(Ordering::Acquire) == 0 {
        return among.len();
    }
    let addrs = backends.addrs();
    among
        .filter(|i| is_usable(addrs[*i], tried, ejections))
        .count()
}

/// Whether `addr` may be picked: not tried by this connection, and not
/// ejected.
fn is_usable(addr: SocketAddr, tried: &[SocketAddr], ejections: &Ejections) -> bool {
    !tried.contains(&addr) && !ejections.is_ejected(addr)
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

#[cfg(test)]
mod tests;
