//! kite's own stdin as a stream of chunks, read on a plain thread.
//!
//! tokio's stdin reads on a blocking-pool thread that the runtime waits for
//! at shutdown, so a kite whose remote side has closed would hang until
//! the user pressed a key. A detached thread does not hold the process:
//! when attach is done, kite exits whatever the thread is doing.

use std::io::Read;

use tokio::sync::mpsc;

/// Chunk size for stdin reads.
const CHUNK: usize = 16 * 1024;

/// Starts reading stdin; the receiver yields chunks, an error, and then
/// closes at end of file.
pub(crate) fn stdin_chunks() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("kite-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // The receiver then reports the error once, as a read error.
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Err(e));
        return rx;
    }
    rx
}
