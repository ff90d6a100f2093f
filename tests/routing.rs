//! How kite routes, end to end against the fake endpoint with real
//! backends on loopback: zone affinity, least connections, and the PROXY
//! protocol header.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use kite::config::{Balance, ProxyProtocol};
use kite::proxy;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const REFRESH: Duration = Duration::from_millis(200);

/// Starts kite (listening on `::`, so on IPv4 and IPv6 alike) with
/// `--proxy-protocol version` in front of `backend`, a bridge task of
/// family "web"; returns it with its listen port.
async fn kite_sending(fake: &FakeAws, backend: &Backend, version: ProxyProtocol) -> (Kite, u16) {
    let cport = listen_port();
    fake.edit(|c| {
        let ci = c.add_instance("127.0.0.2", None);
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        c.add_task(bridge_task(&td, &ci, cport, backend));
    });
    let kite = Kite::start_with(fake, |config| proxy::Config {
        source: family_query("web", None).into(),
        refresh: REFRESH,
        listen_addr: "::".parse().unwrap(),
        proxy_protocol: Some(version),
        ..config
    })
    .await;
    kite.wait_port(cport, 1).await;
    (kite, cport)
}

/// Connects to `to` and returns the header line the backend read and the
/// client's own address, once the client's bytes went through both ways.
async fn through(to: SocketAddr) -> (String, SocketAddr) {
    // A backend that got no header waits for one: fail rather than hang.
    tokio::time::timeout(Duration::from_secs(10), exchange(to))
        .await
        .expect("the backend answered within 10 s (it answers once it has read a header)")
}

async fn exchange(to: SocketAddr) -> (String, SocketAddr) {
    let s = TcpStream::connect(to).await.unwrap();
    let me = s.local_addr().unwrap();
    let mut s = BufReader::new(s);
    let (mut name, mut header) = (String::new(), String::new());
    s.read_line(&mut name).await.unwrap();
    s.read_line(&mut header).await.unwrap();
    assert_eq!(name, "pp\n");
    // The client's bytes follow the header, untouched.
    s.get_mut().write_all(b"ping\n").await.unwrap();
    let mut echo = String::new();
    s.read_line(&mut echo).await.unwrap();
    assert_eq!(echo, "ping\n");
    (header.trim_end().to_owned(), me)
}

/// Both versions, for an IPv4 and an IPv6 client: the backend's strict
/// parser reads the client's address and port as the source, and the
/// address and port the client connected to as the destination.
#[tokio::test]
async fn proxy_protocol_headers_name_the_client() {
    init_logs();
    for (version, n) in [(ProxyProtocol::V1, 1), (ProxyProtocol::V2, 2)] {
        let fake = FakeAws::start().await;
        let backend = Backend::start("pp", "127.0.0.2", 0, Mode::ProxyHeader).await;
        let (_kite, port) = kite_sending(&fake, &backend, version).await;
        for to in [
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ] {
            let (header, me) = through(to).await;
            assert_eq!(header, format!("{n} {me} {to}"), "{version} from {me}");
        }
    }
}

/// Starts kite in front of `backends`, each a bridge task of family "web"
/// on an instance of its own address, in the zone given; `configure`
/// adds to the tests' defaults. Returns it with its listen port.
async fn kite_over(
    fake: &FakeAws,
    backends: &[(&Backend, &str)],
    configure: impl FnOnce(proxy::Config) -> proxy::Config,
) -> (Kite, u16) {
    let cport = listen_port();
    fake.edit(|c| {
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        for (backend, zone) in backends {
            let ci = c.add_instance(&backend.addr.ip().to_string(), None);
            c.add_task(TaskSpec {
                availability_zone: Some(zone.to_string()),
                ..bridge_task(&td, &ci, cport, backend)
            });
        }
    });
    let kite = Kite::start_with(fake, |config| {
        configure(proxy::Config {
            source: family_query("web", None).into(),
            refresh: REFRESH,
            ..config
        })
    })
    .await;
    kite.wait_port(cport, backends.len()).await;
    (kite, cport)
}

