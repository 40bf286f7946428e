//! A node's background upkeep, every `Maintenance::interval`: incomplete
//! multipart uploads past their expiry are removed, chunks short of slices
//! at their homes are repaired, then chunks that nothing references and no
//! write claimed within the grace period are collected. A repair pass also
//! runs soon after the layout changes (a node marked gone, a join or drain
//! begun or finished), not only at the next interval.

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
    /// Chunks repair left short of a slice (a home down, a slice that
    /// could not be read in time).
    pub chunks_left_degraded: usize,
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
        Ok(repair) => {
            report.chunks_repaired = repair.chunks_degraded - repair.chunks_left_degraded;
            report.chunks_left_degraded = repair.chunks_left_degraded;
        }
        Err(error) => {
            tracing::warn!(%error, "repair failed");
            report.chunks_left_degraded = usize::MAX;
        }
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
/// A repair pass that left chunks short of a slice runs again this soon,
/// then twice as late each time it still leaves some, up to the interval:
/// a slice that could not be read in time (nodes busy rebuilding at once)
/// is not left for the next interval, and a home that stays down costs
/// few passes.
const REPAIR_RETRY: Duration = Duration::from_secs(10);

/// Run passes forever (the server aborts the task when it stops).
pub async fn run<T: Transport, V: ClusterView>(gateway: Gateway<T, V>, settings: Maintenance) // PA
{
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut checks = tokio::time::interval(LAYOUT_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut repaired_for = gateway.engine().layout().version();
    let mut retry = Retry::default();
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                repaired_for = gateway.engine().layout().version();
                let report = pass(&gateway, settings).await;
                tracing::debug!(?report, "maintenance pass done");
                retry.after_pass(report.chunks_left_degraded, settings.interval);
            }
            _ = checks.tick() => {
                let layout = gateway.engine().layout();
                if layout.version() == repaired_for && !retry.due() {
                    continue;
                }
                repaired_for = layout.version();
                match gateway.engine().repair_chunks().await {
                    Ok(repair) => {
                        tracing::debug!(?repair, "repair pass after a layout change or a pass that left chunks");
                        retry.after_pass(repair.chunks_left_degraded, settings.interval);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "repair failed");
                        retry.after_pass(usize::MAX, settings.interval);
                    }
                }
            }
        }
    }
}

/// When a repair pass that left chunks degraded runs again.
#[derive(Debug, Default)]
struct Retry {
    at: Option<tokio::time::Instant>,
    wait: Duration,
}

impl Retry {
    fn after_pass(&mut self, left_degraded: usize, interval: Duration) // A
    {
        if left_degraded == 0 {
            *self = Retry::default();
            return;
        }
        self.wait = if self.wait.is_zero() { REPAIR_RETRY } else { (self.wait * 2).min(interval) };
        self.at = Some(tokio::time::Instant::now() + self.wait);
    }

    fn due(&self) -> bool // A
    {
        self.at.is_some_and(|at| tokio::time::Instant::now() >= at)
    }
}
