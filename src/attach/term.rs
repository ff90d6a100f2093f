//! The local terminal for `kite attach --docker` with a TTY: raw mode that
//! is restored on every exit path, the window size, and watching for the
//! detach keys.

use std::io::IsTerminal;

use rustix::termios::{self, OptionalActions, Termios};

use crate::config::DetachKeys;

/// The terminal's settings before raw mode; restores them when dropped, so
/// an error, a panic that unwinds, or a normal return all leave the
/// terminal as it was.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode; `Ok(None)` when stdin is not a
    /// terminal.
    pub fn enable() -> std::io::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The window size (rows, columns) of whichever of stdout, stdin and
/// stderr is a terminal.
pub fn window_size() -> Option<(u16, u16)> {
    let try_one = |fd: std::os::fd::BorrowedFd<'_>| {
        termios::tcgetwinsize(fd)
            .ok()
            .filter(|w| w.ws_row > 0 && w.ws_col > 0)
            .map(|w| (w.ws_row, w.ws_col))
    };
    use std::os::fd::AsFd;
    try_one(std::io::stdout().as_fd())
        .or_else(|| try_one(std::io::stdin().as_fd()))
        .or_else(|| try_one(std::io::stderr().as_fd()))
}

/// Watches the bytes typed for the detach sequence, across chunk borders.
#[derive(Debug)]
pub struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    /// Watches for `keys`.
    pub fn new(keys: &DetachKeys) -> Self {
        DetachWatch {
            keys: keys.bytes.clone(),
            matched: 0,
        }
    }

    /// Feeds typed bytes; true once the whole sequence has been typed.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            if self.keys.get(self.matched) == Some(&b) {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return true;
                }
            } else {
                self.matched = usize::from(self.keys.first() == Some(&b));
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_detach_keys;

    #[test]
    fn detach_sequence_across_chunks() {
        let keys = parse_detach_keys("ctrl-p,ctrl-q").unwrap();
        let mut w = DetachWatch::new(&keys);
        assert!(!w.feed(b"hello\x10"));
        assert!(w.feed(b"\x11"));
        let mut w = DetachWatch::new(&keys);
        assert!(!w.feed(b"\x10x\x11"));
        assert!(w.feed(b"\x10\x10\x11"));
    }
}