/// `n` connections in turn: how many each backend answered.
async fn answers(port: u16, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..n {
        let name = whoami(port)
            .await
            .unwrap_or_else(|e| panic!("connection {i} failed: {e}"));
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

/// The value of a metric sample in kite's `/metrics`.
fn metric(kite: &Kite, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&kite.metrics.render(None, 0), name, labels)
}

/// Zone affinity: the own zone's targets take every connection while it
/// has at least --zone-min-targets usable ones; below that every zone
/// shares; and when every own-zone target refuses, connections fail over
/// to the other zones without a client failing.
#[tokio::test]
async fn zone_affinity_prefers_spills_and_fails_over() {
    init_logs();
    let a1 = Backend::start("a1", "127.0.0.2", 0, Mode::Echo).await;
    let a2 = Backend::start("a2", "127.0.0.3", 0, Mode::Echo).await;
    let b1 = Backend::start("b1", "127.0.0.4", 0, Mode::Echo).await;
    let backends = [(&a1, "zone-a"), (&a2, "zone-a"), (&b1, "zone-b")];
    let affine = |min| {
        move |config| proxy::Config {
            zone: Some("zone-a".into()),
            zone_affinity: true,
            zone_min_targets: min,
            ..config
        }
    };

    let fake = FakeAws::start().await;
    let (kite, port) = kite_over(&fake, &backends, affine(2)).await;
    let seen = answers(port, 40).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["a1", "a2"], "{seen:?}");
    // (40, and kite.wait_port's probe.)
    let by_zone = |zone| metric(&kite, "kite_connections_by_zone_total", &[("zone", zone)]);
    assert!(by_zone("same") >= 40.0, "{}", by_zone("same"));
    assert_eq!(by_zone("other"), 0.0);

    // Spill: a minimum the own zone does not reach sends to every zone.
    let fake3 = FakeAws::start().await;
    let (_kite3, port3) = kite_over(&fake3, &backends, affine(3)).await;
    let seen = answers(port3, 90).await;
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Failover: both own-zone targets refuse; every client is served.
    a1.kill();
    a2.kill();
    for b in [&a1, &a2] {
        while TcpStream::connect(b.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let seen = answers(port, 20).await;
    assert_eq!(seen, [("b1".to_owned(), 20)].into(), "{seen:?}");
    assert_eq!(by_zone("other"), 20.0);
}

/// Least connections with two targets: each new connection goes to the
/// one with fewer open, so held connections stay even; after the ones on
/// one target close, the next go there; and once all have closed every
/// count is back to 0.
#[tokio::test]
async fn least_conn_steers_to_the_less_loaded() {
    init_logs();
    let x = Backend::start("x", "127.0.0.2", 0, Mode::Echo).await;
    let y = Backend::start("y", "127.0.0.3", 0, Mode::Echo).await;
    let fake = FakeAws::start().await;
    let (kite, port) = kite_over(&fake, &[(&x, "z"), (&y, "z")], |config| proxy::Config {
        balance: Balance::LeastConn,
        ..config
    })
    .await;
    // The counts least-conn compares.
    let open = |name: &str| {
        let addr = if name == "x" { x.addr } else { y.addr };
        let snapshot = kite.store.load();
        let backends = snapshot.port(port).unwrap();
        let i = backends.addrs().iter().position(|a| *a == addr).unwrap();
        backends.load(i).get()
    };
    let mut held: Vec<(String, BufReader<TcpStream>)> = Vec::new();
    for i in 0..10 {
        let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        let mut name = String::new();
        s.read_line(&mut name).await.unwrap();
        held.push((name.trim_end().to_owned(), s));
        let on = |n: &str| held.iter().filter(|(h, _)| h == n).count();
        assert!(
            on("x").abs_diff(on("y")) <= 1,
            "after {} connections: {} on x, {} on y",
            i + 1,
            on("x"),
            on("y")
        );
    }
    assert_eq!((open("x"), open("y")), (5, 5));
    // Those on x close: the next four go to x, until it is even again.
    held.retain(|(name, _)| name == "y");
    for waited in 0.. {
        if open("x") == 0 {
            break;
        }
        assert!(waited < 500, "x's connections did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next = Vec::new();
    for _ in 0..4 {
        let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        let mut name = String::new();
        s.read_line(&mut name).await.unwrap();
        next.push(name.trim_end().to_owned());
        held.push((name.trim_end().to_owned(), s));
    }
    assert_eq!(next, ["x", "x", "x", "x"]);
    held.clear();
    for _ in 0..500 {
        if (open("x"), open("y")) == (0, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("counts not back to 0: x {}, y {}", open("x"), open("y"));
}

/// An awsvpc task whose ENI has only an IPv6 address is reached at
/// `[address]:containerPort`, here `[::1]`, by an IPv4 client of kite.
#[tokio::test]
async fn an_ipv6_only_task_is_reached() {
    init_logs();
    let fake = FakeAws::start().await;
    let cport = listen_port();
    let v6 = Backend::start("v6", "::1", cport, Mode::Echo).await;
    fake.edit(|c| {
        let td = c.add_task_definition("web", 1, "awsvpc", &app(&[(cport, None)]));
        c.add_task(TaskSpec {
            launch_type: "FARGATE".into(),
            eni: Some(("eni-v6".into(), String::new())),
            eni_ipv6: Some("::1".into()),
            containers: vec![TaskContainer::new("app")],
            ..TaskSpec::new(&td)
        });
    });
    let kite = Kite::start(&fake, family_query("web", None), REFRESH).await;
    kite.wait_port(cport, 1).await;
    assert_eq!(kite.store.load().backends(cport), [v6.addr]);
    assert_eq!(answers(cport, 5).await, [("v6".to_owned(), 5)].into());
}

/// A target whose SYNs go unanswered (its listen queue is full, so the
/// kernel drops them, as for an instance that died) costs the connection
/// that tries it one --connect-timeout, and is then left out: the next
/// connections go straight to the live target.
#[tokio::test]
async fn a_silent_target_costs_one_timeout_then_is_left_out() {
    init_logs();
    const TIMEOUT: Duration = Duration::from_millis(500);
    let live = Backend::start("live", "127.0.0.2", 0, Mode::Echo).await;
    // A listener with a backlog of 0 holds one connection it never
    // accepts; from then on its SYNs are dropped.
    let silent = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    silent
        .bind(&SocketAddr::from(([127, 0, 0, 3], 0)).into())
        .unwrap();
    silent.listen(0).unwrap();
    let silent_addr = silent.local_addr().unwrap().as_socket().unwrap();
    let _queued = std::net::TcpStream::connect(silent_addr).unwrap();
    let dropped =
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(silent_addr)).await;
    assert!(
        dropped.is_err(),
        "the listen queue is not full: {dropped:?}"
    );

    let fake = FakeAws::start().await;
    let cport = listen_port();
    fake.edit(|c| {
        let td = c.add_task_definition("web", 1, "bridge", &app(&[(cport, None)]));
        let ci = c.add_instance("127.0.0.2", None);
        c.add_task(bridge_task(&td, &ci, cport, &live));
        let ci = c.add_instance("127.0.0.3", None);
        let mut t = bridge_task(&td, &ci, cport, &live);
        t.containers[0].network_bindings = vec![("0.0.0.0".into(), cport, silent_addr.port())];
        c.add_task(t);
    });
    let kite = Kite::start_with(&fake, |config| proxy::Config {
        source: family_query("web", None).into(),
        refresh: REFRESH,
        connect_timeout: TIMEOUT,
        ..config
    })
    .await;
    kite.wait_for("both targets", |s| s.backends(cport).len() == 2)
        .await;
    // Not wait_port: its probe connection would be proxied too, and could
    // try the silent target at the same time as the first connection here.
    wait_listening(cport).await;
    let failures = || {
        let labels = [("backend", silent_addr.to_string())];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metric(&kite, "kite_backend_connect_failures_total", &labels)
    };
    let mut slow = Vec::new();
    for i in 0..30 {
        let started = std::time::Instant::now();
        let name = whoami(cport)
            .await
            .unwrap_or_else(|e| panic!("connection {i} failed: {e}"));
        assert_eq!(name, "live");
        if failures() > slow.len() as f64 {
            slow.push(started.elapsed());
        }
    }
    assert_eq!(failures(), 1.0, "tried once, then left out");
    assert!(slow[0] >= TIMEOUT, "the try cost the timeout: {slow:?}");
}

/// Waits (up to 10 s) until something listens on 127.0.0.1:`port`, found
/// by failing to bind it rather than by connecting (which kite would
/// proxy).
async fn wait_listening(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "kite never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
