//! How the engine asks other nodes: typed messages to one replica set, with
//! a write quorum (waiting for every replica, or only for the quorum), a
//! read quorum, the first replica that has something, or every node. Each
//! call has the transport's deadline, and a node seen down fails at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use futures::FutureExt;

use super::{join_errors, Engine, EngineError, EngineResult};
use crate::cluster::{Asked, ClusterView, Forgotten, Message, PutChunk, Stored, Transport, TransportError};
use crate::hash::Hash;
use crate::hints::Hinted;
use crate::layout::{Layout, Replicas};
use crate::model::NodeId;
use crate::placement;
use crate::store::LocalStore;

/// When a write returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Once the quorum acknowledged; the other copies finish in the
    /// background instead of holding the client for the slowest node.
    /// For records replicas merge to one answer whatever they missed:
    /// slices, chunk manifests, chunk lists, blobs (content-addressed;
    /// heads read from a read quorum are settled by their parents),
    /// tombstones and row versions (anti-entropy brings them to a replica
    /// behind, and they win over what they replace).
    ForQuorum,
    /// Once every replica answered or failed: for removals a read merged
    /// from a replica still behind would undo (forgotten versions, null
    /// versions retiring the older one), and for the registers every node
    /// keeps whole and reads from its own copy (bucket records, access
    /// keys).
    ForAll,
}

/// Answers from the nodes that gave one.
pub(super) type Answers<A> = Vec<(NodeId, A)>;

/// A message for a set of nodes, and what it is for (in errors).
pub(super) struct Query<M> {
    what: String,
    nodes: Vec<NodeId>,
    /// The sets a write needs a write quorum in; empty: `nodes` is the one set.
    sets: Vec<Vec<NodeId>>,
    message: M,
}

impl<M> Query<M> {
    pub(super) fn new(what: impl Into<String>, nodes: Vec<NodeId>, message: M) -> Self // A
    {
        Query { what: what.into(), nodes, sets: Vec::new(), message }
    }

    /// A write to a partition's replicas: every replica of either set while
    /// the layout moves, with a write quorum in each.
    pub(super) fn to_replicas(what: impl Into<String>, replicas: &Replicas, message: M) -> Self // PA
    {
        Query { what: what.into(), nodes: replicas.all(), sets: replicas.write_sets(), message }
    }
}

/// How many acknowledgements a write needs, and when it returns.
pub(super) struct WriteQuorum {
    pub what: String,
    pub needed: usize,
    pub wait: Wait,
}

/// A message any node may be asked several times.
pub(super) trait Ask: Message + Clone {}
impl<M: Message + Clone> Ask for M {}

