use super::*;

pub(super) fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 80))
}

/// Task t`i`'s target at 127.0.0.`i`:80, for listen and container port
/// `port`, in `zone`.
pub(super) fn target(port: u16, i: u8, zone: Option<&str>) -> Target {
    Target {
        listen_port: port,
        container_port: port,
        address: addr(i),
        task_id: format!("t{i}"),
        task_arn: format!("arn:t{i}"),
        task_definition: "web:1".into(),
        network_mode: NetworkMode::Bridge,
        health: "UNKNOWN".into(),
        host: "ci".into(),
        zone: zone.map(str::to_owned),
    }
}

#[test]
fn snapshot_groups_by_port() {
    let t = |port, i| target(port, i, None);
    let s = Snapshot::new(vec![t(443, 2), t(80, 2), t(80, 1)], vec![]);
    assert_eq!(s.ports().collect::<Vec<_>>(), vec![80, 443]);
    assert_eq!(s.backends(80), &[addr(1), addr(2)]);
    assert!(s.backends(8080).is_empty());
    assert!(s.port(8080).is_none());
    assert_eq!(s.port(80).unwrap().local(), 0, "no zone set: none is local");
}

/// Published, each port lists kite's own zone's backends first; a
/// backend's load follows it from snapshot to snapshot, and an address that
/// left with connections still open keeps its load when it comes back.
#[test]
fn publish_sets_out_zones_and_keeps_loads() {
    let store = Store::default();
    store.set_zone(Some("b".into()));
    let targets = || {
        vec![
            target(80, 1, Some("a")),
            target(80, 2, Some("b")),
            target(80, 3, None),
            target(80, 4, Some("b")),
        ]
    };
    store.publish(Snapshot::new(targets(), vec![]));
    let s = store.load();
    let b = s.port(80).unwrap();
    assert_eq!(b.addrs(), &[addr(2), addr(4), addr(1), addr(3)]);
    assert_eq!(b.local(), 2);
    let open = b.load(0).open();
    assert_eq!(b.load(0).get(), 1);

    // The next round: the same count, wherever the address now stands.
    store.set_zone(Some("a".into()));
    store.publish(Snapshot::new(targets(), vec![]));
    let s = store.load();
    let b = s.port(80).unwrap();
    assert_eq!(b.addrs(), &[addr(1), addr(2), addr(3), addr(4)]);
    assert_eq!(b.local(), 1);
    assert_eq!(b.load(1).get(), 1, "addr 2 keeps its open connection");

    // Gone while open, then back: still counted; closed: back to 0.
    store.publish(Snapshot::new(vec![target(80, 1, Some("a"))], vec![]));
    store.publish(Snapshot::new(targets(), vec![]));
    assert_eq!(store.load().port(80).unwrap().load(1).get(), 1);
    drop(open);
    assert_eq!(store.load().port(80).unwrap().load(1).get(), 0);
}
