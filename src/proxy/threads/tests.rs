use super::*;

/// A connection stays where the kernel put it unless another thread
/// serves at least four fewer, or two fewer and at most half as many:
/// then it goes to the least loaded one.
#[test]
fn connections_move_only_to_even_out_an_imbalance() {
    assert_eq!(least_loaded([0, 0], 0), 0);
    assert_eq!(least_loaded([1, 0], 0), 0);
    assert_eq!(least_loaded([2, 0], 0), 1);
    assert_eq!(least_loaded([2, 1], 0), 0);
    assert_eq!(least_loaded([3, 1], 0), 1);
    assert_eq!(least_loaded([5, 4, 1], 0), 2);
    assert_eq!(least_loaded([5, 1, 4], 2), 1);
    assert_eq!(least_loaded([0, 9, 9], 1), 0);
    assert_eq!(least_loaded([7], 0), 0);
    assert_eq!(least_loaded([4, 2], 0), 1);
    assert_eq!(least_loaded([5, 3], 0), 0);
    assert_eq!(least_loaded([9, 7], 0), 0);
    assert_eq!(least_loaded([12, 6], 0), 1);
    assert_eq!(least_loaded([12, 7], 0), 1);
    assert_eq!(least_loaded([12, 9], 0), 0);
    assert_eq!(least_loaded([7, 4], 0), 0);
    assert_eq!(least_loaded([8, 4], 0), 1);
    assert_eq!(least_loaded([9, 5], 0), 1);
}

/// A connection moves to the thread with the fewest of its kind when
/// that serves at least two fewer, itself counted where it is: so no
/// move can be undone by the next.
#[test]
fn connections_move_only_from_two_over() {
    assert_eq!(fewest([1, 0], 0), 0);
    assert_eq!(fewest([2, 0], 0), 1);
    assert_eq!(fewest([2, 1], 0), 0);
    assert_eq!(fewest([3, 1], 0), 1);
    assert_eq!(fewest([0, 2], 1), 0);
    assert_eq!(fewest([2, 2, 0], 1), 2);
    assert_eq!(fewest([2, 1, 2], 0), 0);
    assert_eq!(fewest([5], 0), 0);
    // After any move the two are within one of each other or the
    // mover's count is still the higher: it never wants back.
    for mine in 1..8 {
        for other in 0..8 {
            if fewest([mine, other], 0) == 1 {
                assert_eq!(fewest([mine - 1, other + 1], 1), 1);
            }
        }
    }
}

/// A connection counts as one kind at a time, only ever further up,
/// and uncounts itself when dropped.
#[tokio::test]
async fn a_connection_counts_as_one_kind_at_a_time() {
    let metrics = Metrics::new();
    let thread = ProxyThread::new(0, Handle::current(), &metrics);
    let counts = || {
        let load = &thread.load;
        (
            load.connections.get(),
            load.persistent.get(),
            load.streams.get(),
        )
    };
    let placed = Placed::new(0, &thread);
    assert_eq!((placed.kind(), counts()), (Kind::Plain, (1, 0, 0)));
    placed.count_as(Kind::Persistent);
    placed.count_as(Kind::Persistent);
    assert_eq!((placed.kind(), counts()), (Kind::Persistent, (1, 1, 0)));
    placed.count_as(Kind::Stream);
    placed.count_as(Kind::Persistent);
    placed.count_as(Kind::Plain);
    assert_eq!((placed.kind(), counts()), (Kind::Stream, (1, 0, 1)));
    let persistent = Placed::new(0, &thread);
    persistent.count_as(Kind::Persistent);
    assert_eq!(counts(), (2, 1, 1));
    drop(placed);
    assert_eq!(counts(), (1, 1, 0));
    drop(persistent);
    assert_eq!(counts(), (0, 0, 0));
}

/// Dropping the threads ends them, and the tasks left on them.
#[tokio::test]
async fn dropped_threads_drop_their_tasks() {
    let threads = Threads::start(2).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    threads.runtimes()[1].spawn(async move {
        let _tx = tx;
        std::future::pending::<()>().await;
    });
    drop(threads);
    let dropped = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
    assert!(
        matches!(dropped, Ok(Err(_))),
        "the task outlived its thread"
    );
}