/// A message that stores or removes something.
pub(super) trait Write: Message<Answer = Stored> + Clone {}
impl<M: Message<Answer = Stored> + Clone> Write for M {}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// The metadata replicas of an object key, best first.
    pub(super) fn object_replicas(&self, bucket: &str, key: &str) -> Replicas // PA
    {
        self.replicas_of(placement::partition_of(bucket, key))
    }

    /// The replicas of a content-addressed record (chunk manifest), best first.
    pub(super) fn chunk_replicas(&self, hash: &Hash) -> Replicas // PA
    {
        self.replicas_of(placement::partition_of_hash(hash))
    }

    /// A partition's replicas, with the nodes seen down not waited on to
    /// hear of layout changes.
    fn replicas_of(&self, partition: u8) -> Replicas // PA
    {
        let layout = self.view.layout();
        let away: Vec<NodeId> = layout.in_service().into_iter().filter(|node| self.view.is_down(*node)).collect();
        layout.partition_replicas_with(partition, &away)
    }

    /// Every node not gone from the layout: those asked when all must
    /// answer, and those that keep the registers every node holds whole.
    pub(super) fn every_node(&self) -> Vec<NodeId> // PA
    {
        self.view.layout().in_service()
    }

    /// Ask this node's own store.
    pub(super) async fn ask_local<M: Message>(&self, message: M) -> EngineResult<M::Answer> // PA
    {
        Ok(self.transport.ask(self.view.local_node(), message).await?)
    }

    /// Send the query's message to each of its nodes and require a write
    /// quorum of acknowledgements in each of its sets.
    pub(super) async fn write_to<M: Write>(&self, query: Query<M>, wait: Wait) -> Acked // PA
    {
        let Query { what, nodes, sets, message } = query;
        let sets = if sets.is_empty() { vec![nodes.clone()] } else { sets };
        let needed: Vec<usize> = sets.iter().map(|set| placement::write_quorum(set.len())).collect();
        let hints = self.hint_keeper(message);
        let mut pending: FuturesUnordered<_> = self.send_each(&nodes, &hints.message).into_iter().collect();
        let mut acked = vec![0; sets.len()];
        let mut failed = vec![0; sets.len()];
        let mut errors = Vec::new();
        let reached = |acked: &[usize]| acked.iter().zip(&needed).all(|(acked, needed)| acked >= needed);
        let possible = |failed: &[usize]| {
            sets.iter().zip(failed).zip(&needed).all(|((set, failed), needed)| set.len() - failed >= *needed)
        };
        while (!reached(&acked) || wait == Wait::ForAll) && possible(&failed) {
            let Some((node, result)) = pending.next().await else { break };
            let counts = if result.is_ok() { &mut acked } else { &mut failed };
            for (count, set) in counts.iter_mut().zip(&sets) {
                *count += usize::from(set.contains(&node));
            }
            if let Err(error) = result {
                errors.push(error);
            }
        }
        if let Some(short) = (0..sets.len()).find(|set| acked[*set] < needed[*set]) {
            return Err(EngineError::Quorum { what, acked: acked[short], needed: needed[short], errors });
        }
        if !errors.is_empty() {
            tracing::warn!(%what, errors = %join_errors(&errors), "write acknowledged with nodes missing");
            hints.keep(&errors);
        }
        finish_in_background(what, pending.map(|(_, result)| result), move |missed| hints.keep(missed));
        Ok(())
    }

    /// What keeps, on this node, the writes of `message` that replicas
    /// missed for being unreachable (`hints`). Chunk manifests are never
    /// kept: a manifest handed over late may arrive after garbage
    /// collection freed its chunk, and a write deduplicating against it
    /// would then count it towards its claim while the slices are gone. A
    /// replica without a manifest is harmless: readers and repair ask the
    /// others, and anti-entropy, which keeps out freed sealings, brings it.
    fn hint_keeper<M: Write>(&self, message: M) -> HintKeeper<M> // PA
    {
        let store = match M::NAME == <PutChunk as Message>::NAME {
            true => None,
            false => self.transport.local_store(self.view.local_node()),
        };
        HintKeeper { store, message }
    }

    /// Require the quorum's acknowledgements of `calls`, and fail as soon as
    /// too many have failed for it.
    pub(super) async fn expect_acks(&self, quorum: WriteQuorum, calls: impl Iterator<Item = Acks>) -> Acked // PA
    {
        let WriteQuorum { what, needed, wait } = quorum;
        let mut pending: FuturesUnordered<Acks> = calls.collect();
        let total = pending.len();
        let mut errors = Vec::new();
        let mut acked = 0;
        while (acked < needed || wait == Wait::ForAll) && total - errors.len() >= needed {
            match pending.next().await {
                Some(Ok(Stored)) => acked += 1,
                Some(Err(error)) => errors.push(error),
                None => break,
            }
        }
        if acked < needed {
            return Err(EngineError::Quorum { what, acked, needed, errors });
        }
        if !errors.is_empty() {
            tracing::warn!(%what, acked, errors = %join_errors(&errors), "write acknowledged with nodes missing");
        }
        finish_in_background(what, pending, |_| {});
        Ok(())
    }

    /// Ask every node of the query at once; the answers of those that gave
    /// one. Fails only when none did.
    pub(super) async fn ask_all<M: Ask>(&self, query: Query<M>) -> Collected<M> // PA
    {
        let (answers, errors) = self.ask_each(&query).await;
        if answers.is_empty() {
            return Err(EngineError::NoReplica { what: query.what, errors });
        }
        if !errors.is_empty() {
            tracing::warn!(what = %query.what, errors = %join_errors(&errors), "some nodes did not answer");
        }
        Ok(answers)
    }

    /// As `ask_all`, but every node must answer.
    pub(super) async fn ask_every<M: Ask>(&self, query: Query<M>) -> Collected<M> // PA
    {
        match self.ask_each(&query).await {
            (answers, errors) if errors.is_empty() => Ok(answers),
            (_, errors) => Err(EngineError::NoReplica { what: query.what, errors }),
        }
    }

    /// Send `message` to each of `nodes` at once; each answer comes with
    /// its node.
    fn send_each<M: Ask>(&self, nodes: &[NodeId], message: &M) -> Vec<NodeCall<M::Answer>> // PA
    {
        let call = |node: NodeId| {
            let call = self.transport.ask(node, message.clone());
            async move { (node, call.await) }.boxed()
        };
        nodes.iter().map(|node| call(*node)).collect()
    }

    async fn ask_each<M: Ask>(&self, query: &Query<M>) -> AnswersAndErrors<M::Answer> // PA
    {
        let calls = self.send_each(&query.nodes, &query.message);
        let mut answers = Vec::with_capacity(query.nodes.len());
        let mut errors = Vec::new();
        for (node, result) in futures::future::join_all(calls).await {
            match result {
                Ok(answer) => answers.push((node, answer)),
                Err(error) => errors.push(error),
            }
        }
        (answers, errors)
    }

    /// Ask every node of the query and return as soon as `needed` answered
    /// (the transport finishes the other calls on its own); fails as soon
    /// as that cannot happen.
    pub(super) async fn ask_quorum<M: Ask>(&self, query: Query<M>, needed: usize) -> Collected<M> // PA
    {
        let Query { what, nodes, message, .. } = query;
        let mut pending: FuturesUnordered<_> = self.send_each(&nodes, &message).into_iter().collect();
        let mut answers = Vec::with_capacity(nodes.len());
        let mut errors = Vec::new();
        while answers.len() < needed && nodes.len() - errors.len() >= needed {
            match pending.next().await {
                Some((node, Ok(answer))) => answers.push((node, answer)),
                Some((_, Err(error))) => errors.push(error),
                None => break,
            }
        }
        if answers.len() < needed {
            return Err(EngineError::Quorum { what, acked: answers.len(), needed, errors });
        }
        Ok(answers)
    }

    /// Ask the query's nodes one after another until `found` makes
    /// something of an answer; `Ok(None)` when every node that answered has
    /// nothing.
    pub(super) async fn ask_first<M: Ask, R>(&self, query: Query<M>, found: Pick<'_, M, R>) -> Firsts<R> // PA
    {
        let Query { what, nodes, message, .. } = query;
        let mut errors = Vec::new();
        let mut answered = false;
        for node in nodes {
            match self.transport.ask(node, message.clone()).await {
                Ok(answer) => match found(answer) {
                    Some(found) => return Ok(Some(found)),
                    None => answered = true,
                },
                Err(error) => errors.push(error),
            }
        }
        if answered {
            Ok(None)
        } else {
            Err(EngineError::NoReplica { what, errors })
        }
    }

    /// Ask every member, and make sure every metadata partition had a read
    /// quorum among those that answered: a merged listing then holds every
    /// acknowledged write. Fails naming how many partitions were out of
    /// reach.
    pub(super) async fn ask_partitions<M: Ask>(&self, what: String, message: M) -> Collected<M> // PA
    {
        let layout = self.view.layout();
        let answers = self.ask_all(Query::new(what.clone(), layout.in_service(), message)).await?;
        let answered: BTreeSet<NodeId> = answers.iter().map(|(node, _)| *node).collect();
        let unreachable = partitions_without_quorum(&layout, &answered);
        if !unreachable.is_empty() {
            return Err(EngineError::PartitionsUnreachable { what, partitions: unreachable });
        }
        Ok(answers)
    }

    /// Which of `versions` any of `nodes` holds a tombstone for: a version
    /// forgotten, or a null version retired, that has not reached every
    /// replica yet. A failed ask drops nothing.
    pub(super) async fn forgotten_by_any(&self, nodes: Vec<NodeId>, versions: Vec<Hash>) -> BTreeSet<Hash> // PA
    {
        if versions.is_empty() {
            return BTreeSet::new();
        }
        match self.ask_all(Query::new("tombstones", nodes, Forgotten { hashes: versions })).await {
            Ok(answers) => answers.into_iter().flat_map(|(_, forgotten)| forgotten).collect(),
            Err(error) => {
                tracing::warn!(%error, "could not tell whether versions were forgotten");
                BTreeSet::new()
            }
        }
    }

    /// How many of `answered` replicate the partition of `bucket`/`key`.
    pub(super) fn replicas_answering(&self, bucket: &str, key: &str, answered: &BTreeSet<NodeId>) -> usize // PA
    {
        self.object_replicas(bucket, key).holding.iter().filter(|node| answered.contains(node)).count()
    }
}

