//! The backends of one listen port as a connection picks among them: their
//! addresses, kite's own zone first, and the connections open through this
//! kite to each ([`Load`]), which outlive snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Target;

/// The connections open through this kite to one backend address. Every
/// snapshot that lists the address shares the same count, so it follows
/// connections across discovery rounds.
#[derive(Clone, Debug, Default)]
pub struct Load(Arc<AtomicUsize>);

impl Load {
    /// The connections open now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one connection more until the guard is dropped.
    pub fn open(&self) -> Opened {
        self.0.fetch_add(1, Ordering::Relaxed);
        Opened(self.clone())
    }
}

/// One connection counted in a backend's [`Load`] while it lives.
#[derive(Debug)]
pub struct Opened(Load);

impl Drop for Opened {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backends of one listen port.
#[derive(Debug, Default)]
pub struct Backends {
    /// Their addresses, those in kite's own zone first.
    addrs: Box<[SocketAddr]>,
    /// The load of each, in the same order.
    loads: Box<[Load]>,
    /// How many of `addrs`, from the first, are in kite's own zone.
    local: usize,
}

impl Backends {
    /// The backends of `targets` (one listen port's, sorted), with kite's
    /// own `zone`'s first (keeping their order otherwise), and the load of
    /// each from `loads`, where a new address gets one.
    pub(super) fn new(
        targets: &[&Target],
        zone: Option<&str>,
        loads: &mut HashMap<SocketAddr, Load>,
    ) -> Backends {
        let is_local = |t: &&&Target| zone.is_some() && t.zone.as_deref() == zone;
        let (local, other): (Vec<&&Target>, Vec<&&Target>) = targets.iter().partition(is_local);
        let ordered = || local.iter().chain(&other).map(|t| t.address);
        Backends {
            addrs: ordered().collect(),
            loads: ordered()
                .map(|a| loads.entry(a).or_default().clone())
                .collect(),
            local: local.len(),
        }
    }

    /// The addresses, kite's own zone's first.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// How many addresses, from the first, are in kite's own zone.
    pub fn local(&self) -> usize {
        self.local
    }

    /// The load of the backend at `i`.
    pub fn load(&self, i: usize) -> &Load {
        &self.loads[i]
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}
