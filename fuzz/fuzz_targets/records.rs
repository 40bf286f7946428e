//! Every record kind decoded from arbitrary bytes, as a record read from disk
//! or sent by another node would be. Decoding never panics, and whatever
//! decodes re-encodes to a record that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ouroboros_core::codec::{self, Record};
use ouroboros_core::model::{
    AccessKeyRecord, Blob, BucketRecord, Chunk, ChunkList, PartRecord, RowVersion, UploadRecord,
};
use ouroboros_core::Hash;

fn round_trip<R: Record + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(record) = codec::decode::<R>(bytes) {
        let again = codec::encode(&record);
        match codec::decode::<R>(&again) {
            Ok(decoded) => assert_eq!(decoded, record, "{:?} record changed in a round trip", R::KIND),
            Err(error) => panic!("{:?} record re-encoded by this build does not decode: {error}", R::KIND),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Blob>(data);
    round_trip::<Chunk>(data);
    round_trip::<ChunkList>(data);
    round_trip::<BucketRecord>(data);
    round_trip::<AccessKeyRecord>(data);
    round_trip::<UploadRecord>(data);
    round_trip::<PartRecord>(data);
    round_trip::<RowVersion>(data);
    let named = Hash::of(data);
    let _ = Blob::decode_verified(&named, data);
    let _ = ChunkList::decode_verified(&named, data);
});
