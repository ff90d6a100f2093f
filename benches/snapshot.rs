//! What every accepted connection does before it connects: load the current
//! snapshot (arc-swap, no lock), take the port's backends, pick one by the
//! policy and count the connection in its load. Measured for the default
//! random pick and for least connections with zone affinity (100 backends
//! in three zones), alone, with other threads doing the same, and with a
//! writer publishing a new snapshot continuously meanwhile (discovery's
//! part, far more often than any real refresh).
//!
//! `cargo bench --bench snapshot`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion};
use kite::config::Balance;
use kite::snapshot::{Ejections, NetworkMode, Policy, Snapshot, Store, Target};

const PORT: u16 = 8080;

const RANDOM: Policy = Policy {
    balance: Balance::Random,
    zone_affinity: None,
};

const LEAST_CONN_IN_ZONE: Policy = Policy {
    balance: Balance::LeastConn,
    zone_affinity: Some(2),
};

/// A snapshot of `n` tasks, each on its own address, on one port, spread
/// over three zones.
fn snapshot(n: usize, generation: u8) -> Snapshot {
    let targets = (0..n)
        .map(|i| Target {
            listen_port: PORT,
            container_port: PORT,
            address: SocketAddr::from(([10, generation, (i / 250) as u8, (i % 250) as u8], 8080)),
            task_id: format!("{i:032x}"),
            task_arn: format!("arn:aws:ecs:eu-west-1:123456789012:task/bench/{i:032x}"),
            task_definition: "bench:1".into(),
            network_mode: NetworkMode::Bridge,
            health: "UNKNOWN".into(),
            host: format!("ci-{}", i / 10),
            zone: Some(["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3].into()),
        })
        .collect();
    Snapshot::new(targets, Vec::new())
}

fn load_and_pick(store: &Store, ejections: &Ejections, policy: Policy) -> Option<SocketAddr> {
    let snap = store.load();
    let backends = snap.port(PORT)?;
    let i = policy.pick(backends, &[], ejections)?;
    drop(black_box(backends.load(i).open()));
    Some(backends.addrs()[i])
}

/// Runs `threads` background loops while the measurement runs.
fn with_background(
    threads: usize,
    writer: bool,
    policy: Policy,
    store: &Arc<Store>,
    ejections: &Arc<Ejections>,
    body: impl FnOnce(),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (store, ejections, stop) = (store.clone(), ejections.clone(), stop.clone());
        handles.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(load_and_pick(&store, &ejections, policy));
            }
        }));
    }
    if writer {
        let (store, stop) = (store.clone(), stop.clone());
        handles.push(thread::spawn(move || {
            let mut generation = 0u8;
            while !stop.load(Ordering::Relaxed) {
                generation = generation.wrapping_add(1);
                store.publish(snapshot(100, generation));
            }
        }));
    }
    body();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let store = Arc::new(Store::default());
    store.set_zone(Some("eu-west-1a".into()));
    store.publish(snapshot(100, 0));
    let ejections = Arc::new(Ejections::default());
    for (name, policy) in [
        ("random", RANDOM),
        ("least_conn_zone_affinity", LEAST_CONN_IN_ZONE),
    ] {
        let mut group = c.benchmark_group(format!("load_and_pick_100_backends_{name}"));
        group.bench_function("alone", |b| {
            b.iter(|| black_box(load_and_pick(&store, &ejections, policy)))
        });
        with_background(1, false, policy, &store, &ejections, || {
            group.bench_function("beside_1_reader", |b| {
                b.iter(|| black_box(load_and_pick(&store, &ejections, policy)))
            });
        });
        with_background(1, true, policy, &store, &ejections, || {
            group.bench_function("beside_1_reader_and_a_writer", |b| {
                b.iter(|| black_box(load_and_pick(&store, &ejections, policy)))
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
