//! The boundary between the engine and other nodes: the node-to-node
//! messages and the answer each one names, the `Transport` that carries
//! them, the `ClusterView` that says who the members are, and the handler
//! that answers messages from a local store. Membership implements these
//! over the network; `memory` implements them in one process.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, Record, RecordKind};
use crate::hash::Hash;
use crate::hints::HeldSlice;
use crate::layout::Layout;
use crate::model::{BucketRecord, Chunk, NodeId, ObjectSummary, RowVersion, SealedSlice};
use crate::store::{ClaimAnswer, Freed, ListStart, LocalStore, Passes, Row, ScrubSummary, StoreError, VersionStart};
use crate::sync::{Entry, SyncItem};

/// A node-to-node message: its answer type is part of its type, so a reply
/// cannot be paired with the wrong request.
pub trait Message: Into<Request> + Send + 'static {
    type Answer: Send + 'static;
    /// The message's name, for errors about unexpected answers.
    const NAME: &'static str;
    /// This message's answer out of a response, or the response back.
    fn answer(response: Response) -> Result<Self::Answer, Response>;
}

/// How the receiving node answers a message from its store.
trait Handle: Message {
    fn handle(self, store: &LocalStore) -> Result<Self::Answer, StoreError>;
}

/// Declares each message with its answer type, and from the list the
/// `Request` and `Response` enums that cross the wire (one variant each, in
/// this order: postcard numbers variants, so new messages go last).
macro_rules! messages {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($field:ident : $ty:ty),* $(,)? } -> $answer:ty;
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Serialize, Deserialize)]
            pub struct $name { $(pub $field: $ty),* }

            impl Message for $name {
                type Answer = $answer;
                const NAME: &'static str = stringify!($name);
                fn answer(response: Response) -> Result<$answer, Response> // PA
                {
                    match response {
                        Response::$name(answer) => Ok(answer),
                        other => Err(other),
                    }
                }
            }

            impl From<$name> for Request {
                fn from(message: $name) -> Request // A
                {
                    Request::$name(message)
                }
            }
        )*

        /// A message as it crosses the network.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub enum Request { $($name($name)),* }

        /// An answer as it crosses the network: the variant of the message
        /// it answers.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub enum Response { $($name($answer)),* }

        impl Request {
            pub fn kind(&self) -> &'static str // A
            {
                match self { $(Request::$name(_) => stringify!($name)),* }
            }
        }

        impl Response {
            /// The message this answers, for errors about unexpected answers.
            pub fn kind(&self) -> &'static str // A
            {
                match self { $(Response::$name(_) => stringify!($name)),* }
            }
        }

        /// Answer a request from this node's store. Blocking: run it off the
        /// async threads.
        pub fn handle_request(store: &LocalStore, request: Request) -> Result<Response, StoreError> // PA
        {
            Ok(match request { $(Request::$name(message) => Response::$name(message.handle(store)?)),* })
        }
    };
}

/// The answer of a message that only stores or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored;

/// What a node stores, for `ouroboros status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreUsage {
    pub slices: u64,
    pub bytes: u64,
    /// Partitions its last anti-entropy round found out of step; `None`
    /// before its first round.
    pub partitions_unsynced: Option<u64>,
    /// Slices it holds that belong elsewhere and could not be moved at its
    /// last move pass, and their bytes; `None` before its first pass.
    pub slices_to_move: Option<u64>,
    pub bytes_to_move: Option<u64>,
    /// Chunks its last repair pass left short of slices; `None` before its
    /// first pass, and on a node that does not repair (storage-only).
    pub chunks_degraded: Option<u64>,
    /// Its moves, repairs and scrubs under way.
    pub passes: Passes,
    /// Its last finished scrub.
    pub last_scrub: Option<ScrubSummary>,
    /// Hints it keeps for other nodes that missed them: metadata writes,
    /// and slices it stored elsewhere than their home.
    pub hints: u64,
}

