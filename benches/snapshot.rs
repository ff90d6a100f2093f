//! What every accepted connection does before it connects: load the current
//! snapshot (arc-swap, no lock), take the port's backends and pick one at
//! random. Measured alone, with other threads doing the same, and with a
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
use kite::snapshot::{Ejections, NetworkMode, Policy, Snapshot, Store, Target};

const PORT: u16 = 8080;

/// A snapshot of `n` tasks, each on its own address, on one port.
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
        })
        .collect();
    Snapshot::new(targets, Vec::new())
}

fn load_and_pick(store: &Store, ejections: &Ejections) -> Option<SocketAddr> {
    let snap = store.load();
    Policy::Random.pick(snap.backends(PORT), &[], ejections)
}

/// Runs `threads` background loops while the measurement runs.
fn with_background(
    threads: usize,
    writer: bool,
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
                black_box(load_and_pick(&store, &ejections));
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
    store.publish(snapshot(100, 0));
    let ejections = Arc::new(Ejections::default());
    let mut group = c.benchmark_group("load_and_pick_100_backends");
    group.bench_function("alone", |b| {
        b.iter(|| black_box(load_and_pick(&store, &ejections)))
    });
    with_background(1, false, &store, &ejections, || {
        group.bench_function("beside_1_reader", |b| {
            b.iter(|| black_box(load_and_pick(&store, &ejections)))
        });
    });
    with_background(1, true, &store, &ejections, || {
        group.bench_function("beside_1_reader_and_a_writer", |b| {
            b.iter(|| black_box(load_and_pick(&store, &ejections)))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