/// The metadata partitions that fewer than a read quorum of their replicas
/// (those holding data) answered for: what a merged listing may miss.
pub(super) fn partitions_without_quorum(layout: &Layout, answered: &BTreeSet<NodeId>) -> Vec<u8> // PA
{
    if layout.in_service().iter().all(|node| answered.contains(node)) {
        return Vec::new();
    }
    (0..=u8::MAX)
        .filter(|partition| {
            let replicas = layout.partition_replicas(*partition).holding;
            let heard = replicas.iter().filter(|node| answered.contains(node)).count();
            heard < placement::read_quorum(replicas.len())
        })
        .collect()
}

/// Let the calls beyond a write's quorum finish on their own, log the
/// copies they failed to write, and hand those failures to `missed`.
fn finish_in_background(what: String, mut pending: impl PendingAcks, missed: impl MissedCopies) // PA
{
    tokio::spawn(async move {
        let mut errors = Vec::new();
        while let Some(result) = pending.next().await {
            if let Err(error) = result {
                errors.push(error);
            }
        }
        if !errors.is_empty() {
            tracing::warn!(%what, errors = %join_errors(&errors), "copies beyond the quorum not written");
            missed(&errors);
        }
    });
}

/// A write's message, and the store that keeps hints of it for replicas
/// that were unreachable; `None` where this node has no store of its own
/// or the message is never hinted.
struct HintKeeper<M> {
    store: Option<Arc<LocalStore>>,
    message: M,
}