messages! {
    PutSlice { chunk: Hash, slice: SealedSlice } -> Stored;
    /// Slices held by the receiver and stored before a time, with their
    /// chunks: (slice hash, chunk id) pairs.
    SlicesStoredBefore { stored_before: u64, after: Option<Hash>, max: usize } -> Vec<(Hash, Hash)>;
    GetSlice { hash: Hash } -> Option<SealedSlice>;
    PutChunk { chunk: Chunk } -> Stored;
    GetChunk { id: Hash } -> Option<Chunk>;
    /// The manifest, claimed for a write that deduplicates against it.
    ClaimChunk { id: Hash } -> Box<ClaimAnswer>;
    /// Chunks held by the receiver and last claimed before a time.
    UnclaimedChunks { claimed_before: u64, after: Option<Hash>, max: usize } -> Vec<Hash>;
    /// Which of these chunks a blob or row held by the receiver references.
    Referenced { ids: Vec<Hash> } -> Vec<Hash>;
    /// Free one sealing of an unreferenced chunk (`LocalStore::free_chunk`).
    FreeChunk { id: Hash, claimed_before: u64, sealing: Hash } -> Freed;
    RemoveSlice { hash: Hash } -> Stored;
    /// An encoded blob; the receiver verifies and indexes it.
    PutBlob { bytes: Vec<u8> } -> Stored;
    /// An encoded blob, to be verified by the caller.
    GetBlob { hash: Hash } -> Option<Vec<u8>>;
    /// An encoded chunk list of a large blob, sent ahead of the blob.
    PutChunkList { bytes: Vec<u8> } -> Stored;
    /// An encoded chunk list, to be verified by the caller.
    GetChunkList { hash: Hash } -> Option<Vec<u8>>;
    Heads { bucket: String, key: String } -> Vec<ObjectSummary>;
    ListKeys { bucket: String, prefix: String, start: ListStart, limit: usize } -> Vec<ObjectSummary>;
    ListVersions { bucket: String, prefix: String, start: VersionStart, limit: usize } -> Vec<ObjectSummary>;
    /// Forget a version (of an object key in `partition`) for good; the
    /// receiver keeps a tombstone.
    ForgetBlob { hash: Hash, partition: u8 } -> Stored;
    /// The versions written on top of a version.
    Children { hash: Hash } -> Vec<Hash>;
    /// An encoded bucket record, kept if newer than the one held.
    PutBucket { bytes: Vec<u8> } -> Stored;
    ListBuckets {} -> Vec<BucketRecord>;
    /// A version of a row of a small table (a tombstone deletes it), kept
    /// if it supersedes the version held; `partition` is where a
    /// partitioned table's row lives, `None` for a register every node keeps.
    PutRow { table: u8, key: Vec<u8>, version: RowVersion, partition: Option<u8> } -> Stored;
    GetRow { table: u8, key: Vec<u8> } -> Option<RowVersion>;
    /// Rows with their versions, tombstones included.
    ScanRows { table: u8, prefix: Vec<u8>, after: Vec<u8>, max: usize } -> Vec<Row>;
    /// What the receiver stores, for `ouroboros status`.
    Usage {} -> Box<StoreUsage>;
    /// The roots of the receiver's sync trees of these partitions.
    SyncRoots { partitions: Vec<u8> } -> Vec<(u8, Hash)>;
    /// The digests of the 256 leaves of a partition's sync tree.
    SyncLeaves { partition: u8 } -> Vec<Hash>;
    /// The entries of one leaf of a partition's sync tree.
    SyncEntries { partition: u8, leaf: u8 } -> Vec<Entry>;
    /// The items behind these entries of a partition.
    /// The items behind these entries of a partition; manifests only when
    /// `manifests` (the asker places the partition).
    GetSyncItems { partition: u8, ids: Vec<Hash>, manifests: bool } -> Vec<SyncItem>;
    /// Items another replica holds, to merge with what the receiver holds.
    PutSyncItems { items: Vec<SyncItem> } -> Stored;
    /// Which of these versions the receiver holds a tombstone for.
    Forgotten { hashes: Vec<Hash> } -> Vec<Hash>;
    /// Partitions the receiver's last anti-entropy round found out of
    /// step; `None` before its first round.
    PartitionsUnsynced {} -> Option<u64>;
    /// The sender's layout, merged into the receiver's; the answer is the
    /// receiver's layout after the merge.
    ShareLayout { layout: Layout } -> Layout;
    /// A manifest moved off a node that no longer replicates it; kept only
    /// where none is held. Whether it was stored.
    OfferChunk { chunk: Chunk } -> bool;
    /// Whether the receiver holds each of these slices.
    HoldsSlices { hashes: Vec<Hash> } -> Vec<bool>;
    /// Whether the receiver holds a manifest of each of these chunks. No
    /// longer sent since `HoldsSealings` (version 8); kept so the messages
    /// after it keep their places in the format.
    HoldsChunks { ids: Vec<Hash> } -> Vec<bool>;
    /// Start a scrub of the receiver's slices now; false when one is
    /// under way already.
    StartScrub {} -> bool;
    /// The second step of a free (`LocalStore::settle_free`): publish the
    /// sealing's tombstone when the free reached its quorum, or withdraw
    /// the pending one of this attempt.
    /// `freed` is when the free reached its quorum, `None` when it did not.
    SettleFree { id: Hash, sealing: Hash, claimed_before: u64, freed: Option<u64> } -> Stored;
    /// A slice stored elsewhere than its home, `home`, because the home did
    /// not take it: the receiver keeps it with a hint for the home, so its
    /// own hand-off pass takes it there (`LocalStore::put_handed_off_slice`).
    /// `slices` are the chunk's slices in position order, `index` this one's.
    PutHandedOffSlice { chunk: Hash, slice: SealedSlice, slices: Vec<Hash>, index: u32, home: NodeId } -> Stored;
    /// Whether the receiver holds a manifest of each chunk of the sealing
    /// named (`sync::sealing_digest`): replicas may hold different sealings
    /// of one chunk, and each sealing needs its own repairer.
    HoldsSealings { sealings: Vec<(Hash, Hash)> } -> Vec<bool>;
}

