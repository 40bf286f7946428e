//! The boundary between the engine and other nodes: the node-to-node
//! requests, the `Transport` that carries them, the `ClusterView` that says who
//! the members are, and the handler that answers requests from a local store.
//! Membership implements these over the network; `memory` implements them in
//! one process.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::codec::{self, Record, RecordKind};
use crate::hash::Hash;
use crate::model::{BucketRecord, Chunk, NodeId, ObjectSummary, SealedSlice};
use crate::store::{Freed, ListStart, LocalStore, Row, StoreError, VersionStart};

/// A request from one node to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    PutSlice {
        chunk: Hash,
        slice: SealedSlice,
    },
    /// Slices held by the receiver and stored before a time, with their chunks.
    SlicesStoredBefore {
        stored_before: u64,
        after: Option<Hash>,
        max: usize,
    },
    GetSlice(Hash),
    PutChunk(Chunk),
    GetChunk(Hash),
    /// The manifest, claimed for a write that deduplicates against it.
    ClaimChunk(Hash),
    /// Chunks held by the receiver and last claimed before a time.
    UnclaimedChunks {
        claimed_before: u64,
        after: Option<Hash>,
        max: usize,
    },
    /// Which of these chunks a blob or row held by the receiver references.
    Referenced(Vec<Hash>),
    FreeChunk {
        id: Hash,
        claimed_before: u64,
    },
    RemoveSlice(Hash),
    /// An encoded blob; the receiver verifies and indexes it.
    PutBlob(Vec<u8>),
    GetBlob(Hash),
    /// An encoded chunk list of a large blob, sent ahead of the blob.
    PutChunkList(Vec<u8>),
    GetChunkList(Hash),
    Heads {
        bucket: String,
        key: String,
    },
    ListKeys {
        bucket: String,
        prefix: String,
        start: ListStart,
        limit: usize,
    },
    ListVersions {
        bucket: String,
        prefix: String,
        start: VersionStart,
        limit: usize,
    },
    /// Forget a version for good; the receiver keeps a tombstone.
    ForgetBlob(Hash),
    /// The versions written on top of a version.
    Children(Hash),
    /// An encoded bucket record, kept if newer than the one held.
    PutBucket(Vec<u8>),
    ListBuckets,
    PutRow {
        table: u8,
        key: Vec<u8>,
        value: Vec<u8>,
        /// Chunks the row references, spared by garbage collection.
        chunks: Vec<Hash>,
    },
    GetRow {
        table: u8,
        key: Vec<u8>,
    },
    DeleteRow {
        table: u8,
        key: Vec<u8>,
    },
    ScanRows {
        table: u8,
        prefix: Vec<u8>,
        after: Vec<u8>,
        max: usize,
    },
    /// What the receiver stores, for `ouroboros status`. New variants go
    /// last: postcard numbers them in order.
    Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Stored,
    Slice(Option<SealedSlice>),
    Chunk(Option<Chunk>),
    /// An encoded blob, to be verified by the caller.
    Blob(Option<Vec<u8>>),
    /// An encoded chunk list, to be verified by the caller.
    ChunkList(Option<Vec<u8>>),
    Heads(Vec<ObjectSummary>),
    Hashes(Vec<Hash>),
    Freed(Freed),
    /// (slice hash, chunk id) pairs.
    SliceOwners(Vec<(Hash, Hash)>),
    Keys(Vec<ObjectSummary>),
    Buckets(Vec<BucketRecord>),
    Row(Option<Vec<u8>>),
    Rows(Vec<Row>),
    /// Live slices and their bytes.
    Usage {
        slices: u64,
        bytes: u64,
    },
}

/// Requests and responses cross the network in the record envelope, so a
/// node refuses a message of another format version by name.
impl Record for Request {
    const KIND: RecordKind = RecordKind::Request;
}

/// A response as it crosses the network: the answer, or why the remote
/// store could not give one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Answer(Response),
    Failed { storage_full: bool, message: String },
}

impl Record for Reply {
    const KIND: RecordKind = RecordKind::Response;
}

impl Reply {
    /// What the local store made of a request, to send back.
    pub fn of(result: Result<Response, StoreError>) -> Self // PA
    {
        match result {
            Ok(response) => Reply::Answer(response),
            Err(error) => {
                Reply::Failed { storage_full: crate::store::is_storage_full(&error), message: error.to_string() }
            }
        }
    }

    /// The reply as the caller of `node` sees it.
    pub fn into_result(self, node: NodeId) -> Result<Response, TransportError> // PA
    {
        match self {
            Reply::Answer(response) => Ok(response),
            Reply::Failed { storage_full: true, message } => Err(TransportError::StorageFull { node, message }),
            Reply::Failed { storage_full: false, message } => Err(TransportError::Remote { node, message }),
        }
    }
}

