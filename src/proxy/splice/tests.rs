use std::future::Future;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use super::*;

/// A bound on anything that should finish; reaching it means a hang
/// (generous: shared 2-core machines run these tests under heavy load).
const LIMIT: Duration = Duration::from_secs(120);

/// Which path the relay under test takes.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `splice_bidirectional` as callers see it: streams take pipes.
    Public,
    /// The splice with no pipe to be had ([`Pipes::Never`]): every byte
    /// goes through the buffer.
    Copy,
    /// `splice_bidirectional`, with this thread's pool counting its pipes
    /// in the gauge (as `kite_pipes_pooled`).
    Pooled(&'static Gauge),
}

/// A client and a backend with a relay task between them:
/// client ⇄ (a | relay | b) ⇄ backend, all on loopback.
struct Relay {
    client: TcpStream,
    backend: TcpStream,
    task: JoinHandle<io::Result<(u64, u64)>>,
}

/// Two connected loopback sockets.
async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = TcpStream::connect(listener.local_addr().unwrap());
    let (near, far) = tokio::join!(near, listener.accept());
    (near.unwrap(), far.unwrap().0)
}

async fn start(via: Via) -> Relay {
    let (client, a) = socket_pair().await;
    let (b, backend) = socket_pair().await;
    let task = tokio::spawn(relay(via, a, b));
    Relay {
        client,
        backend,
        task,
    }
}

/// Relays a ⇄ b the `via` way; when it ends well, checks that the
/// meter saw exactly the bytes the relay reports.
async fn relay(via: Via, a: TcpStream, b: TcpStream) -> io::Result<(u64, u64)> {
    let (a, b) = (Socket::from_tokio(a)?, Socket::from_tokio(b)?);
    let (a, b) = (&a, &b);
    let (up, down, activity) = (Counter::default(), Counter::default(), Activity::default());
    let meter = Meter {
        a_to_b: &up,
        b_to_a: &down,
        activity: &activity,
    };
    let moved = match via {
        Via::Public => splice_bidirectional(a, b, meter).await,
        Via::Copy => {
            #[cfg(target_os = "linux")]
            assert!(Pipes::Never.take().is_err(), "the fallback is not forced");
            splice_with(a, b, meter, Pipes::Never).await
        }
        Via::Pooled(gauge) => {
            count_pipes_in(gauge);
            splice_bidirectional(a, b, meter).await
        }
    }?;
    assert_eq!((up.get(), down.get()), moved, "{via:?}: metered bytes");
    Ok(moved)
}

/// [`splice_bidirectional`] with its pipes from `pipes`.
async fn splice_with(
    a: &Socket,
    b: &Socket,
    meter: Meter<'_>,
    pipes: Pipes,
) -> io::Result<(u64, u64)> {
    let mut progress = Progress::default();
    let stop = splice_resumable(a, b, meter, pipes, &mut progress, &|_| false).await?;
    assert_eq!(stop, Stop::Done);
    Ok(progress.moved())
}

/// Runs a test body, failing it if it takes longer than [`LIMIT`].
async fn bounded(body: impl Future<Output = ()>) {
    bounded_value(body).await
}

/// The value of a test body, failing it if it takes longer than
/// [`LIMIT`].
async fn bounded_value<T>(body: impl Future<Output = T>) -> T {
    timeout(LIMIT, body).await.expect("test hangs")
}