/// Requests and responses cross the network in the record envelope, so a
/// node refuses a message of another format version by name.
impl Record for Request {
    const KIND: RecordKind = RecordKind::Request;
    /// 2: rows carry versions and tombstones. 3: the layout. 4: scrub, and
    /// the passes under way in `StoreUsage`. 5: the layout's places. 6:
    /// manifests and freed sealings in anti-entropy (`GetSyncItems` says
    /// whether manifests are wanted), the sealing a `FreeChunk` frees,
    /// `SettleFree`. 7: `PutHandedOffSlice` (added last: the messages of
    /// version 6 read as they were written). 8: `HoldsSealings` (likewise).
    const VERSION: u8 = 8;

    /// Version 4 differs in the layout `ShareLayout` carries, which then
    /// fails to read (it lacks places), and versions 4 and 5 in the fields
    /// of `FreeChunk` and `GetSyncItems`, which then fail too; every other
    /// request reads as it was written, hints kept in versions 4 to 7
    /// among them.
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, DecodeError> // PA
    {
        match version {
            4..=7 => codec::decode_body(Self::KIND, body),
            _ => Err(DecodeError::UnknownVersion { kind: Self::KIND, version, newest: Self::VERSION }),
        }
    }
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
    /// 5: the layout's places (as `Request`). 6: a free's answer may be
    /// `OtherSealing`, sync items may be manifests and freed sealings, and
    /// a claim says whether its manifest is unverified and which sealings
    /// were freed. 7: the answer of `PutHandedOffSlice` (as `Request`).
    /// 8: the answer of `HoldsSealings`.
    const VERSION: u8 = 8;

