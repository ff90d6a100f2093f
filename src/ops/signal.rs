//! Signals: SIGTERM (what ECS sends on stop) and SIGINT.

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r.context("installing the SIGINT handler")?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("installing the Ctrl-C handler")?;
    Ok(())
}

/// The first and the second shutdown signal, as tokens: the first starts a
/// drain, the second cuts it short.
#[derive(Clone, Debug)]
pub struct Signals {
    /// Cancelled by the first SIGTERM or SIGINT.
    pub first: CancellationToken,
    /// Cancelled by the one after it.
    pub second: CancellationToken,
}

/// Starts watching for shutdown signals, on the current runtime.
pub fn watch() -> Signals {
    let signals = Signals {
        first: CancellationToken::new(),
        second: CancellationToken::new(),
    };
    let tokens = signals.clone();
    tokio::spawn(async move {
        for token in [&tokens.first, &tokens.second] {
            if let Err(err) = shutdown().await {
                // Without a handler kite could not be stopped gracefully.
                error!("{err:#}: exiting");
                tokens.first.cancel();
                tokens.second.cancel();
                return;
            }
            token.cancel();
        }
    });
    signals
}