impl Response {
    /// The variant's name, for errors about unexpected answers.
    pub fn kind(&self) -> &'static str // A
    {
        match self {
            Response::Stored => "Stored",
            Response::Slice(_) => "Slice",
            Response::Chunk(_) => "Chunk",
            Response::Blob(_) => "Blob",
            Response::ChunkList(_) => "ChunkList",
            Response::Heads(_) => "Heads",
            Response::Hashes(_) => "Hashes",
            Response::Freed(_) => "Freed",
            Response::SliceOwners(_) => "SliceOwners",
            Response::Keys(_) => "Keys",
            Response::Buckets(_) => "Buckets",
            Response::Row(_) => "Row",
            Response::Rows(_) => "Rows",
            Response::Usage { .. } => "Usage",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("node {node:?} is unreachable: {cause}")]
    Unreachable { node: NodeId, cause: Unreachable },
    #[error("node {node:?} failed the request: {message}")]
    Remote { node: NodeId, message: String },
    #[error("node {node:?} has no space left: {message}")]
    StorageFull { node: NodeId, message: String },
    #[error("node {node:?} answered {got} to a {expected} request")]
    UnexpectedResponse { node: NodeId, expected: &'static str, got: &'static str },
}

/// Why a node could not be reached, as the caller found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error("the failure detector sees it down")]
    SeenDown,
    #[error("it gave no answer within the deadline")]
    TimedOut,
    #[error("the connection failed or closed")]
    Connection,
    #[error("it refused the handshake (another cluster secret?)")]
    Refused,
    #[error("this node knows no address for it")]
    Unknown,
    #[error("no node would take it")]
    NoTaker,
}

impl TransportError {
    /// A store's failure to answer, as the node that asked sees it.
    pub fn from_store(node: NodeId, error: &StoreError) -> Self // PA
    {
        let message = error.to_string();
        if crate::store::is_storage_full(error) {
            TransportError::StorageFull { node, message }
        } else {
            TransportError::Remote { node, message }
        }
    }
}

/// A request under way.
pub type Call = BoxFuture<'static, Result<Response, TransportError>>;

/// Carries requests to nodes, the local one included.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, node: NodeId, request: Request) -> Call;

    /// The store of `node` when it is up and lives in this process. The
    /// engine then reads and writes the slices of an all-local chunk in the
    /// same blocking task that seals or opens it, instead of one request
    /// (and one thread hop) per slice. `None` sends everything as requests.
    fn local_store(&self, _node: NodeId) -> Option<Arc<LocalStore>> // A
    {
        None
    }
}

/// Who is in the cluster. Placement is computed over `members`, which keeps
/// a node that is down but not yet declared gone.
pub trait ClusterView: Send + Sync + 'static {
    fn local_node(&self) -> NodeId;
    fn members(&self) -> Vec<NodeId>;

    /// Whether the failure detector sees `node` down now. Never moves
    /// placement; only lets a writer hand a slice off without waiting on
    /// a node known to be away.
    fn is_down(&self, _node: NodeId) -> bool // A
    {
        false
    }
}

/// Answer a request from this node's store. Blocking: run it off the async
/// threads.
pub fn handle_request(store: &LocalStore, request: Request) -> Result<Response, StoreError> // PA
{
    Ok(match request {
        Request::PutSlice { chunk, slice } => {
            store.put_slice(&slice, &chunk)?;
            Response::Stored
        }
        Request::GetSlice(hash) => Response::Slice(store.get_slice(&hash)?),
        Request::PutChunk(chunk) => {
            store.put_chunk(&chunk)?;
            Response::Stored
        }
        Request::GetChunk(id) => Response::Chunk(store.get_chunk(&id)?),
        Request::ClaimChunk(id) => Response::Chunk(store.claim_chunk(&id)?),
        Request::UnclaimedChunks { claimed_before, after, max } => {
            Response::Hashes(store.unclaimed_chunks(claimed_before, after, max)?)
        }
        Request::Referenced(ids) => Response::Hashes(store.referenced(&ids)?),
        Request::SlicesStoredBefore { stored_before, after, max } => {
            Response::SliceOwners(store.slices_stored_before(stored_before, after, max)?)
        }
        Request::FreeChunk { id, claimed_before } => Response::Freed(store.free_chunk(&id, claimed_before)?),
        Request::RemoveSlice(hash) => {
            store.remove_slice(&hash)?;
            Response::Stored
        }
        Request::PutBlob(bytes) => {
            store.put_blob(&bytes)?;
            Response::Stored
        }
        Request::GetBlob(hash) => Response::Blob(store.get_blob_bytes(&hash)?),
        Request::PutChunkList(bytes) => {
            store.put_chunk_list(&bytes)?;
            Response::Stored
        }
        Request::GetChunkList(hash) => Response::ChunkList(store.get_chunk_list_bytes(&hash)?),
        Request::Heads { bucket, key } => Response::Heads(store.heads(&bucket, &key)?),
        Request::ListKeys { bucket, prefix, start, limit } => {
            Response::Keys(store.list_keys(&bucket, &prefix, &start, limit)?)
        }
        Request::ListVersions { bucket, prefix, start, limit } => {
            Response::Keys(store.list_versions(&bucket, &prefix, &start, limit)?)
        }
        Request::Children(hash) => Response::Hashes(store.children(&hash)?),
        Request::ForgetBlob(hash) => {
            store.forget_blob(&hash)?;
            Response::Stored
        }
        Request::PutBucket(bytes) => {
            let record: BucketRecord = codec::decode(&bytes)
                .map_err(|source| StoreError::Bucket { name: "(from the wire)".into(), source })?;
            store.put_bucket(&record)?;
            Response::Stored
        }
        Request::ListBuckets => Response::Buckets(store.list_buckets()?),
        Request::PutRow { table, key, value, chunks } => {
            store.put_row(table, &key, &value, &chunks)?;
            Response::Stored
        }
        Request::GetRow { table, key } => Response::Row(store.get_row(table, &key)?),
        Request::DeleteRow { table, key } => {
            store.delete_row(table, &key)?;
            Response::Stored
        }
        Request::ScanRows { table, prefix, after, max } => {
            Response::Rows(store.scan_rows(table, &prefix, &after, max)?)
        }
        Request::Usage => {
            let (bytes, slices) = store.slice_usage()?;
            Response::Usage { slices: slices as u64, bytes }
        }
    })
}