    /// Versions 4 and 5 differ in what a claim answers, which then fails
    /// to read, and version 4 in the layout a `ShareLayout` answer holds;
    /// versions 6 and 7 read as they were written.
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, DecodeError> // PA
    {
        match version {
            4..=7 => codec::decode_body(Self::KIND, body),
            _ => Err(DecodeError::UnknownVersion { kind: Self::KIND, version, newest: Self::VERSION }),
        }
    }
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
    #[error("it did not answer earlier in this pass")]
    EarlierInPass,
}

impl TransportError {
    /// The node that could not be reached, when that is what failed (as
    /// against a node that answered with an error).
    pub fn unreachable_node(&self) -> Option<NodeId> // A
    {
        match self {
            TransportError::Unreachable { node, .. } => Some(*node),
            _ => None,
        }
    }

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

/// A message under way, answered with its own answer type.
pub type Asked<A> = BoxFuture<'static, Result<A, TransportError>>;

/// Carries requests to nodes, the local one included.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, node: NodeId, request: Request) -> Call;

    /// Send `message` to `node` and take its answer, which must be the
    /// one the message names.
    fn ask<M: Message>(&self, node: NodeId, message: M) -> Asked<M::Answer> // PA
    {
        let call = self.call(node, message.into());
        async move {
            M::answer(call.await?).map_err(|other| TransportError::UnexpectedResponse {
                node,
                expected: M::NAME,
                got: other.kind(),
            })
        }
        .boxed()
    }

    /// The store of `node` when it is up and lives in this process. The
    /// engine then reads and writes the slices of an all-local chunk in the
    /// same blocking task that seals or opens it, instead of one request
    /// (and one thread hop) per slice. `None` sends everything as requests.
    fn local_store(&self, _node: NodeId) -> Option<Arc<LocalStore>> // A
    {
        None
    }
}

/// Who is in the cluster. Placement reads the layout, which keeps a node
/// that is down until it is declared gone; liveness only decides whom not
/// to wait for.
pub trait ClusterView: Send + Sync + 'static {
    fn local_node(&self) -> NodeId;

    /// The layout as this node holds it.
    fn layout(&self) -> Arc<Layout>;

    /// The nodes new data is placed on (active and joining).
    fn members(&self) -> Vec<NodeId> // PA
    {
        self.layout().placing()
    }

    /// Whether the failure detector sees `node` down now. Never moves
    /// placement; only lets a writer hand a slice off without waiting on
    /// a node known to be away.
    fn is_down(&self, _node: NodeId) -> bool // A
    {
        false
    }

    /// Whether `node` holds the data key and can open chunks (a gateway),
    /// so it can rebuild slices; storage-only nodes cannot.
    fn opens_chunks(&self, _node: NodeId) -> bool // A
    {
        true
    }

    /// How long the failure detector has seen `node` down without a break;
    /// `None` while it answers, or when this view cannot tell.
    fn down_for(&self, _node: NodeId) -> Option<std::time::Duration> // A
    {
        None
    }
}

impl Handle for PutSlice {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.put_slice(&self.slice, &self.chunk).map(|()| Stored)
    }
}

impl Handle for PutHandedOffSlice {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        let held = HeldSlice { chunk: self.chunk, slices: self.slices, index: self.index };
        store.put_handed_off_slice(&self.slice, held, self.home).map(|()| Stored)
    }
}

impl Handle for SlicesStoredBefore {
    fn handle(self, store: &LocalStore) -> Result<Vec<(Hash, Hash)>, StoreError> // PA
    {
        store.slices_stored_before(self.stored_before, self.after, self.max)
    }
}

impl Handle for GetSlice {
    fn handle(self, store: &LocalStore) -> Result<Option<SealedSlice>, StoreError> // PA
    {
        store.get_slice(&self.hash)
    }
}

impl Handle for PutChunk {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.put_chunk(&self.chunk).map(|()| Stored)
    }
}

