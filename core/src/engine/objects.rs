//! Object metadata: blobs (the versions), each key's heads, the version
//! DAG and listings. Blobs are content-addressed, so a blob write returns at
//! its write quorum; reads of heads take a read quorum's union, settle heads
//! that another head supersedes, and repair the replicas that were behind.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::calls::{Answers, Query, Wait};
use super::{Engine, EngineResult, Listed, StoredBlob};
use crate::cluster::{Children, ClusterView, ForgetBlob, GetBlob, Heads, ListKeys, ListVersions, PutBlob, Transport};
use crate::hash::Hash;
use crate::model::{Blob, BlobKind, NodeId, ObjectSummary};
use crate::placement;
use crate::store::{ListStart, VersionStart};

/// How far read repair walks back from a head a replica lacks, looking for
/// the versions it lacks with it.
const REPAIR_DEPTH: usize = 16;
/// How long read repair waits for copies already on their way.
const REPAIR_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Write a blob to its metadata replicas; it answers once a write
    /// quorum has it, the other copies follow in the background. A null
    /// version retires the key's older null version on each replica as it
    /// arrives there; reads of heads and listings drop a version that any
    /// answering replica holds a tombstone for, so a replica still behind
    /// does not show the retired one.
    pub async fn put_blob(&self, blob: Blob) -> EngineResult<StoredBlob> // PA
    {
        let (hash, bytes) = blob.encode_with_hash();
        let query = Query::to_replicas(
            format!("blob {hash}"),
            &self.object_replicas(&blob.bucket, &blob.key),
            PutBlob { bytes },
        );
        self.write_to(query, Wait::ForQuorum).await?;
        tracing::debug!(%hash, bucket = %blob.bucket, key = %blob.key, size = blob.size, "blob stored");
        Ok(StoredBlob { hash, blob })
    }

    /// One version of a key, by hash, from the first replica that has it
    /// intact.
    pub async fn get_blob(&self, bucket: &str, key: &str, hash: &Hash) -> EngineResult<Option<Blob>> // PA
    {
        Ok(self.get_blob_bytes(bucket, key, hash).await?.map(|(blob, _)| blob))
    }

    /// A version and its encoding, as stored, from the first replica that
    /// has it intact.
    async fn get_blob_bytes(&self, bucket: &str, key: &str, hash: &Hash) -> EngineResult<Option<(Blob, Vec<u8>)>> // PA
    {
        let query =
            Query::new(format!("blob {hash}"), self.object_replicas(bucket, key).all(), GetBlob { hash: *hash });
        let verified = |bytes: Option<Vec<u8>>| {
            let bytes = bytes?;
            match Blob::decode_verified(hash, &bytes) {
                Ok(blob) => Some((blob, bytes)),
                Err(error) => {
                    tracing::warn!(%error, "a replica holds a damaged blob; asking the next");
                    None
                }
            }
        };
        self.ask_first(query, &verified).await
    }

    /// The current heads of a key, newest first: the union of a read
    /// quorum's answers, so a read after an acknowledged write sees it
    /// (R + W > N). Where the answers differ, a replica was behind: the
    /// heads another version was written on top of are dropped, and the
    /// replicas behind are sent what they missed.
    pub async fn heads(&self, bucket: &str, key: &str) -> EngineResult<Vec<ObjectSummary>> // PA
    {
        let replicas = self.object_replicas(bucket, key).holding;
        let needed = placement::read_quorum(replicas.len());
        let message = Heads { bucket: bucket.to_string(), key: key.to_string() };
        let answers =
            self.ask_quorum(Query::new(format!("heads of {bucket}/{key}"), replicas, message), needed).await?;
        let mut union: BTreeMap<Hash, ObjectSummary> = BTreeMap::new();
        for (_, heads) in &answers {
            for head in heads {
                union.entry(head.version).or_insert_with(|| head.clone());
            }
        }
        if answers.iter().any(|(_, heads)| heads.len() != union.len()) {
            self.settle_heads(bucket, key, &mut union, &answers).await;
        }
        let mut heads: Vec<ObjectSummary> = union.into_values().collect();
        heads.sort_by_key(|h| Reverse((h.entry.created, h.version)));
        Ok(heads)
    }

    /// Drop the heads that some answering replica holds a tombstone for or
    /// knows a child of, then repair, in the background, each replica that
    /// lacked a head.
    async fn settle_heads(&self, bucket: &str, key: &str, union: &mut HeadSet, answers: &Answers<Vec<ObjectSummary>>) // PA
    {
        let answered: Vec<NodeId> = answers.iter().map(|(node, _)| *node).collect();
        let disputed: Vec<Hash> = union
            .keys()
            .filter(|version| answers.iter().any(|(_, heads)| !heads.iter().any(|h| h.version == **version)))
            .copied()
            .collect();
        let forgotten = self.forgotten_by_any(answered.clone(), disputed.clone()).await;
        // A forgotten head leaves its parents as the heads in its place, as
        // forgetting it did on the replicas that know: they are candidates
        // too, settled like the others below.
        let mut candidates = disputed;
        let forgotten_heads: Vec<Hash> = forgotten.iter().filter(|v| union.contains_key(*v)).copied().collect();
        for version in &forgotten_heads {
            let parents = match self.get_blob(bucket, key, version).await {
                Ok(Some(blob)) => blob.parents,
                _ => Vec::new(),
            };
            for parent in parents {
                if union.contains_key(&parent) || forgotten.contains(&parent) {
                    continue;
                }
                if let Ok(Some(blob)) = self.get_blob(bucket, key, &parent).await {
                    union.insert(parent, ObjectSummary::of(parent, &blob));
                    candidates.push(parent);
                }
            }
        }
        union.retain(|version, _| !forgotten.contains(version));
        for version in candidates.into_iter().filter(|version| !forgotten.contains(version)) {
            let query = Query::new(format!("children of {version}"), answered.clone(), Children { hash: version });
            let children: Vec<Hash> = match self.ask_all(query).await {
                Ok(answers) => answers.into_iter().flat_map(|(_, children)| children).collect(),
                Err(error) => {
                    tracing::warn!(%version, %error, "could not tell whether a head is superseded");
                    continue;
                }
            };
            // A child only a replica behind still holds may be forgotten:
            // it supersedes nothing.
            let gone = self.forgotten_by_any(answered.clone(), children.clone()).await;
            if children.iter().any(|child| !gone.contains(child)) {
                union.remove(&version);
            }
        }
        for (node, heads) in answers {
            let held: HashSet<Hash> = heads.iter().map(|h| h.version).collect();
            let missing: Vec<Hash> = union.keys().filter(|v| !held.contains(v)).copied().collect();
            if !missing.is_empty() {
                let engine = self.clone();
                let (bucket, key, node) = (bucket.to_string(), key.to_string(), *node);
                tokio::spawn(async move { engine.repair_heads(&bucket, &key, node, missing, held).await });
            }
        }
    }

    /// Send `node` the versions it lacks: each missing head and the
    /// ancestors it misses with them, up to the heads it holds.
    async fn repair_heads(&self, bucket: &str, key: &str, node: NodeId, missing: Vec<Hash>, held: HashSet<Hash>) // PA
    {
        // Right after a write, the copy for the replica behind is usually
        // still on its way: look again before sending anything.
        tokio::time::sleep(REPAIR_DELAY).await;
        let heads = Heads { bucket: bucket.to_string(), key: key.to_string() };
        let Ok(now) = self.transport.ask(node, heads).await else { return };
        let missing: Vec<Hash> = missing.into_iter().filter(|v| !now.iter().any(|h| h.version == *v)).collect();
        let mut visited = HashSet::new();
        let mut to_send = Vec::new();
        let mut walk: Vec<(Hash, usize)> = missing.into_iter().map(|v| (v, 0)).collect();
        while let Some((version, depth)) = walk.pop() {
            if held.contains(&version) || depth > REPAIR_DEPTH || !visited.insert(version) {
                continue;
            }
            match self.get_blob_bytes(bucket, key, &version).await {
                Ok(Some((blob, bytes))) => {
                    walk.extend(blob.parents.iter().map(|parent| (*parent, depth + 1)));
                    to_send.push(bytes);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%version, %error, "read repair stopped");
                    return;
                }
            }
        }
        // Oldest first, so the replica sees parents before their children.
        for bytes in to_send.into_iter().rev() {
            if let Err(error) = self.transport.ask(node, PutBlob { bytes }).await {
                tracing::debug!(node = %node, %error, "read repair not delivered");
                return;
            }
        }
        tracing::info!(node = %node, %bucket, %key, "replica repaired on read");
    }

    /// The versions written on top of `version`: the union of a read
    /// quorum of the key's replicas.
    pub async fn children(&self, bucket: &str, key: &str, version: &Hash) -> EngineResult<Vec<Hash>> // PA
    {
        let replicas = self.object_replicas(bucket, key).holding;
        let needed = placement::read_quorum(replicas.len());
        let query = Query::new(format!("children of {version}"), replicas, Children { hash: *version });
        let mut children: Vec<Hash> =
            self.ask_quorum(query, needed).await?.into_iter().flat_map(|(_, children)| children).collect();
        children.sort();
        children.dedup();
        Ok(children)
    }

    /// Forget one version of a key on its replicas (S3's DELETE of a version
    /// id). Forgetting a version that does not exist succeeds.
    pub async fn forget_version(&self, bucket: &str, key: &str, version: &Hash) -> EngineResult<()> // PA
    {
        let what = format!("forgetting version {version} of {bucket}/{key}");
        let query = Query::to_replicas(
            what,
            &self.object_replicas(bucket, key),
            ForgetBlob { hash: *version, partition: placement::partition_of(bucket, key) },
        );
        // A replica behind takes the tombstone from anti-entropy; until
        // then, reads drop the version for the tombstones the others hold.
        self.write_to(query, Wait::ForQuorum).await?;
        tracing::debug!(%bucket, %key, %version, "version forgotten");
        Ok(())
    }

    /// The newest head of a key (by created time, then hash), as S3 reads see it.
    pub async fn latest(&self, bucket: &str, key: &str) -> EngineResult<Option<StoredBlob>> // PA
    {
        for head in self.heads(bucket, key).await? {
            if let Some(blob) = self.get_blob(bucket, key, &head.version).await? {
                return Ok(Some(StoredBlob { hash: head.version, blob }));
            }
        }
        Ok(None)
    }

    /// Every version of one key, newest first.
    pub async fn key_versions(&self, bucket: &str, key: &str) -> EngineResult<Vec<ObjectSummary>> // PA
    {
        let mut out = Vec::new();
        let mut start = VersionStart::Keys(ListStart::Beginning);
        loop {
            let (page, more) = self.list_versions(bucket, key, start, 1000).await?;
            let done = !more || page.iter().any(|v| v.key != key);
            let Some(last) = page.last() else { break };
            start = VersionStart::AfterVersion {
                key: last.key.clone(),
                created: last.entry.created,
                version: last.version,
            };
            out.extend(page.into_iter().filter(|v| v.key == key));
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` versions under `prefix`, keys in order and each key's
    /// versions newest first, merged from every member; and whether more
    /// may follow.
    pub async fn list_versions(&self, bucket: &str, prefix: &str, start: VersionStart, limit: usize) -> Listed // PA
    {
        let mut start = start;
        loop {
            let (page, more, cutoff) = self.version_page(bucket, prefix, start, limit).await?;
            // A page whose every entry was left out (forgotten elsewhere)
            // would read as the end to a caller: go on past it instead.
            match cutoff {
                Some((key, std::cmp::Reverse((created, version)))) if page.is_empty() => {
                    start = VersionStart::AfterVersion { key, created, version };
                }
                _ => return Ok((page, more)),
            }
        }
    }

    /// One round of `list_versions`: the page, whether more may follow, and
    /// where the answers were cut off.
    async fn version_page(&self, bucket: &str, prefix: &str, start: VersionStart, limit: usize) -> VersionPage // PA
    {
        let want = limit.saturating_add(1);
        let message = ListVersions { bucket: bucket.to_string(), prefix: prefix.to_string(), start, limit: want };
        let order = |s: &ObjectSummary| (s.key.clone(), std::cmp::Reverse((s.entry.created, s.version)));
        let mut merged: BTreeMap<_, ObjectSummary> = BTreeMap::new();
        // As in `list_objects`: a full answer may have stopped short of
        // versions another node sent, so the page ends at the smallest last
        // entry of any full answer.
        let mut cutoff = None;
        let answers = self.ask_partitions(format!("version listing of {bucket}"), message).await?;
        let answered: BTreeSet<NodeId> = answers.iter().map(|(node, _)| *node).collect();
        let mut reported: BTreeMap<Hash, usize> = BTreeMap::new();
        for (_, versions) in answers {
            if versions.len() == want {
                if let Some(last) = versions.last().map(order) {
                    cutoff = Some(cutoff.map_or(last.clone(), |held: (String, _)| held.min(last)));
                }
            }
            for version in versions {
                *reported.entry(version.version).or_default() += 1;
                merged.insert(order(&version), version);
            }
        }
        // A version some replica of its partition did not list may be one
        // the others forgot (or retired) and it has not heard of yet.
        let disputed: Vec<Hash> = merged
            .values()
            .filter(|v| {
                reported.get(&v.version).copied().unwrap_or(0) < self.replicas_answering(bucket, &v.key, &answered)
            })
            .map(|v| v.version)
            .collect();
        let forgotten = self.forgotten_by_any(answered.iter().copied().collect(), disputed).await;
        merged.retain(|_, version| !forgotten.contains(&version.version));
        let mut page: Vec<ObjectSummary> = merged
            .into_iter()
            .take_while(|(at, _)| cutoff.as_ref().is_none_or(|c| at <= c))
            .map(|(_, version)| version)
            .collect();
        let more = page.len() > limit || cutoff.is_some();
        page.truncate(limit);
        Ok((page, more, cutoff))
    }

    /// Up to `limit` live objects of `bucket` under `prefix` in key order from
    /// `start` (keys whose newest head is a delete marker are skipped), and
    /// whether more may follow.
    pub async fn list_objects(&self, bucket: &str, prefix: &str, start: ListStart, limit: usize) -> Listed // PA
    {
        let mut start = start;
        let mut live = Vec::new();
        // One more than asked tells whether more follow.
        let want = limit.saturating_add(1);
        loop {
            let (name, prefix) = (bucket.to_string(), prefix.to_string());
            let message = ListKeys { bucket: name, prefix, start: start.clone(), limit: want };
            // Every node's newest head of each key, newest first.
            let mut candidates: BTreeMap<String, Vec<ObjectSummary>> = BTreeMap::new();
            // A full answer may have stopped short of keys another node sent:
            // the page ends at the smallest last key of any full answer.
            let mut cutoff: Option<String> = None;
            let answers = self.ask_partitions(format!("listing of {bucket}"), message).await?;
            let answered: BTreeSet<NodeId> = answers.iter().map(|(node, _)| *node).collect();
            for (_, keys) in answers {
                if keys.len() == want {
                    let last = keys.last().map(|s| s.key.clone());
                    cutoff = match (cutoff, last) {
                        (Some(held), Some(last)) => Some(held.min(last)),
                        (held, last) => held.or(last),
                    };
                }
                for summary in keys {
                    candidates.entry(summary.key.clone()).or_default().push(summary);
                }
            }
            // Where the replicas of a key do not agree on its newest head, the
            // newest may be a version the others forgot.
            let mut disputed = Vec::new();
            for (key, heads) in &candidates {
                let agreed = heads.len() == self.replicas_answering(bucket, key, &answered)
                    && heads.iter().all(|h| h.version == heads[0].version);
                if !agreed {
                    disputed.extend(heads.iter().map(|h| h.version));
                }
            }
            let forgotten = self.forgotten_by_any(answered.iter().copied().collect(), disputed).await;
            let mut merged: BTreeMap<String, ObjectSummary> = BTreeMap::new();
            for (key, heads) in candidates {
                let newest = heads.into_iter().filter(|h| !forgotten.contains(&h.version)).reduce(|newest, head| {
                    if head.newer_than(&newest) {
                        head
                    } else {
                        newest
                    }
                });
                if let Some(newest) = newest {
                    merged.insert(key, newest);
                }
            }
            let page = merged.into_values().take_while(|s| cutoff.as_ref().is_none_or(|c| s.key <= *c));
            live.extend(page.filter(|s| s.entry.kind != BlobKind::DeleteMarker));
            if live.len() > limit {
                live.truncate(limit);
                return Ok((live, true));
            }
            // The next round starts past everything this one considered,
            // whatever was left out of the page.
            match cutoff {
                Some(cutoff) => start = ListStart::After(cutoff),
                None => return Ok((live, false)),
            }
        }
    }
}

/// A key's heads by version.
type HeadSet = BTreeMap<Hash, ObjectSummary>;

/// Where a version listing's answers were cut off: a key and a version's
/// place in the listing order (newest first).
type VersionCut = (String, std::cmp::Reverse<(u64, Hash)>);
/// A page of versions, whether more may follow, and where it was cut off.
type VersionPage = EngineResult<(Vec<ObjectSummary>, bool, Option<VersionCut>)>;
