//! The executor every background task runs on, and the shutdown signal servers obey.

use std::future::Future;
use std::sync::LazyLock;

use smol::channel::{Receiver, Sender};
use smol::{Executor, Task};

static EXECUTOR: LazyLock<Executor<'static>> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    for i in 0..threads {
        std::thread::Builder::new()
            .name(format!("napster-{i}"))
            .spawn(|| smol::block_on(EXECUTOR.run(smol::future::pending::<()>())))
            .expect("starting an executor thread");
    }
    Executor::new()
});

/// Run `future` in the background on napster's executor.
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    EXECUTOR.spawn(future)
}

/// Tells servers to stop; dropping it (or calling [`ShutdownTrigger::trigger`]) does so.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: Sender<()>,
}

/// The receiving side of a shutdown: cheap to clone, one per task that must stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: Receiver<()>,
}

/// A new trigger and the signal it controls.
pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = smol::channel::bounded(1);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Tell every holder of the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        self.tx.close();
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.tx.close();
    }
}

impl Shutdown {
    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        let _ = self.rx.recv().await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.rx.is_closed()
    }
}
