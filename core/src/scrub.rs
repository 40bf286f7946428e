//! Scrub: a slow pass over every slice a node stores, reading each back and
//! checking that its bytes still hash to the name it is stored under. A
//! damaged slice (rotten bits, a torn write, an unreadable sector) is set
//! aside: it counts as not held any more, so the chunk's repairer finds its
//! home lacking it and rebuilds it from the other slices
//! (`engine::repair`); its bytes stay on the disk, listed among the
//! damaged slices, and are not deleted (a chunk without parity has no
//! other copy, and a sound slice taken for damaged would not be lost). Every node scrubs
//! its own disk; no key is needed. The pass keeps to a byte rate, shows its
//! progress in status and records what it found. It notes how far it has
//! come after every page, so a node that stops during a scrub takes it up
//! where it was rather than from the start (a whole disk at the default
//! rate takes hours).

use std::sync::Arc;

use crate::hash::Hash;
use crate::pace::Pace;
use crate::store::{blocking, LocalStore, PassKind, ScrubProgress, ScrubSummary, SliceCheck, StoreResult};

/// Slices read per page.
const PAGE: usize = 64;

/// Scrub every slice stored here, at most `bytes_per_sec`, taking up the
/// scrub a stop cut short if there is one; records the result as the
/// node's last scrub and returns it.
pub async fn scrub_slices(store: Arc<LocalStore>, bytes_per_sec: u64) -> StoreResult<ScrubSummary> // PA
{
    let reader = store.clone();
    let resumed = blocking(move || reader.scrub_progress()).await?.unwrap_or_else(|error| {
        tracing::warn!(%error, "the note of the scrub under way is unreadable; scrubbing from the start");
        None
    });
    let mut pace = match &resumed {
        Some(progress) => {
            tracing::info!(checked = progress.slices_checked, "taking up the scrub a stop cut short");
            Pace::resumed(bytes_per_sec, &progress.reached)
        }
        None => Pace::new(bytes_per_sec),
    };
    store.set_pass(PassKind::Scrub, Some(pace.progress()));
    let walked = walk(&store, &mut pace, resumed).await;
    store.set_pass(PassKind::Scrub, None);
    let (slices_checked, slices_damaged) = walked?;
    let summary = ScrubSummary { finished_ms: crate::world::now_nanos() / 1_000_000, slices_checked, slices_damaged };
    let recorder = store.clone();
    blocking(move || recorder.record_scrub(&summary)).await??;
    tracing::info!(checked = slices_checked, damaged = slices_damaged, bytes = pace.bytes(), "scrub finished");
    Ok(summary)
}

/// Check every slice in hash order, after `resumed.reached` if given;
/// (slices checked, slices damaged), `resumed`'s included.
async fn walk(store: &Arc<LocalStore>, pace: &mut Pace, resumed: Option<ScrubProgress>) -> StoreResult<(u64, u64)> // PA
{
    let (mut checked, mut damaged) = resumed.map_or((0, 0), |p| (p.slices_checked, p.slices_damaged));
    let mut after: Option<Hash> = resumed.map(|p| p.reached);
    loop {
        let lister = store.clone();
        let page = blocking(move || lister.slices_stored_before(u64::MAX, after, PAGE)).await??;
        let Some(last) = page.last() else { return Ok((checked, damaged)) };
        let reached = last.0;
        after = Some(reached);
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
        let progress = ScrubProgress { reached, slices_checked: checked, slices_damaged: damaged };
        let noter = store.clone();
        blocking(move || noter.record_scrub_progress(&progress)).await??;
        store.set_pass(PassKind::Scrub, Some(pace.progress()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SealedSlice;
    use crate::store::Durability;

    fn stored_slices(store: &LocalStore, count: u8) -> Vec<Hash> // A
    {
        let chunk = Hash::of(b"chunk");
        let mut hashes: Vec<Hash> = (0..count)
            .map(|n| {
                let slice = SealedSlice::new([n; 12], vec![n; 1000]);
                store.put_slice(&slice, &chunk).unwrap();
                slice.hash
            })
            .collect();
        hashes.sort();
        hashes
    }

    fn rot(store: &LocalStore, hash: &Hash) // A
    {
        let mut slice = store.get_slice(hash).unwrap().unwrap();
        slice.payload[7] ^= 0x40;
        store.remove_slice(hash).unwrap();
        store.put_slice(&slice, &Hash::of(b"chunk")).unwrap();
    }

    #[tokio::test]
    async fn a_scrub_cut_short_is_taken_up_where_it_was() // A
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path(), Durability::Flush).unwrap());
        let slices = stored_slices(&store, 40);
        // A scrub stopped after the first 20 slices (in hash order), three
        // of which it had found damaged; since then one of those 20 and one
        // of the 20 after rotted.
        let reached = slices[19];
        store.record_scrub_progress(&ScrubProgress { reached, slices_checked: 20, slices_damaged: 3 }).unwrap();
        rot(&store, &slices[5]);
        rot(&store, &slices[30]);

        let summary = scrub_slices(store.clone(), u64::MAX).await.unwrap();
        assert_eq!((summary.slices_checked, summary.slices_damaged), (40, 4), "the 20 after the note, and the note's");
        assert!(matches!(store.check_slice(&slices[5]), SliceCheck::Damaged { .. }), "left for the next");
        assert_eq!(store.check_slice(&slices[30]), SliceCheck::Missing, "set aside");
        assert_eq!(store.scrub_progress().unwrap(), None, "a finished scrub is no longer under way");
        assert_eq!(store.last_scrub().unwrap(), Some(summary));

        // The next scrub starts from the start and finds the other one.
        let next = scrub_slices(store.clone(), u64::MAX).await.unwrap();
        assert_eq!((next.slices_checked, next.slices_damaged), (39, 1));
    }
}