impl<M: Write> HintKeeper<M> {
    /// Keep a hint for each node `errors` found unreachable.
    fn keep(&self, errors: &[TransportError]) // PA
    {
        let Some(store) = &self.store else { return };
        let targets: Vec<NodeId> = errors.iter().filter_map(TransportError::unreachable_node).collect();
        if !targets.is_empty() {
            keep_hints(store.clone(), targets, Hinted::Write(self.message.clone().into()));
        }
    }
}

/// Keep `hint` for each of `targets` in `store`, off the async threads (the
/// store writes). Best effort: a hint not kept leaves its work to
/// anti-entropy or repair.
pub(super) fn keep_hints(store: Arc<LocalStore>, targets: Vec<NodeId>, hint: Hinted) // PA
{
    crate::compute::detach_blocking(move || {
        for target in targets {
            match store.hints().add(target, &hint) {
                Ok(true) => {}
                Ok(false) => tracing::debug!(node = %target, "hints full: left to anti-entropy and repair"),
                Err(error) => tracing::warn!(node = %target, %error, "hint not kept"),
            }
        }
    });
}

/// What is told of the copies a write missed beyond its quorum.
trait MissedCopies: FnOnce(&[TransportError]) + Send + 'static {}
impl<F: FnOnce(&[TransportError]) + Send + 'static> MissedCopies for F {}

/// Acknowledgements still to come.
trait PendingAcks: Stream<Item = Result<Stored, TransportError>> + Send + Unpin + 'static {}
impl<S: Stream<Item = Result<Stored, TransportError>> + Send + Unpin + 'static> PendingAcks for S {}

/// A call under way, answering with its node.
type NodeCall<A> = futures::future::BoxFuture<'static, (NodeId, Result<A, TransportError>)>;

/// Answers from a set of nodes, or why too few came.
pub(super) type Collected<M> = EngineResult<Answers<<M as Message>::Answer>>;
type AnswersAndErrors<A> = (Answers<A>, Vec<TransportError>);
type Firsts<R> = EngineResult<Option<R>>;
/// What a reader makes of one node's answer; `None` asks the next node.
pub(super) type Pick<'a, M, R> = &'a (dyn Fn(<M as Message>::Answer) -> Option<R> + Sync);
/// A write's acknowledgement under way.
pub(super) type Acks = Asked<Stored>;
pub(super) type Acked = EngineResult<()>;
