use std::collections::HashMap;

use super::*;
use crate::snapshot::tests::{addr, target};
use crate::snapshot::{Snapshot, Store};

/// A store whose snapshot has port 80's backends 127.0.0.i for each
/// (i, zone), kite being in zone "a".
fn store(backends: &[(u8, &str)]) -> Store {
    let targets = backends
        .iter()
        .map(|&(i, zone)| target(80, i, Some(zone)))
        .collect();
    let store = Store::default();
    store.set_zone(Some("a".into()));
    store.publish(Snapshot::new(targets, vec![]));
    store
}

/// `n` picks by `policy`: how often each address came up.
fn picks(
    policy: Policy,
    store: &Store,
    tried: &[SocketAddr],
    ej: &Ejections,
    n: usize,
) -> HashMap<SocketAddr, usize> {
    let s = store.load();
    let b = s.port(80).unwrap();
    let mut seen = HashMap::new();
    for _ in 0..n {
        if let Some(i) = policy.pick(b, tried, ej) {
            *seen.entry(b.addrs()[i]).or_insert(0) += 1;
        }
    }
    seen
}

const RANDOM: Policy = Policy {
    balance: Balance::Random,
    zone_affinity: None,
};

#[test]
fn random_is_uniform_and_skips_tried() {
    let s = store(&[(1, "a"), (2, "b"), (3, "c")]);
    let ej = Ejections::default();
    assert_eq!(Policy::default(), RANDOM);
    let seen = picks(RANDOM, &s, &[], &ej, 3000);
    assert_eq!(seen.len(), 3);
    assert!(seen.values().all(|n| *n > 800), "{seen:?}");
    let seen = picks(RANDOM, &s, &[addr(1), addr(3)], &ej, 100);
    assert_eq!(seen, HashMap::from([(addr(2), 100)]));
    assert!(picks(RANDOM, &s, &[addr(1), addr(2), addr(3)], &ej, 10).is_empty());
    let empty = Backends::default();
    assert_eq!(RANDOM.pick(&empty, &[], &ej), None);
}

#[test]
fn ejected_backends_are_a_last_resort() {
    let s = store(&[(1, "a"), (2, "a")]);
    let ej = Ejections::default();
    ej.eject(addr(1), Duration::from_secs(60));
    assert_eq!(
        picks(RANDOM, &s, &[], &ej, 100),
        HashMap::from([(addr(2), 100)])
    );
    // With the healthy one tried, the ejected one is still given a chance.
    assert_eq!(
        picks(RANDOM, &s, &[addr(2)], &ej, 1),
        HashMap::from([(addr(1), 1)])
    );
    ej.restore(addr(1));
    assert!(!ej.is_ejected(addr(1)));
    ej.eject(addr(1), Duration::ZERO);
    assert!(!ej.is_ejected(addr(1)));
}

/// Least connections: of two backends, always the less loaded; of more,
/// never the most loaded (two distinct draws), and evenly among equals.
#[test]
fn least_conn_takes_the_less_loaded_of_two() {
    let least = Policy {
        balance: Balance::LeastConn,
        zone_affinity: None,
    };
    let ej = Ejections::default();
    let s = store(&[(1, "a"), (2, "b")]);
    let snap = s.load();
    let b = snap.port(80).unwrap();
    let _open = [b.load(0).open(), b.load(0).open()];
    assert_eq!(
        picks(least, &s, &[], &ej, 200),
        HashMap::from([(addr(2), 200)])
    );
    // Once tried, the less loaded is skipped like any other.
    assert_eq!(
        picks(least, &s, &[addr(2)], &ej, 10),
        HashMap::from([(addr(1), 10)])
    );

    let s = store(&[(1, "a"), (2, "a"), (3, "a")]);
    let snap = s.load();
    let b = snap.port(80).unwrap();
    let heavy = b.addrs().iter().position(|a| *a == addr(3)).unwrap();
    let _busy = b.load(heavy).open();
    let seen = picks(least, &s, &[], &ej, 3000);
    assert_eq!(
        seen.get(&addr(3)),
        None,
        "the busiest is never taken: {seen:?}"
    );
    assert!(seen.values().all(|n| *n > 1200), "{seen:?}");
}

/// Zone affinity: the own zone while it holds at least the minimum usable
/// backends; below it (by ejection, or tries), every zone.
#[test]
fn zone_affinity_prefers_the_own_zone_above_the_minimum() {
    let affine = |min| Policy {
        balance: Balance::Random,
        zone_affinity: Some(min),
    };
    let ej = Ejections::default();
    let s = store(&[(1, "a"), (2, "a"), (3, "b"), (4, "c")]);
    let seen = picks(affine(2), &s, &[], &ej, 1000);
    assert_eq!(
        seen.keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [addr(1), addr(2)].into()
    );
    // Spill: below the minimum, every zone takes its share.
    let seen = picks(affine(3), &s, &[], &ej, 2000);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.values().all(|n| *n > 300), "{seen:?}");
    // One own-zone backend ejected: one usable left, below 2: every zone
    // (but the ejected one, while others are usable).
    ej.eject(addr(1), Duration::from_secs(60));
    let seen = picks(affine(2), &s, &[], &ej, 1000);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(!seen.contains_key(&addr(1)));
    // With a minimum of 1 the last own-zone backend still takes it all.
    assert_eq!(
        picks(affine(1), &s, &[], &ej, 100),
        HashMap::from([(addr(2), 100)])
    );
    // Failover: every own-zone backend tried, the others are next.
    let seen = picks(affine(1), &s, &[addr(1), addr(2)], &ej, 1000);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.contains_key(&addr(3)) && seen.contains_key(&addr(4)));
    // No backend in the own zone: every zone.
    let s = store(&[(3, "b"), (4, "c")]);
    assert_eq!(picks(affine(1), &s, &[], &ej, 500).len(), 2);
}