impl Handle for GetChunk {
    fn handle(self, store: &LocalStore) -> Result<Option<Chunk>, StoreError> // PA
    {
        store.get_chunk(&self.id)
    }
}

impl Handle for ClaimChunk {
    fn handle(self, store: &LocalStore) -> Result<Box<ClaimAnswer>, StoreError> // PA
    {
        store.claim_chunk(&self.id).map(Box::new)
    }
}

impl Handle for UnclaimedChunks {
    fn handle(self, store: &LocalStore) -> Result<Vec<Hash>, StoreError> // PA
    {
        store.unclaimed_chunks(self.claimed_before, self.after, self.max)
    }
}

impl Handle for Referenced {
    fn handle(self, store: &LocalStore) -> Result<Vec<Hash>, StoreError> // PA
    {
        store.referenced(&self.ids)
    }
}

impl Handle for FreeChunk {
    fn handle(self, store: &LocalStore) -> Result<Freed, StoreError> // PA
    {
        store.free_chunk(&self.id, self.claimed_before, &self.sealing)
    }
}

impl Handle for RemoveSlice {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.remove_slice(&self.hash).map(|()| Stored)
    }
}

impl Handle for PutBlob {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.put_blob(&self.bytes).map(|_| Stored)
    }
}

impl Handle for GetBlob {
    fn handle(self, store: &LocalStore) -> Result<Option<Vec<u8>>, StoreError> // PA
    {
        store.get_blob_bytes(&self.hash)
    }
}

impl Handle for PutChunkList {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.put_chunk_list(&self.bytes).map(|_| Stored)
    }
}

impl Handle for GetChunkList {
    fn handle(self, store: &LocalStore) -> Result<Option<Vec<u8>>, StoreError> // PA
    {
        store.get_chunk_list_bytes(&self.hash)
    }
}

impl Handle for Heads {
    fn handle(self, store: &LocalStore) -> Result<Vec<ObjectSummary>, StoreError> // PA
    {
        store.heads(&self.bucket, &self.key)
    }
}

impl Handle for ListKeys {
    fn handle(self, store: &LocalStore) -> Result<Vec<ObjectSummary>, StoreError> // PA
    {
        store.list_keys(&self.bucket, &self.prefix, &self.start, self.limit)
    }
}

impl Handle for ListVersions {
    fn handle(self, store: &LocalStore) -> Result<Vec<ObjectSummary>, StoreError> // PA
    {
        store.list_versions(&self.bucket, &self.prefix, &self.start, self.limit)
    }
}

impl Handle for ForgetBlob {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.forget_blob(&self.hash, self.partition).map(|_| Stored)
    }
}

impl Handle for Children {
    fn handle(self, store: &LocalStore) -> Result<Vec<Hash>, StoreError> // PA
    {
        store.children(&self.hash)
    }
}

impl Handle for PutBucket {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        let record: BucketRecord = codec::decode(&self.bytes)
            .map_err(|source| StoreError::Bucket { name: "(from the wire)".into(), source })?;
        store.put_bucket(&record).map(|()| Stored)
    }
}

impl Handle for ListBuckets {
    fn handle(self, store: &LocalStore) -> Result<Vec<BucketRecord>, StoreError> // PA
    {
        store.list_buckets()
    }
}

impl Handle for PutRow {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.put_row(self.table, &self.key, &self.version, self.partition).map(|_| Stored)
    }
}

impl Handle for GetRow {
    fn handle(self, store: &LocalStore) -> Result<Option<RowVersion>, StoreError> // PA
    {
        store.get_row(self.table, &self.key)
    }
}

impl Handle for ScanRows {
    fn handle(self, store: &LocalStore) -> Result<Vec<Row>, StoreError> // PA
    {
        store.scan_rows(self.table, &self.prefix, &self.after, self.max)
    }
}

