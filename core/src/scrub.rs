//! Scrub: a slow pass over every slice a node stores, reading each back and
//! checking that its bytes still hash to the name it is stored under. A
//! damaged slice (rotten bits, a torn write, an unreadable sector) is set
//! aside: it counts as not held any more, so the chunk's repairer finds its
//! home lacking it and rebuilds it from the other slices
//! (`engine::repair`); its bytes stay on the disk, listed among the
//! damaged slices, and are not deleted (a chunk without parity has no
//! other copy, and a sound slice taken for damaged would not be lost). Every node scrubs
//! its own disk; no key is needed. The pass keeps to a byte rate, shows its
//! progress in status and records what it found.

use std::sync::Arc;

use crate::hash::Hash;
use crate::pace::Pace;
use crate::store::{blocking, LocalStore, PassKind, ScrubSummary, SliceCheck, StoreResult};

/// Slices read per page.
const PAGE: usize = 64;

/// Scrub every slice stored here, at most `bytes_per_sec`; records the
/// result as the node's last scrub and returns it.
pub async fn scrub_slices(store: Arc<LocalStore>, bytes_per_sec: u64) -> StoreResult<ScrubSummary> // PA
{
    let mut pace = Pace::new(bytes_per_sec);
    store.set_pass(PassKind::Scrub, Some(pace.progress()));
    let walked = walk(&store, &mut pace).await;
    store.set_pass(PassKind::Scrub, None);
    let (slices_checked, slices_damaged) = walked?;
    let summary = ScrubSummary { finished_ms: crate::world::now_nanos() / 1_000_000, slices_checked, slices_damaged };
    let recorder = store.clone();
    blocking(move || recorder.record_scrub(&summary)).await??;
    tracing::info!(checked = slices_checked, damaged = slices_damaged, bytes = pace.bytes(), "scrub finished");
    Ok(summary)
}

/// Check every slice, in hash order; (slices checked, slices damaged).
async fn walk(store: &Arc<LocalStore>, pace: &mut Pace) -> StoreResult<(u64, u64)> // PA
{
    let (mut checked, mut damaged) = (0u64, 0u64);
    let mut after: Option<Hash> = None;
    loop {
        let lister = store.clone();
        let page = blocking(move || lister.slices_stored_before(u64::MAX, after, PAGE)).await??;
        let Some(last) = page.last() else { return Ok((checked, damaged)) };
        after = Some(last.0);
        for (slice, chunk) in page {
            let checker = store.clone();
            match blocking(move || checker.check_slice(&slice)).await? {
                SliceCheck::Sound { len } => {
                    checked += 1;
                    pace.spent(len).await;
                }
                SliceCheck::Missing => {}
                SliceCheck::Damaged { reason } => {
                    checked += 1;
                    damaged += 1;
                    tracing::warn!(%slice, %chunk, reason, "damaged slice set aside; repair rebuilds it from the others");
                    let keeper = store.clone();
                    blocking(move || keeper.set_aside_slice(&slice, &reason)).await??;
                }
            }
            pace.reached(&slice);
        }
        store.set_pass(PassKind::Scrub, Some(pace.progress()));
    }
}
