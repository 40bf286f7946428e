//! A node's background upkeep, every `Maintenance::interval`: incomplete
//! multipart uploads past their expiry are removed, chunks short of slices
//! at their homes are repaired, then chunks that nothing references and no
//! write claimed within the grace period are collected. A repair pass also
//! runs soon after the layout changes and settles (a node marked gone, a
//! join or drain finished), not only at the next interval.

use std::time::Duration;

use ouroboros_core::cluster::{ClusterView, Transport};
use ouroboros_core::world::World;

use crate::config::Maintenance;
use crate::s3::Gateway;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub uploads_expired: usize,
    pub chunks_repaired: usize,
    pub chunks_freed: usize,
    pub slices_removed: usize,
}

fn nanos_before_now(world: &World, age: Duration) -> u64 // A
{
    world.now_nanos().saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX))
}

/// One maintenance pass; errors are logged and the pass goes on.
pub async fn pass<T: Transport, V: ClusterView>(gateway: &Gateway<T, V>, settings: Maintenance) -> PassReport // PA
{
    let mut report = PassReport::default();
    let world = gateway.engine().world().clone();
    match gateway.expire_uploads(nanos_before_now(&world, settings.upload_expiry)).await {
        Ok(expired) => report.uploads_expired = expired,
        Err(error) => tracing::warn!(%error, "expiring incomplete uploads failed"),
    }
    match gateway.engine().repair_chunks().await {
        Ok(repair) => report.chunks_repaired = repair.chunks_degraded - repair.chunks_left_degraded,
        Err(error) => tracing::warn!(%error, "repair failed"),
    }
    match gateway.engine().collect_garbage(nanos_before_now(&world, settings.gc_grace)).await {
        Ok(gc) => {
            report.chunks_freed = gc.chunks_freed;
            report.slices_removed = gc.slices_removed;
        }
        Err(error) => tracing::warn!(%error, "garbage collection failed"),
    }
    report
}

/// How often the layout is looked at for a change that calls for repair.
const LAYOUT_CHECK: Duration = Duration::from_secs(2);

/// Run passes forever (the server aborts the task when it stops).
pub async fn run<T: Transport, V: ClusterView>(gateway: Gateway<T, V>, settings: Maintenance) // PA
{
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut checks = tokio::time::interval(LAYOUT_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut repaired_for = gateway.engine().layout().version();
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                repaired_for = gateway.engine().layout().version();
                let report = pass(&gateway, settings).await;
                tracing::debug!(?report, "maintenance pass done");
            }
            _ = checks.tick() => {
                let layout = gateway.engine().layout();
                if layout.version() == repaired_for || layout.is_moving() {
                    continue;
                }
                repaired_for = layout.version();
                match gateway.engine().repair_chunks().await {
                    Ok(repair) => tracing::debug!(?repair, "repair pass after a layout change"),
                    Err(error) => tracing::warn!(%error, "repair failed"),
                }
            }
        }
    }
}