/// Waits for the relay task, which must end within [`LIMIT`].
async fn finish(task: JoinHandle<io::Result<(u64, u64)>>) -> io::Result<(u64, u64)> {
    timeout(LIMIT, task).await.expect("relay hangs").unwrap()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// `asker` sends a request and half-closes; `answerer` reads it to the
/// end, and only then sends its answer and closes. Both must arrive
/// intact.
async fn ask(mut asker: TcpStream, mut answerer: TcpStream, request: Vec<u8>, answer: Vec<u8>) {
    let answering = tokio::spawn(async move {
        let mut got = Vec::new();
        // Returns only once the half-close has come through.
        answerer.read_to_end(&mut got).await.unwrap();
        answerer.write_all(&answer).await.unwrap();
        (got, answer)
    });
    asker.write_all(&request).await.unwrap();
    asker.shutdown().await.unwrap();
    let mut got = Vec::new();
    asker.read_to_end(&mut got).await.unwrap();
    let (request_got, answer) = answering.await.unwrap();
    assert!(request_got == request, "request corrupted");
    assert!(got == answer, "answer corrupted");
}

async fn half_close(via: Via) {
    let (request, answer) = (random_bytes(10_000), random_bytes(6 << 20));
    let (up, down) = (request.len() as u64, answer.len() as u64);

    // The client asks, as in HTTP/1.0.
    let r = start(via).await;
    ask(r.client, r.backend, request.clone(), answer.clone()).await;
    assert_eq!(finish(r.task).await.unwrap(), (up, down), "{via:?}");

    // The backend speaks first and half-closes; the client answers.
    let r = start(via).await;
    ask(r.backend, r.client, request, answer).await;
    assert_eq!(finish(r.task).await.unwrap(), (down, up), "{via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_honoured_by_splice() {
    bounded(half_close(Via::Public)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_honoured_by_the_fallback() {
    bounded(half_close(Via::Copy)).await;
}

/// Sends `len` random bytes in random-sized writes, then half-closes;
/// returns their digest.
async fn send_random(mut to: impl AsyncWrite + Unpin, len: usize) -> [u8; 32] {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut hash = Sha256::new();
    let mut chunk = vec![0; 128 << 10];
    let mut left = len;
    while left > 0 {
        let n = rng.random_range(1..=chunk.len()).min(left);
        rng.fill_bytes(&mut chunk[..n]);
        hash.update(&chunk[..n]);
        to.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    to.shutdown().await.unwrap();
    hash.finalize().into()
}

/// Reads to end of stream; returns the digest and the length.
async fn receive_all(mut from: impl AsyncRead + Unpin) -> ([u8; 32], usize) {
    let mut hash = Sha256::new();
    let mut buf = vec![0; 64 << 10];
    let mut len = 0;
    loop {
        let n = from.read(&mut buf).await.unwrap();
        if n == 0 {
            return (hash.finalize().into(), len);
        }
        hash.update(&buf[..n]);
        len += n;
    }
}

/// Random payloads both ways at once; each side checks what it got.
async fn exchange(via: Via, up: usize, down: usize) {
    let r = start(via).await;
    let (client_rx, client_tx) = r.client.into_split();
    let (backend_rx, backend_tx) = r.backend.into_split();
    let (sent_up, sent_down, got_up, got_down) = tokio::join!(
        send_random(client_tx, up),
        send_random(backend_tx, down),
        receive_all(backend_rx),
        receive_all(client_rx),
    );
    assert_eq!(got_up, (sent_up, up), "client → backend corrupted");
    assert_eq!(got_down, (sent_down, down), "backend → client corrupted");
    assert_eq!(finish(r.task).await.unwrap(), (up as u64, down as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_keep_their_bytes_intact() {
    let mut rng = rand::rng();
    let mut sizes: Vec<(usize, usize)> = (0..48)
        .map(|_| (rng.random_range(0..=4 << 20), rng.random_range(0..=4 << 20)))
        .collect();
    // Also the edges: nothing at all, and a single byte.
    sizes.extend([(0, 0), (1, 1)]);
    let connections: Vec<_> = sizes
        .into_iter()
        .map(|(up, down)| tokio::spawn(exchange(Via::Public, up, down)))
        .collect();
    bounded(async {
        for connection in connections {
            connection.await.unwrap();
        }
    })
    .await;
}

/// Sends one byte of TCP urgent (out-of-band) data, once the socket
/// has room for it.
#[cfg(target_os = "linux")]
async fn send_urgent(stream: &TcpStream) {
    loop {
        stream.writable().await.unwrap();
        let sent = stream.try_io(Interest::WRITABLE, || {
            socket2::SockRef::from(stream).send_out_of_band(b"!")
        });
        match sent {
            Ok(n) => return assert_eq!(n, 1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("send MSG_OOB: {e}"),
        }
    }
}

/// splice(2) and read(2) both stop at urgent data; the bytes behind it
/// must still come through, whether or not a FIN follows them. Each
/// mark comes right behind 4 MiB, so the direction is streaming (through
/// a pipe, but for the copy fallback) when it gets there. The urgent
/// byte itself is dropped, as a plain read drops it.
#[cfg(target_os = "linux")]
async fn urgent_data(via: Via) {
    let Relay {
        mut client,
        mut backend,
        task,
    } = start(via).await;
    let mut up = 0;
    for (before, after, end) in [(b"ab", b"cd", false), (b"ef", b"gh", true)] {
        let stream = random_bytes(4 << 20);
        let sending = async {
            client.write_all(&stream).await.unwrap();
            client.write_all(before).await.unwrap();
            send_urgent(&client).await;
            client.write_all(after).await.unwrap();
            if end {
                client.shutdown().await.unwrap();
            }
        };
        let mut expected = stream.clone();
        expected.extend_from_slice(before);
        expected.extend_from_slice(after);
        let receiving = async {
            let mut got = vec![0; expected.len()];
            backend.read_exact(&mut got).await.unwrap();
            if end {
                assert_eq!(
                    backend.read(&mut [0; 1]).await.unwrap(),
                    0,
                    "{via:?}: no end"
                );
            }
            got
        };
        let ((), got) = tokio::join!(sending, receiving);
        assert!(
            got == expected,
            "{via:?}: bytes around the mark lost or corrupted"
        );
        up += expected.len() as u64;
    }
    drop(backend);
    assert_eq!(finish(task).await.unwrap(), (up, 0), "{via:?}");
}

/// Waits until `stream` has received `n` bytes (TCP_INFO; FIONREAD would
/// stop counting at the urgent mark).
#[cfg(target_os = "linux")]
async fn received(stream: &TcpStream, n: u64) {
    while tcp_info(stream).tcpi_bytes_received < n {
        sleep(Duration::from_millis(1)).await;
    }
}

/// Urgent data already waiting when the relay starts: its first read
/// stops at the mark with nothing more to come from the network, so
/// only the urgent data's own readiness tells it to read on.
#[cfg(target_os = "linux")]
async fn urgent_data_waiting(via: Via) {
    let (mut client, a) = socket_pair().await;
    let (b, mut backend) = socket_pair().await;
    client.write_all(b"ab").await.unwrap();
    send_urgent(&client).await;
    client.write_all(b"cd").await.unwrap();
    received(&a, 5).await; // all of it in a's queue, the urgent byte too
    let task = tokio::spawn(relay(via, a, b));
    let mut got = [0; 4];
    backend.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"abcd", "{via:?}");
    drop((client, backend));
    let _ = finish(task).await;
}

#[cfg(target_os = "linux")] // elsewhere it would test the fallback
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_data_neither_stalls_nor_truncates() {
    bounded(urgent_data_waiting(Via::Public)).await;
    bounded(urgent_data_waiting(Via::Copy)).await;
    bounded(urgent_data(Via::Public)).await;
    bounded(urgent_data(Via::Copy)).await;
}

/// `n` requests of 1 KiB from `client`, each answered by `backend`
/// with 1 KiB, through a relay; both checked.
async fn small_exchanges(client: &mut TcpStream, backend: &mut TcpStream, n: usize) {
    let (request, answer) = (random_bytes(1024), random_bytes(1024));
    for _ in 0..n {
        client.write_all(&request).await.unwrap();
        let mut got = vec![0; request.len()];
        backend.read_exact(&mut got).await.unwrap();
        assert!(got == request, "request corrupted");
        backend.write_all(&answer).await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert!(got == answer, "answer corrupted");
    }
}

/// Relays a ⇄ b the `via` way on a thread of its own, whose pipe pool
/// starts empty and is dropped when the relay ends.
fn relay_alone(via: Via, a: TcpStream, b: TcpStream) -> JoinHandle<io::Result<(u64, u64)>> {
    let (a, b) = (a.into_std().unwrap(), b.into_std().unwrap());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = (TcpStream::from_std(a)?, TcpStream::from_std(b)?);
            relay(via, a, b).await
        })
    });
    tokio::task::spawn_blocking(move || thread.join().unwrap())
}

/// Request and answer of 1 KiB, a hundred times on one connection,
/// then a 4 MiB stream: the small exchanges take no pipe (they go
/// through the shared buffer), the stream does. The relay has a thread,
/// and so a pipe pool, of its own: only its bursts give pipes back there.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_exchanges_take_no_pipe_and_streams_do() {
    let (mut client, a) = socket_pair().await;
    let (b, mut backend) = socket_pair().await;
    let pooled: &'static Gauge = Box::leak(Box::default());
    let task = relay_alone(Via::Pooled(pooled), a, b);
    bounded(small_exchanges(&mut client, &mut backend, 100)).await;
    assert_eq!(pooled.get(), 0, "small exchanges took pipes");
    // The same again, then the stream; the relay ends with both sides.
    bounded(async {
        client.write_all(&random_bytes(1024)).await.unwrap();
        client.write_all(&random_bytes(4 << 20)).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(receive_all(&mut backend).await.1, 1024 + (4 << 20));
        // The burst gave its pipe back before the end was passed on.
        assert!(pooled.get() > 0, "the stream took no pipe");
        drop(backend);
    })
    .await;
    let moved = finish(task).await.unwrap();
    assert_eq!(moved, (101 * 1024 + (4 << 20), 100 * 1024));
    // The thread's end closed its pool's pipes, and uncounted them.
    assert_eq!(pooled.get(), 0, "pipes counted after their pool is gone");
}

/// Makes `stream` close with a reset (RST) when dropped.
fn abort(stream: TcpStream) {
    stream.set_zero_linger().unwrap();
    drop(stream);
}

async fn reset_while_backend_sends(via: Via) {
    let Relay {
        mut client,
        mut backend,
        task,
    } = start(via).await;
    backend.write_all(&random_bytes(1 << 20)).await.unwrap();
    let mut first = [0; 1];
    client.read_exact(&mut first).await.unwrap(); // the transfer is under way
    abort(backend);
    // The client stays open and quiet: only the reset can end the relay.
    let started = Instant::now();
    assert!(finish(task).await.is_err(), "{via:?}: reset not reported");
    assert!(started.elapsed() < Duration::from_secs(5), "{via:?}: slow");
    // Dropping the relay's sockets ends the client's stream too.
    let _ = client.read_to_end(&mut Vec::new()).await;
}

async fn reset_while_client_sends(via: Via) {
    let Relay {
        client,
        mut backend,
        task,
    } = start(via).await;
    let (_client_rx, mut client_tx) = client.into_split();
    // The client keeps sending until its connection breaks.
    let sending = tokio::spawn(async move {
        let chunk = random_bytes(64 << 10);
        while client_tx.write_all(&chunk).await.is_ok() {}
    });
    let mut some = vec![0; 256 << 10];
    backend.read_exact(&mut some).await.unwrap();
    abort(backend);
    assert!(finish(task).await.is_err(), "{via:?}: reset not reported");
    sending.await.unwrap();
}

/// A tokio stream as a mio one, registered nowhere.
fn unregistered(stream: TcpStream) -> mio::net::TcpStream {
    mio::net::TcpStream::from_std(stream.into_std().unwrap())
}

/// When the splice asks to park (given whether the direction streams).
type Park = std::sync::Arc<dyn Fn(bool) -> bool + Send + Sync>;

/// One leg of a relay that hops between runtimes: splices on the
/// runtime it runs on, whose reactor its sockets are registered with,
/// until done or parked, and hands everything back.
async fn leg(
    a: Socket,
    b: Socket,
    mut progress: Progress,
    (up, down): (Counter, Counter),
    park: Park,
) -> (Socket, Socket, Progress, io::Result<Stop>) {
    let activity = Activity::default();
    let meter = Meter {
        a_to_b: &up,
        b_to_a: &down,
        activity: &activity,
    };
    let stop = splice_resumable(&a, &b, meter, Pipes::Pooled, &mut progress, &|streaming| {
        park(streaming)
    })
    .await;
    (a, b, progress, stop)
}

/// A relay between `a` and `b` that starts on the first of `runtimes`
/// and, each time it parks, takes its sockets off that runtime and goes
/// on on the next: what the proxy does when a connection moves to
/// another thread. Returns the bytes moved each way and the moves.
async fn hopping_relay(
    (a, b): (TcpStream, TcpStream),
    runtimes: Vec<tokio::runtime::Handle>,
    park: Park,
) -> io::Result<((u64, u64), usize)> {
    let (mut a, mut b) = (unregistered(a), unregistered(b));
    let (up, down) = (Counter::default(), Counter::default());
    let mut progress = Progress::default();
    for hop in 0.. {
        let runtime = &runtimes[hop % runtimes.len()];
        let (on_a, on_b) = (Socket::adopt(a, runtime)?, Socket::adopt(b, runtime)?);
        let counters = (up.clone(), down.clone());
        let running = runtime.spawn(leg(on_a, on_b, progress, counters, park.clone()));
        let (on_a, on_b, back, stop) = running.await.unwrap();
        progress = back;
        match stop? {
            Stop::Done => {
                let moved = progress.moved();
                assert_eq!((up.get(), down.get()), moved, "metered bytes");
                return Ok((moved, hop));
            }
            Stop::Parked => (a, b) = (on_a.detach(), on_b.detach()),
        }
    }
    unreachable!()
}

/// A splice asks to park between small exchanges (as not streaming)
/// and between the bursts of streams (as streaming), and a splice
/// parked again and again goes on where it stopped on another thread,
/// its sockets registered anew there, with every byte intact both ways
/// and the half-closes passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_splice_goes_on_on_another_thread() {
    let (mut client, a) = socket_pair().await;
    let (b, mut backend) = socket_pair().await;
    let threads = crate::proxy::Threads::start(2).unwrap();
    // How often it was asked, not streaming and streaming.
    let asked = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let park: Park = {
        let asked = asked.clone();
        // Every third time it is asked either way, up to 10 moves
        // between small exchanges and 30 within streams.
        std::sync::Arc::new(move |streaming| {
            let n = asked[usize::from(streaming)].fetch_add(1, Ordering::Relaxed) + 1;
            n.is_multiple_of(3) && n <= if streaming { 90 } else { 30 }
        })
    };
    let asked_now = |streaming: bool| asked[usize::from(streaming)].load(Ordering::Relaxed);
    let runtimes = threads.runtimes().to_vec();
    let relay = tokio::spawn(hopping_relay((a, b), runtimes, park));

    bounded(small_exchanges(&mut client, &mut backend, 50)).await;
    assert_eq!(asked_now(true), 0, "small exchanges asked as streaming");
    assert!(
        asked_now(false) >= 30,
        "small exchanges asked {} times",
        asked_now(false)
    );

    let (up, down) = (24 << 20, 16 << 20);
    let (client_rx, client_tx) = client.into_split();
    let (backend_rx, backend_tx) = backend.into_split();
    let ((sent_up, sent_down, got_up, got_down), relayed) = bounded_value(async {
        let exchange = async {
            tokio::join!(
                send_random(client_tx, up),
                send_random(backend_tx, down),
                receive_all(backend_rx),
                receive_all(client_rx),
            )
        };
        tokio::join!(exchange, async { relay.await.unwrap() })
    })
    .await;
    assert_eq!(got_up, (sent_up, up), "client → backend corrupted");
    assert_eq!(got_down, (sent_down, down), "backend → client corrupted");
    let (moved, hops) = relayed.unwrap();
    assert_eq!(moved, (50 * 1024 + up as u64, 50 * 1024 + down as u64));
    eprintln!(
        "{hops} moves, asked {} times between small exchanges, {} within streams",
        asked_now(false),
        asked_now(true)
    );
    assert!(hops >= 15, "parked only {hops} times");
}

/// A connection is due to look at the threads' counts as persistent
/// once bytes move 100 ms after it opened, then at most once per
/// 100 ms of traffic: never twice in a row, nor while it is quiet.
#[test]
fn a_persistent_check_is_due_once_per_100_ms_of_traffic() {
    let activity = Activity::default();
    activity.touch();
    assert!(!activity.persistent_check_due(), "short-lived so far");
    std::thread::sleep(PERSISTENT_AFTER + Duration::from_millis(10));
    assert!(!activity.persistent_check_due(), "no bytes moved since");
    activity.touch();
    assert!(activity.persistent_check_due());
    activity.touch();
    assert!(!activity.persistent_check_due(), "due twice in a row");
    std::thread::sleep(PERSISTENT_AFTER + Duration::from_millis(10));
    activity.touch();
    assert!(activity.persistent_check_due());
}

/// The segments `stream` has received so far (TCP_INFO).
#[cfg(target_os = "linux")]
fn segments_in(stream: &TcpStream) -> u32 {
    tcp_info(stream).tcpi_segs_in
}

/// `stream`'s TCP_INFO. Neither socket2 nor rustix reads it: hence the
/// getsockopt(2).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn tcp_info(stream: &TcpStream) -> libc::tcp_info {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers, for which zeroes are valid;
    // the kernel writes at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info
}

/// Sends `bytes` and a FIN in one segment: MSG_MORE, then shutdown(2).
#[cfg(target_os = "linux")]
fn send_and_end(stream: &TcpStream, bytes: &[u8]) {
    let socket = socket2::SockRef::from(stream);
    let sent = socket.send_with_flags(bytes, libc::MSG_MORE).unwrap();
    assert_eq!(sent, bytes.len());
    socket.shutdown(std::net::Shutdown::Write).unwrap();
}

/// A server that closes after its answer (HTTP's `Connection: close`):
/// the answer's last bytes and the FIN reach the client in one segment,
/// not two, as HAProxy sends them.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_bytes_and_the_end_leave_in_one_segment() {
    bounded(async {
        for via in [Via::Public, Via::Copy] {
            let Relay {
                mut client,
                backend,
                task,
            } = start(via).await;
            let answer = random_bytes(1000);
            let before = segments_in(&client);
            send_and_end(&backend, &answer);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert!(got == answer, "{via:?}: answer corrupted");
            let segments = segments_in(&client) - before;
            assert_eq!(segments, 1, "{via:?}: the answer and its end came apart");
            drop(client);
            assert_eq!(finish(task).await.unwrap(), (0, 1000), "{via:?}");
        }
    })
    .await;
}

