//! Pace: keeps a background pass (moving slices, rebuilding them, scrubbing
//! them) under a byte rate, so that clients keep their speed, and tells how
//! far it is. Every pass walks hashes in order, and hashes spread evenly, so
//! the last hash reached is the fraction done, and the time taken so far
//! gives the time left.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::hash::Hash;

/// A pass under way, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassProgress {
    /// Thousandths of the hash space walked.
    pub done_permille: u16,
    /// Bytes moved, rebuilt or verified so far.
    pub bytes: u64,
    /// Seconds left at the pace so far; `None` until it can tell.
    pub eta_secs: Option<u64>,
}

/// The bytes a pass has handled since it started, held to a rate.
#[derive(Debug)]
pub struct Pace {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
    /// The fraction of the hash space walked, and where this run of the
    /// pass began (past 0 when it takes up a pass a restart cut short).
    done: f64,
    began: f64,
}

impl Pace {
    pub fn new(bytes_per_sec: u64) -> Self // A
    {
        Pace { bytes_per_sec: bytes_per_sec.max(1), started: Instant::now(), bytes: 0, done: 0.0, began: 0.0 }
    }

    /// A pace for a pass taken up where it was cut short, past `reached`.
    pub fn resumed(bytes_per_sec: u64, reached: &Hash) -> Self // A
    {
        let mut pace = Pace::new(bytes_per_sec);
        pace.reached(reached);
        pace.began = pace.done;
        pace
    }

    /// The pass has walked every hash up to `hash`.
    pub fn reached(&mut self, hash: &Hash) // A
    {
        self.done = hash.prefix_u64() as f64 / (u64::MAX as f64 + 1.0);
    }

    pub fn progress(&self) -> PassProgress // A
    {
        let elapsed = self.started.elapsed().as_secs_f64();
        // Below a hundredth, the estimate is mostly noise.
        let walked = self.done - self.began;
        let eta_secs = (walked >= 0.01).then(|| (elapsed * (1.0 - self.done) / walked).ceil() as u64);
        PassProgress { done_permille: (self.done * 1000.0) as u16, bytes: self.bytes, eta_secs }
    }

    /// Count `bytes` as done, then sleep as long as the pass is ahead of
    /// its rate.
    pub async fn spent(&mut self, bytes: u64) // A
    {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(ahead).await;
        }
    }

    pub fn bytes(&self) -> u64 // A
    {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pass_ahead_of_its_rate_waits() // A
    {
        let mut pace = Pace::new(100_000);
        let started = Instant::now();
        pace.spent(5_000).await;
        pace.spent(15_000).await;
        // A lower bound only: sleeping is never shorter than asked.
        assert!(started.elapsed() >= Duration::from_millis(199), "20 kB at 100 kB/s took {:?}", started.elapsed());
        assert_eq!(pace.bytes(), 20_000);
    }

    #[tokio::test]
    async fn progress_is_the_share_of_hashes_walked() // A
    {
        let mut pace = Pace::new(1 << 30);
        assert_eq!(pace.progress().eta_secs, None);
        let mut quarter = [0u8; 32];
        quarter[0] = 0x40;
        pace.reached(&Hash(quarter));
        pace.spent(100).await;
        let progress = pace.progress();
        assert_eq!(progress.done_permille, 250);
        assert_eq!(progress.bytes, 100);
        assert!(progress.eta_secs.is_some());
    }
}
