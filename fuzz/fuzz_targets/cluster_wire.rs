//! What another node can send: a request or reply in the record envelope,
//! a gossip packet, and — for a packet that opened, i.e. from a member —
//! the SWIM message inside it, which foca parses. Nothing panics, and a
//! request that decodes re-encodes to itself.
#![no_main]

use std::net::SocketAddr;
use std::sync::Mutex;

use foca::{AccumulatingRuntime, Foca, PostcardCodec};
use foca_rand::rngs::SmallRng;
use foca_rand::SeedableRng;
use libfuzzer_sys::fuzz_target;
use ouroboros_core::cluster::{Reply, Request};
use ouroboros_core::codec;
use ouroboros_core::keys::Cipher;
use ouroboros_core::Hash;
use ouroboros_membership::gossip::open_packet;
use ouroboros_membership::{Peer, Role};

type PeerFoca = Foca<Peer, PostcardCodec, SmallRng, foca::NoCustomBroadcast>;

fn foca() -> &'static Mutex<PeerFoca> {
    static FOCA: std::sync::OnceLock<Mutex<PeerFoca>> = std::sync::OnceLock::new();
    FOCA.get_or_init(|| {
        let local = Peer {
            id: Hash::of(b"fuzz"),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            generation: 1,
            role: Role::Gateway,
        };
        let config = foca::Config::new_lan(std::num::NonZeroU32::MIN.saturating_add(7));
        Mutex::new(Foca::new(local, config, SmallRng::seed_from_u64(7), PostcardCodec))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = codec::decode::<Request>(data) {
        let again = codec::encode(&request);
        let decoded = codec::decode::<Request>(&again).expect("a re-encoded request decodes");
        assert_eq!(format!("{decoded:?}"), format!("{request:?}"), "a request changed in a round trip");
    }
    let _ = codec::decode::<Reply>(data);
    let cipher = Cipher::new(&[3; 32]);
    let _ = open_packet(&cipher, data);
    let mut foca = foca().lock().unwrap_or_else(|p| p.into_inner());
    let mut runtime = AccumulatingRuntime::new();
    let _ = foca.handle_data(data, &mut runtime);
});
