use std::collections::HashMap;

use super::*;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 80))
}

#[test]
fn pick_is_uniform_and_skips_tried() {
    let backends = [addr(1), addr(2), addr(3)];
    let ej = Ejections::default();
    let mut seen = HashMap::new();
    for _ in 0..3000 {
        *seen.entry(pick(&backends, &[], &ej).unwrap()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3);
    assert!(seen.values().all(|n| *n > 800), "{seen:?}");
    for _ in 0..100 {
        let p = pick(&backends, &[addr(1), addr(3)], &ej).unwrap();
        assert_eq!(p, addr(2));
    }
    assert_eq!(pick(&backends, &backends, &ej), None);
    assert_eq!(pick(&[], &[], &ej), None);
}

#[test]
fn ejected_backends_are_a_last_resort() {
    let backends = [addr(1), addr(2)];
    let ej = Ejections::default();
    ej.eject(addr(1), Duration::from_secs(60));
    for _ in 0..100 {
        assert_eq!(pick(&backends, &[], &ej), Some(addr(2)));
    }
    // With the healthy one tried, the ejected one is still given a chance.
    assert_eq!(pick(&backends, &[addr(2)], &ej), Some(addr(1)));
    ej.restore(addr(1));
    assert!(!ej.is_ejected(addr(1)));
    ej.eject(addr(1), Duration::ZERO);
    assert!(!ej.is_ejected(addr(1)));
}

#[test]
fn snapshot_groups_by_port() {
    let t = |port, i| Target {
        listen_port: port,
        container_port: port,
        address: addr(i),
        task_id: format!("t{i}"),
        task_arn: format!("arn:t{i}"),
        task_definition: "web:1".into(),
        network_mode: NetworkMode::Bridge,
        health: "UNKNOWN".into(),
        host: "ci".into(),
    };
    let s = Snapshot::new(vec![t(443, 2), t(80, 2), t(80, 1)], vec![]);
    assert_eq!(s.ports().collect::<Vec<_>>(), vec![80, 443]);
    assert_eq!(s.backends(80), &[addr(1), addr(2)]);
    assert!(s.backends(8080).is_empty());
}

/// The random policy is the uniform pick: it skips what was tried, and
/// picks nothing once all was.
#[test]
fn the_random_policy_picks_uniformly() {
    let backends = [addr(1), addr(2)];
    let ej = Ejections::default();
    assert_eq!(Policy::default(), Policy::Random);
    let seen: std::collections::HashSet<_> = (0..200)
        .map(|_| Policy::Random.pick(&backends, &[], &ej).unwrap())
        .collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        Policy::Random.pick(&backends, &[addr(1)], &ej),
        Some(addr(2))
    );
    assert_eq!(Policy::Random.pick(&backends, &backends, &ej), None);
}
