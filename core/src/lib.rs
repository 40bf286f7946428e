//! OuroborosDB's storage core: the data model and its versioned encodings,
//! chunking, sealing and key encapsulation, placement, the local fjall store,
//! and the distributed read/write engine written against transport traits.
//! No networking happens here.

pub mod anti_entropy;
pub mod chunker;
pub mod cluster;
pub mod codec;
pub mod compute;
pub mod engine;
pub mod handoff;
pub mod hash;
pub mod hints;
pub mod homing;
pub mod keys;
pub mod layout;
pub mod memory;
pub mod model;
pub mod pace;
pub mod placement;
pub mod scrub;
pub mod seal;
#[cfg(feature = "simulation")]
pub mod simulation;
pub mod slicelog;
pub mod steward;
pub mod store;
pub mod store_error;
pub mod sync;
pub mod world;

pub use engine::{
    AccessKeyEntry, BlobContent, BodyKind, BodyStream, BodyTap, ClusterAccessKeys, Engine, EngineConfig, EngineError,
    FailureClass, GcReport, Home, PartOf, PutRequest, StoredBlob, TableRow, WrittenBody, ACCESS_KEY_TABLE,
};
pub use hash::Hash;
pub use keys::{ClusterSecret, DataKeyPair, NodeKeys};
pub use model::{
    Blob, BlobKind, BucketRecord, Chunk, ChunkList, ChunkListRef, ChunkRef, Erasure, NodeId, ObjectSummary, PartLead,
    PartRecord, RowVersion, SealedSlice, UploadRecord, VersionEntry, Versioning, CHUNKS_PER_LIST, NULL_VERSION_ID,
};
pub use store::{ListStart, VersionStart};
pub use world::now_nanos;
