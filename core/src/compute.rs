//! The process's CPU workers: one thread per core, running the sealing and
//! opening of chunks in the order it was queued.
//!
//! On tokio's blocking pool every chunk in flight got a thread of its own, so
//! a read-ahead of eight chunks kept eight threads taking turns on two cores,
//! each evicting the others' chunks from the cache; the first chunk of the
//! stream finished no sooner than the eighth. With one worker per core the
//! oldest chunk runs first and keeps its core until done (reads of one node
//! measured 28% faster, writes 7%). Storing, which may wait on an fsync,
//! stays on the blocking pool. Reading a chunk's local slices runs on the
//! worker that decrypts them, while they are in its cache: a read that
//! misses the page cache holds that worker until the disk answers.
//!
//! This is also the one place the core's work leaves the async threads:
//! store work goes to tokio's blocking pool (`blocking`, `detach_blocking`)
//! and a pipeline's blocking loops run as a `Stage`. Inside a simulation
//! (`crate::simulation`) all of it runs in place, one thing after another,
//! so that a seed replays.

use std::sync::OnceLock;

use tokio::sync::oneshot;

/// Why a job gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("a CPU task panicked")]
    Panicked,
    /// The blocking pool's own words (the callers say what failed).
    #[error("{0}")]
    Blocking(String),
}

static WORKERS: OnceLock<Option<rayon_core::ThreadPool>> = OnceLock::new();

/// The shared workers, started on first use; `None` if no thread could be
/// started, and the blocking pool then does the work.
fn workers() -> Option<&'static rayon_core::ThreadPool> // A
{
    WORKERS
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            rayon_core::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|index| format!("ouroboros-cpu-{index}"))
                .panic_handler(|_| tracing::error!("a CPU task panicked; its caller gets an error"))
                .build()
                .inspect_err(|error| tracing::warn!(%error, "no CPU workers; sealing on the blocking pool"))
                .ok()
        })
        .as_ref()
}

/// Run CPU-bound `work` on a worker, behind the work queued before it.
pub async fn run<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, ComputeError> // A
{
    if deterministic() {
        return in_place(work);
    }
    let Some(workers) = workers() else {
        return tokio::task::spawn_blocking(work).await.map_err(|error| ComputeError::Blocking(error.to_string()));
    };
    let (done, result) = oneshot::channel();
    workers.spawn(move || {
        // The caller may have gone (a dropped request); nothing to tell it.
        let _ = done.send(work());
    });
    // A panic drops `done` unsent.
    result.await.map_err(|_| ComputeError::Panicked)
}

/// Run work that may wait on the disk (storing, which may fsync) on tokio's
/// blocking pool, off the async threads.
pub async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, ComputeError> // A
{
    if deterministic() {
        return in_place(work);
    }
    tokio::task::spawn_blocking(work).await.map_err(|error| ComputeError::Blocking(error.to_string()))
}

/// Start work that may wait on the disk on tokio's blocking pool and let it
/// finish on its own (a runtime shutting down still finishes it once begun).
pub fn detach_blocking(work: impl FnOnce() + Send + 'static) // A
{
    if deterministic() {
        tokio::spawn(async move {
            let _ = in_place(work);
        });
    } else {
        tokio::task::spawn_blocking(work);
    }
}

/// Run `work` here and now, a panic becoming an error as on a worker.
fn in_place<R>(work: impl FnOnce() -> R) -> Result<R, ComputeError> // A
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|_| ComputeError::Panicked)
}

/// Whether work runs in place, one thing after another, for a simulation
/// that replays from its seed (`simulation`); never in a server.
pub(crate) fn deterministic() -> bool // A
{
    #[cfg(feature = "simulation")]
    if crate::simulation::active() {
        return true;
    }
    false
}

/// A stage of a pipeline: a loop that blocks on the queue feeding it, on
/// tokio's blocking pool from the moment it is made. In a simulation it
/// waits instead until `finish`, and then runs to its end on a thread of
/// its own while the caller's thread waits: the caller must have queued
/// all its input and dropped every sender feeding it, and the queues it
/// sends on must hold all it sends, or `finish` never returns. Such a
/// thread is outside the simulation: a stage draws no secrets.
pub(crate) enum Stage<F, R> {
    Running(tokio::task::JoinHandle<R>),
    Waiting(F),
}

impl<F: FnOnce() -> R + Send + 'static, R: Send + 'static> Stage<F, R> {
    pub(crate) fn start(work: F) -> Self // A
    {
        if deterministic() {
            Stage::Waiting(work)
        } else {
            Stage::Running(tokio::task::spawn_blocking(work))
        }
    }

    /// The stage's result, once it has run to its end.
    pub(crate) async fn finish(self) -> Result<R, ComputeError> // A
    {
        match self {
            Stage::Running(task) => task.await.map_err(|error| ComputeError::Blocking(error.to_string())),
            // A thread of its own: blocking on a queue is refused on a runtime's thread.
            Stage::Waiting(work) => {
                std::thread::scope(|scope| scope.spawn(work).join()).map_err(|_| ComputeError::Panicked)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_and_a_panic_is_an_error() // A
    {
        assert_eq!(run(|| 6 * 7).await.unwrap(), 42);
        let panicked: Result<(), _> = run(|| panic!("boom")).await;
        assert!(matches!(panicked, Err(ComputeError::Panicked)));
        // The worker that panicked is still there for the next job.
        let many: Vec<usize> = futures::future::join_all((0..64).map(|i| run(move || i * 2)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(many, (0..64).map(|i| i * 2).collect::<Vec<_>>());
    }
}