/// Bytes followed by a reset are not taken for an answer that ended:
/// the relay reports the reset, although the client stays open and
/// quiet. Both have come before the relay starts, so that it sees
/// them together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_then_a_reset_are_no_end_of_stream() {
    bounded(async {
        for via in [Via::Public, Via::Copy] {
            let (mut client, a) = socket_pair().await;
            let (b, mut backend) = socket_pair().await;
            backend.write_all(&random_bytes(1000)).await.unwrap();
            abort(backend);
            while !b.ready(Interest::ERROR).await.unwrap().is_error() {}
            let task = tokio::spawn(relay(via, a, b));
            assert!(
                finish(task).await.is_err(),
                "{via:?}: reset taken for an end"
            );
            let _ = client.read_to_end(&mut Vec::new()).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_ends_the_splice() {
    for via in [Via::Public, Via::Copy] {
        bounded(reset_while_backend_sends(via)).await;
        bounded(reset_while_client_sends(via)).await;
    }
}

/// CPU time used so far by the calling thread.
fn thread_cpu_time() -> Duration {
    use rustix::time::{clock_gettime, ClockId};
    let ts = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A relay that idles, stalls on a backend that does not read, and sits
/// half-closed must sleep through all of it: a busy loop would burn
/// about a second of CPU here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_costs_no_cpu() {
    const PAUSE: Duration = Duration::from_millis(400);
    let (mut client, a) = socket_pair().await;
    let (b, mut backend) = socket_pair().await;
    let (a, b) = (a.into_std().unwrap(), b.into_std().unwrap());
    // The relay gets a thread of its own, whose CPU time is its alone.
    let relay_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = TcpStream::from_std(a).unwrap();
            let b = TcpStream::from_std(b).unwrap();
            let before = thread_cpu_time();
            let moved = relay(Via::Public, a, b).await;
            (moved, thread_cpu_time() - before)
        })
    });
    // More than all the socket buffers on the way can hold.
    let stalled = 32 << 20;

    bounded(async {
        sleep(PAUSE).await; // idle
        let sending = tokio::spawn(async move {
            client.write_all(&vec![7; stalled]).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        sleep(PAUSE).await; // the backend does not read: the relay stalls
        assert_eq!(receive_all(&mut backend).await.1, stalled);
        let mut client = sending.await.unwrap();
        sleep(PAUSE).await; // half-closed, the other way still open
        backend.write_all(b"bye").await.unwrap();
        drop(backend);
        assert_eq!(receive_all(&mut client).await.1, 3);
    })
    .await;

    let join = tokio::task::spawn_blocking(move || relay_thread.join().unwrap());
    let (moved, cpu) = timeout(LIMIT, join).await.expect("relay hangs").unwrap();
    assert_eq!(moved.unwrap(), (stalled as u64, 3));
    assert!(
        cpu < Duration::from_millis(300),
        "relay used {cpu:?} of CPU"
    );
}
