//! Slice and location decoding, and opening a chunk whose manifest and slices
//! come from a peer that may lie. A storage node knows the public data key,
//! so it can forge a chunk that authenticates: the manifest's lengths and
//! codec are attacker-chosen even when every slice opens. Whatever opens
//! must be exactly the bytes that were sealed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ouroboros_core::keys::DataKeyPair;
use ouroboros_core::model::{Codec, Erasure};
use ouroboros_core::seal::{self, SealParams};
use ouroboros_core::{Hash, NodeKeys, SealedSlice};

fn keys() -> &'static NodeKeys {
    static KEYS: OnceLock<NodeKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let data_pair = DataKeyPair::from_secret_bytes([7; 32]);
        let recipients = vec![data_pair.public()];
        NodeKeys { dedup_key: [9; 32], data_pair, recipients }
    })
}

fn word(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    for (slot, byte) in word.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    u32::from_le_bytes(word)
}

fuzz_target!(|data: &[u8]| {
    let named = Hash::of(data);
    let _ = SealedSlice::decode(&named, data.to_vec());
    let _ = SealedSlice::decode_verified(&named, data.to_vec());
    let _ = ouroboros_core::slicelog::decode_location(data);

    // [k][m][missing mask][tamper][plain_len delta u32][stored_len delta u32][plaintext…]
    if data.len() < 12 {
        return;
    }
    let (head, plain) = data.split_at(12);
    let erasure = Erasure::new(head[0] % 8, head[1] % 5);
    let params = SealParams { erasure, zstd_level: 1 };
    let keys = keys();
    let id = Hash::keyed(&keys.dedup_key, plain);
    let Ok(sealed) = seal::seal_chunk(id, plain.to_vec(), params, &keys.recipients) else {
        assert_eq!(erasure.data, 0, "sealing failed for a valid coding");
        return;
    };
    let mut manifest = sealed.manifest;
    let tamper = head[3];
    if tamper & 1 != 0 {
        manifest.plain_len = manifest.plain_len.wrapping_add(word(&head[4..8]));
    }
    if tamper & 2 != 0 {
        manifest.stored_len = manifest.stored_len.wrapping_add(word(&head[8..12]));
    }
    if tamper & 4 != 0 {
        manifest.codec = match manifest.codec {
            Codec::Stored => Codec::Zstd,
            Codec::Zstd => Codec::Stored,
        };
    }
    let slices = sealed
        .slices
        .into_iter()
        .enumerate()
        .map(|(index, slice)| (head[2] >> (index % 8) & 1 == 0).then_some(slice))
        .collect::<Vec<_>>();
    let present = slices.iter().filter(|s| s.is_some()).count();
    match seal::open_chunk(&manifest, slices, keys) {
        Ok(opened) => assert_eq!(opened, plain, "a chunk opened to other bytes than were sealed"),
        Err(_) => assert!(
            tamper & 7 != 0 || present < erasure.data as usize,
            "an untampered chunk with {present} of {} slices did not open",
            erasure.total()
        ),
    }
});
