//! Handing hints over: the metadata writes a replica missed while it was
//! unreachable, kept on this node (`crate::hints`), sent to it once it is
//! back. A hint leaves here only when its target stored it; a target gone
//! from the layout has its hints dropped, since its replacement takes the
//! partition from anti-entropy.

use super::{Engine, EngineResult};
use crate::cluster::{ClusterView, Transport, TransportError};
use crate::store::blocking;

/// Hints sent per target in one batch.
const BATCH: usize = 100;

/// What one hand-off pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffReport {
    /// Hints their targets stored.
    pub handed: u64,
    /// Hints kept for targets still unreachable.
    pub left: u64,
    /// Hints for nodes gone from the layout, and hints a target refused
    /// (it answered with an error: it would again).
    pub dropped: u64,
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Send every hint kept here to its target if it is in service and not
    /// seen down; a target that fails keeps the rest of its hints.
    pub async fn hand_off_hints(&self) -> EngineResult<HandoffReport> // PA
    {
        let mut report = HandoffReport::default();
        let Some(store) = self.transport.local_store(self.view.local_node()) else { return Ok(report) };
        let in_service = self.view.layout().in_service();
        for (target, count) in store.hints().targets() {
            if !in_service.contains(&target) {
                let store = store.clone();
                report.dropped += blocking(move || store.hints().drop_node(&target)).await??;
                continue;
            }
            if self.view.is_down(target) {
                report.left += count;
                continue;
            }
            let done_before = report.handed + report.dropped;
            'batches: loop {
                let store_ = store.clone();
                let batch = blocking(move || store_.hints().for_node(&target, BATCH)).await??;
                if batch.is_empty() {
                    break;
                }
                for (key, request) in batch {
                    match self.transport.call(target, request).await {
                        Ok(_) => report.handed += 1,
                        // Still away, or out of space: the rest wait too.
                        Err(error @ (TransportError::Unreachable { .. } | TransportError::StorageFull { .. })) => {
                            tracing::debug!(node = %target, %error, "hints not handed over yet");
                            break 'batches;
                        }
                        // Refused: it would be refused again; anti-entropy
                        // brings the partition level instead.
                        Err(error) => {
                            tracing::warn!(node = %target, %error, "a hint was refused and is dropped");
                            report.dropped += 1;
                        }
                    }
                    let store = store.clone();
                    blocking(move || store.hints().remove(&key)).await??;
                }
            }
            let done = report.handed + report.dropped - done_before;
            report.left += count.saturating_sub(done);
            if done > 0 {
                tracing::info!(node = %target, hints = done, "missed writes handed over");
            }
        }
        Ok(report)
    }
}