impl Handle for Usage {
    fn handle(self, store: &LocalStore) -> Result<Box<StoreUsage>, StoreError> // A
    {
        let (bytes, slices) = store.slice_usage()?;
        Ok(Box::new(StoreUsage {
            slices: slices as u64,
            bytes,
            partitions_unsynced: store.partitions_unsynced().map(|n| n as u64),
            slices_to_move: store.move_backlog().map(|(slices, _)| slices),
            bytes_to_move: store.move_backlog().map(|(_, bytes)| bytes),
            chunks_degraded: store.chunks_degraded(),
            passes: store.passes(),
            last_scrub: store.last_scrub()?,
            hints: store.hints().len(),
        }))
    }
}

impl Handle for SyncRoots {
    fn handle(self, store: &LocalStore) -> Result<Vec<(u8, Hash)>, StoreError> // PA
    {
        store.sync_roots(&self.partitions)
    }
}

impl Handle for SyncLeaves {
    fn handle(self, store: &LocalStore) -> Result<Vec<Hash>, StoreError> // PA
    {
        store.sync_leaves(self.partition)
    }
}

impl Handle for SyncEntries {
    fn handle(self, store: &LocalStore) -> Result<Vec<Entry>, StoreError> // PA
    {
        store.sync_entries(self.partition, self.leaf)
    }
}

impl Handle for GetSyncItems {
    fn handle(self, store: &LocalStore) -> Result<Vec<SyncItem>, StoreError> // PA
    {
        store.sync_items(self.partition, &self.ids, self.manifests)
    }
}

impl Handle for Forgotten {
    fn handle(self, store: &LocalStore) -> Result<Vec<Hash>, StoreError> // PA
    {
        let mut forgotten = Vec::new();
        for hash in self.hashes {
            if store.is_forgotten(&hash)? {
                forgotten.push(hash);
            }
        }
        Ok(forgotten)
    }
}

impl Handle for PartitionsUnsynced {
    fn handle(self, store: &LocalStore) -> Result<Option<u64>, StoreError> // PA
    {
        Ok(store.partitions_unsynced().map(|n| n as u64))
    }
}

impl Handle for ShareLayout {
    fn handle(self, store: &LocalStore) -> Result<Layout, StoreError> // PA
    {
        Ok((*store.merge_layout(&self.layout)?).clone())
    }
}

impl Handle for OfferChunk {
    fn handle(self, store: &LocalStore) -> Result<bool, StoreError> // PA
    {
        store.offer_chunk(&self.chunk)
    }
}

impl Handle for HoldsSlices {
    fn handle(self, store: &LocalStore) -> Result<Vec<bool>, StoreError> // PA
    {
        store.holds_slices(&self.hashes)
    }
}

impl Handle for SettleFree {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        store.settle_free(&self.id, &self.sealing, self.claimed_before, self.freed).map(|()| Stored)
    }
}

impl Handle for StartScrub {
    fn handle(self, store: &LocalStore) -> Result<bool, StoreError> // A
    {
        Ok(store.request_scrub())
    }
}

impl Handle for HoldsChunks {
    fn handle(self, store: &LocalStore) -> Result<Vec<bool>, StoreError> // PA
    {
        self.ids.iter().map(|id| store.holds_chunk(id)).collect()
    }
}

impl Handle for HoldsSealings {
    fn handle(self, store: &LocalStore) -> Result<Vec<bool>, StoreError> // PA
    {
        let held = |(id, sealing): &(Hash, Hash)| -> Result<bool, StoreError> {
            let manifest = store.get_chunk(id)?.filter(|manifest| manifest.id == *id);
            Ok(manifest.is_some_and(|manifest| crate::sync::sealing_digest(&manifest) == *sealing))
        };
        self.sealings.iter().map(held).collect()
    }
}

impl Handle for PutSyncItems {
    fn handle(self, store: &LocalStore) -> Result<Stored, StoreError> // PA
    {
        self.items.into_iter().try_for_each(|item| store.apply_sync_item(item)).map(|()| Stored)
    }
}
