//! What the engine and the store take from the world outside: wall-clock
//! time and randomness, each behind one trait, so a test or a simulation
//! can run them on a clock it moves itself and a seeded random source.
//! Cryptographic randomness (keys, nonces) never comes from here: it is
//! the operating system's, except inside a simulation (`crate::simulation`,
//! a test-only build), where it comes from the simulation's seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng};

/// Wall-clock time, in nanoseconds since the Unix epoch (UTC).
pub trait Clock: Send + Sync + 'static {
    fn now_nanos(&self) -> u64;
}

/// Non-cryptographic randomness: identifiers, tie-breaks, jitter.
pub trait Random: Send + Sync + 'static {
    fn fill(&self, bytes: &mut [u8]);
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_nanos(&self) -> u64 // A
    {
        now_nanos()
    }
}

/// The system's wall-clock time in nanoseconds since the Unix epoch (UTC);
/// code that may run on a simulated clock asks its `World` instead.
pub fn now_nanos() -> u64 // A
{
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn starting_at(nanos: u64) -> Self // A
    {
        ManualClock(AtomicU64::new(nanos))
    }

    pub fn advance(&self, nanos: u64) // A
    {
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 // A
    {
        self.0.load(Ordering::SeqCst)
    }
}

/// The operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, bytes: &mut [u8]) // A
    {
        rand::rngs::OsRng.fill_bytes(bytes);
    }
}

/// A random source that repeats itself for the same seed.
#[derive(Debug)]
pub struct SeededRandom(Mutex<rand::rngs::StdRng>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self // A
    {
        SeededRandom(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }
}

impl Random for SeededRandom {
    fn fill(&self, bytes: &mut [u8]) // A
    {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).fill_bytes(bytes);
    }
}

/// The clock and the random source one node runs on.
#[derive(Clone)]
pub struct World {
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}

impl World {
    /// The system clock and the operating system's randomness.
    pub fn real() -> Self // A
    {
        World { clock: Arc::new(SystemClock), random: Arc::new(OsRandom) }
    }

    /// A clock that starts at `start_nanos` and moves when the caller
    /// advances it, and randomness drawn from `seed`.
    pub fn simulated(start_nanos: u64, seed: u64) -> (Self, Arc<ManualClock>) // A
    {
        let clock = Arc::new(ManualClock::starting_at(start_nanos));
        (World { clock: clock.clone(), random: Arc::new(SeededRandom::new(seed)) }, clock)
    }

    pub fn now_nanos(&self) -> u64 // A
    {
        self.clock.now_nanos()
    }

    pub fn random_bytes<const N: usize>(&self) -> [u8; N] // A
    {
        let mut bytes = [0; N];
        self.random.fill(&mut bytes);
        bytes
    }
}

impl Default for World {
    fn default() -> Self // A
    {
        World::real()
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result // A
    {
        f.write_str("World")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_world_repeats_itself_and_moves_only_when_told() // A
    {
        let (one, clock) = World::simulated(1_000, 7);
        let (two, _) = World::simulated(1_000, 7);
        assert_eq!(one.random_bytes::<16>(), two.random_bytes::<16>());
        assert_eq!(one.now_nanos(), 1_000);
        clock.advance(5);
        assert_eq!(one.now_nanos(), 1_005);
        assert_ne!(World::real().random_bytes::<16>(), World::real().random_bytes::<16>());
    }
}
