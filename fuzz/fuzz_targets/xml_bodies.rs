//! The XML bodies the gateway acts on, parsed exactly as s3s parses them
//! for our operations: DeleteObjects, CompleteMultipartUpload,
//! PutBucketVersioning and CreateBucket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3s::dto::{CompletedMultipartUpload, CreateBucketConfiguration, Delete, VersioningConfiguration};
use s3s::xml::{Deserialize, Deserializer};

fn parse<T: for<'xml> Deserialize<'xml>>(bytes: &[u8]) -> Option<T> {
    let mut deserializer = Deserializer::new(bytes);
    let value = T::deserialize(&mut deserializer).ok()?;
    deserializer.expect_eof().ok()?;
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    let _ = parse::<Delete>(data);
    let _ = parse::<CompletedMultipartUpload>(data);
    let _ = parse::<VersioningConfiguration>(data);
    let _ = parse::<CreateBucketConfiguration>(data);
});
