//! What SIGINT, SIGTERM and SIGHUP do while kite attaches.
//!
//! Outside a `--sig-proxy` session the first one stops kite's side: the
//! [`Interrupts::cancel`] token. In a session that proxies signals (a
//! container without a TTY, by default) each one goes to the container
//! instead, and kite goes on streaming until the container exits; a second
//! SIGINT within [`LEAVE_WITHIN`] of the one before leaves at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Two SIGINTs this close together leave a proxying session at once.
pub const LEAVE_WITHIN: Duration = Duration::from_secs(1);

/// A signal kite passes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM.
    Term,
    /// SIGHUP.
    Hup,
}

impl Sig {
    /// Its name, as the Docker API takes it.
    pub fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
            Sig::Hup => "SIGHUP",
        }
    }
}

type Proxy = Arc<Mutex<Option<mpsc::UnboundedSender<Sig>>>>;

/// The signals of one `kite attach`.
#[derive(Debug, Default)]
pub struct Interrupts {
    /// Cancelled when kite is to stop attaching.
    pub cancel: CancellationToken,
    proxy: Proxy,
}

/// While held, the signals go to its receiver instead of cancelling.
pub(crate) struct Proxying {
    pub(crate) signals: mpsc::UnboundedReceiver<Sig>,
    proxy: Proxy,
}

impl Drop for Proxying {
    fn drop(&mut self) {
        *self.proxy.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Interrupts {
    /// Handles SIGINT, SIGTERM and SIGHUP from now on, on the current
    /// runtime.
    pub fn listen() -> Result<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let interrupts = Interrupts::default();
        let (cancel, proxy) = (interrupts.cancel.clone(), interrupts.proxy.clone());
        tokio::spawn(async move {
            let mut last_int: Option<Instant> = None;
            loop {
                let sig = tokio::select! {
                    Some(()) = int.recv() => Sig::Int,
                    Some(()) = term.recv() => Sig::Term,
                    Some(()) = hup.recv() => Sig::Hup,
                    else => return,
                };
                let forward = proxy.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let again = sig == Sig::Int && last_int.is_some_and(|t| t.elapsed() < LEAVE_WITHIN);
                if sig == Sig::Int {
                    last_int = Some(Instant::now());
                }
                match forward {
                    Some(tx) if !again && tx.send(sig).is_ok() => {}
                    _ => cancel.cancel(),
                }
            }
        });
        Ok(interrupts)
    }

    /// Sends the signals to the returned receiver while it is held.
    pub(crate) fn proxy(&self) -> Proxying {
        let (tx, signals) = mpsc::unbounded_channel();
        *self.proxy.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        Proxying {
            signals,
            proxy: self.proxy.clone(),
        }
    }
}
