//! Deterministic runs, for the seeded fault simulation: on a thread that has
//! entered a simulation, the work that otherwise goes to other threads (the
//! CPU workers, tokio's blocking pool) runs in place, and the secrets and
//! nonces that are otherwise drawn from the operating system are drawn from
//! the simulation's seed. With the simulation's nodes on one single-threaded
//! runtime whose clock is paused, a seed then replays the same run, message
//! for message.
//!
//! Only the `simulation` cargo feature builds this, and only the core's own
//! tests turn it on; a server never enters a simulation, so its keys always
//! come from the operating system.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;

use rand::{RngCore, SeedableRng};

thread_local! {
    static SECRETS: RefCell<Option<rand::rngs::StdRng>> = const { RefCell::new(None) };
    static ENTERED: Cell<bool> = const { Cell::new(false) };
}

/// A simulation entered on this thread; leaving it (dropping this) puts the
/// thread back as it ran before. It stays on its thread (it is not `Send`).
#[must_use = "the simulation ends when this is dropped"]
pub struct Entered(PhantomData<*const ()>);

/// Enter a simulation on this thread, its secrets drawn from `seed`; one at
/// a time on a thread (entering again starts the secrets over, and the
/// first `Entered` dropped ends both).
pub fn enter(seed: u64) -> Entered // PA
{
    SECRETS.with(|secrets| *secrets.borrow_mut() = Some(rand::rngs::StdRng::seed_from_u64(seed)));
    crate::keys::forget_simulated_sender_key();
    ENTERED.with(|entered| entered.set(true));
    Entered(PhantomData)
}

impl Drop for Entered {
    fn drop(&mut self) // PA
    {
        SECRETS.with(|secrets| *secrets.borrow_mut() = None);
        crate::keys::forget_simulated_sender_key();
        ENTERED.with(|entered| entered.set(false));
    }
}

/// Whether this thread runs a simulation.
pub(crate) fn active() -> bool // A
{
    ENTERED.with(Cell::get)
}

/// Fill `bytes` from the simulation's seed; false (and `bytes` untouched)
/// on a thread that runs none.
pub(crate) fn fill_secret(bytes: &mut [u8]) -> bool // PA
{
    SECRETS.with(|secrets| match secrets.borrow_mut().as_mut() {
        Some(rng) => {
            rng.fill_bytes(bytes);
            true
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulation_repeats_its_secrets_and_ends_when_left() // A
    {
        let draw = |seed| {
            let _entered = enter(seed);
            let mut bytes = [0u8; 32];
            assert!(fill_secret(&mut bytes));
            assert!(active());
            bytes
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(!active());
        assert!(!fill_secret(&mut [0u8; 32]));
    }
}
