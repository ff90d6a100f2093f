use tokio::runtime::Handle;

use super::*;
use crate::proxy::threads::ProxyThread;
use crate::snapshot::Policy;

/// About 1.8 KB in a debug build; held twice, a task would be over 3 KB.
const CONNECTION_TASK_MAX: usize = 2048;

/// A connection's task, which every open connection holds, stays small:
/// a future that holds another and awaits it doubles in size.
#[tokio::test]
async fn a_connection_task_stays_small() {
    let listener = net::Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (_client, accepted) = tokio::join!(net::Socket::connect(addr), listener.accept());
    let (client, peer) = accepted.unwrap();
    let settings = Settings {
        listen_addr: addr.ip(),
        connect_timeout: Duration::from_secs(3),
        max_connections: 1,
        idle_timeout: None,
        policy: Policy::default(),
        proxy_protocol: None,
        metrics: Arc::default(),
        runtimes: Vec::new(),
    };
    let shared = Arc::new(Shared::new(&settings, Arc::default(), TaskTracker::new()));
    let counters = Arc::new(shared.metrics.port(addr.port()));
    let thread = ProxyThread::new(0, Handle::current(), &shared.metrics);
    let conn = conn::Conn {
        client,
        port: addr.port(),
        placed: Some(Placed::new(0, &thread)),
        shared: shared.clone(),
        counters,
    };
    let task = connection_task(conn, peer);
    let size = std::mem::size_of_val(&task);
    eprintln!("a connection's task: {size} bytes");
    assert!(size <= CONNECTION_TASK_MAX, "{size} bytes");
}
