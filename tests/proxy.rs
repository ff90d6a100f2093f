//! The data path end to end: failover, half-close and integrity through
//! kite, with discovery against the fake endpoint.

mod common;

use std::time::Duration;

use common::*;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REFRESH: Duration = Duration::from_millis(200);

/// Starts kite in front of `backends` (bridge tasks of family "web") and
/// returns it with its listen port.
async fn kite_for(fake: &FakeAws, backends: &[&Backend]) -> (Kite, u16) {
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        for b in backends {
            c.add_task(bridge_task(&td, &ci, cport, b));
        }
    });
    let kite = Kite::start(fake, family_query("web", None), REFRESH).await;
    kite.wait_port(cport, backends.len()).await;
    (kite, cport)
}

#[tokio::test]
async fn a_dead_backend_never_fails_a_client() {
    init_logs();
    let fake = FakeAws::start().await;
    let a = Backend::start("a", "127.0.0.2", 0, Mode::Echo).await;
    let dead = Backend::start("dead", "127.0.0.2", 0, Mode::Echo).await;
    let c = Backend::start("c", "127.0.0.2", 0, Mode::Echo).await;
    let (kite, port) = kite_for(&fake, &[&a, &dead, &c]).await;
    dead.kill();
    refusing(&dead).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..60 {
        let name = whoami(port)
            .await
            .unwrap_or_else(|e| panic!("connection {i} failed: {e}"));
        assert_ne!(name, "dead");
        seen.insert(name);
    }
    assert_eq!(seen.len(), 2, "both live backends serve: {seen:?}");
    assert_eq!(
        kite.store.load().backends(port).len(),
        3,
        "discovery still lists it"
    );

    // When every backend is dead, the client's connection is closed.
    a.kill();
    c.kill();
    refusing(&a).await;
    refusing(&c).await;
    assert!(whoami(port).await.is_err());
}

/// Waits (up to 10 s) until a killed backend refuses connections.
async fn refusing(backend: &Backend) {
    for _ in 0..1000 {
        if TcpStream::connect(backend.addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("backend {} still accepts after kill", backend.name);
}

#[tokio::test]
async fn half_close_delivers_the_whole_answer() {
    let fake = FakeAws::start().await;
    let answer_len = 3 * 1024 * 1024 + 17;
    let b = Backend::start("late", "127.0.0.2", 0, Mode::AnswerAfterEof(answer_len)).await;
    let (_kite, port) = kite_for(&fake, &[&b]).await;
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&vec![7u8; 100_000]).await.unwrap();
        // Close our write side: the backend answers only after this EOF.
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
            .await
            .expect("answer within 20 s")
            .unwrap();
        let mut want = b"late\n".to_vec();
        want.extend(pattern(answer_len));
        assert_eq!(got.len(), want.len());
        assert!(got == want, "answer corrupted");
    }
}

/// 200 concurrent connections with random payloads up to 4 MiB: what the
/// backend received is checked by its sha256, what came back by ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_under_200_concurrent_connections() {
    let fake = FakeAws::start().await;
    let a = Backend::start("a", "127.0.0.2", 0, Mode::Echo).await;
    let b = Backend::start("b", "127.0.0.3", 0, Mode::Echo).await;
    let cport = listen_port();
    fake.edit(|c| {
        let ci_a = c.add_instance("127.0.0.2", None);
        let ci_b = c.add_instance("127.0.0.3", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci_a, cport, &a));
        c.add_task(bridge_task(&td, &ci_b, cport, &b));
    });
    let kite = Kite::start(&fake, family_query("web", None), REFRESH).await;
    kite.wait_port(cport, 2).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200usize {
        tasks.spawn(async move {
            let len = if i % 10 == 0 {
                4 << 20
            } else {
                (rand::random::<u32>() % (4 << 20)) as usize
            };
            let mut payload = vec![0u8; len];
            rand::rng().fill_bytes(&mut payload);
            let s = TcpStream::connect(("127.0.0.1", cport)).await.unwrap();
            let (mut r, mut w) = s.into_split();
            let sent = Sha256::digest(&payload);
            let writer = tokio::spawn(async move {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::with_capacity(len + 40);
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            let name_end = got.iter().position(|b| *b == b'\n').unwrap() + 1;
            let (body, backend_sum) = got[name_end..].split_at(got.len() - name_end - 32);
            assert_eq!(body.len(), len, "connection {i}: length");
            assert_eq!(
                backend_sum,
                sent.as_slice(),
                "connection {i}: what the backend received"
            );
            assert_eq!(Sha256::digest(body), sent, "connection {i}: what came back");
        });
    }
    let done = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    assert!(done.is_ok(), "200 connections did not finish in 240 s");
    assert!(a.connections.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(b.connections.load(std::sync::atomic::Ordering::SeqCst) > 0);
}
