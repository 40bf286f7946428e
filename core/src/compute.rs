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

use std::sync::OnceLock;

use tokio::sync::oneshot;

/// Why a job gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("a CPU task panicked")]
    Panicked,
    #[error("a blocking task failed: {0}")]
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
