//! [`InFlight`]: the work a layer still has in hand, for a graceful shutdown to wait for.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::telemetry::emit;

/// The claims one layer holds right now: handlers still running (also those that went
/// on after their client left, with `run_to_completion`) and responses still being
/// recorded (a completion retried after a store blip).
///
/// A process that exits while such work runs cuts a write in half, and its key stays in
/// flight until its lease ends, when a retry runs it again. On a graceful shutdown, stop
/// accepting requests, then wait for this to drain, within a deadline:
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::post, Router};
/// use tower_idempotency::{IdempotencyLayer, MemoryStore};
///
/// # async fn run() -> std::io::Result<()> {
/// let layer = IdempotencyLayer::new(MemoryStore::new());
/// let in_flight = layer.in_flight();
/// let app = Router::new().route("/orders", post(|| async { "ok" })).layer(layer);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap() })
///     .await?;
/// // Connections are closed; handlers that outlived their client may still run.
/// if !in_flight.wait(Duration::from_secs(30)).await {
///     eprintln!("{} claims still in flight at exit", in_flight.count());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct InFlight {
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    count: AtomicUsize,
    drained: Notify,
}

impl InFlight {
    /// How many claims the layer holds now.
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Waits until the layer holds no claim, or `deadline` passes. Returns whether it
    /// drained. New requests may still start meanwhile: stop accepting them first.
    pub async fn wait(&self, deadline: Duration) -> bool {
        let drained = async {
            loop {
                let notified = self.state.drained.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, drained).await.is_ok()
    }

    pub(crate) fn enter(&self) {
        self.state.count.fetch_add(1, Ordering::SeqCst);
        emit::claims_in_flight(1.0);
    }

    pub(crate) fn leave(&self) {
        emit::claims_in_flight(-1.0);
        if self.state.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state.drained.notify_waiters();
        }
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("count", &self.count())
            .finish()
    }
}
