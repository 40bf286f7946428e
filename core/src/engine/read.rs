//! The read path: a blob's chunks (inline or in chunk lists) that overlap
//! the range, fetched and opened with read-ahead; a chunk held wholly here
//! is opened in one job, others from the k slices nearest at hand.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};

use super::calls::Query;
use super::{blocking, compute, join_errors, Engine, EngineError, EngineResult};
use crate::cluster::{ClusterView, GetChunk, GetChunkList, GetSlice, ShareLayout, Transport, TransportError};
use crate::hash::Hash;
use crate::keys::NodeKeys;
use crate::layout::Layout;
use crate::model::{Blob, Chunk, ChunkList, ChunkRef, NodeId, SealedSlice, SliceSeal};
use crate::placement;
use crate::seal;
use crate::store::LocalStore;

/// Part of a blob's chunk list, as a read walks it.
enum ChunkRun {
    Inline(Vec<ChunkRef>),
    Listed(Hash),
}

/// Read the k data slices of a chunk held by this node straight into one
/// buffer, shard i at i × shard_len (not zeroed first), with their nonces
/// and tags. `None` when any is missing or not the manifest's length, or
/// the manifest claims more than a chunk can hold.
fn gather_data_shards(store: &LocalStore, manifest: &Chunk) -> Option<(Vec<u8>, Vec<SliceSeal>)> // PA
{
    let k = manifest.erasure.data as usize;
    let shard_len = manifest.shard_len as usize;
    let total = k.checked_mul(shard_len)?;
    // A chunk is at most fastcdc's largest maximum; a manifest saying more
    // is damaged, and must not make us allocate what it says.
    if shard_len == 0 || total > fastcdc::v2020::MAXIMUM_MAX as usize + 4 * k || manifest.slices.len() < k {
        return None;
    }
    let mut stored: Vec<u8> = Vec::with_capacity(total);
    let mut seals = Vec::with_capacity(k);
    for (region, hash) in stored.spare_capacity_mut()[..total].chunks_exact_mut(shard_len).zip(&manifest.slices) {
        seals.push(store.read_slice_parts(hash, region).ok()??);
    }
    // SAFETY: read_slice_parts returned a seal for each of the k regions,
    // which it does only after filling its region completely.
    unsafe { stored.set_len(total) };
    Some((stored, seals))
}

/// Open a chunk held here from its slices read one at a time (a slice
/// missing or damaged in the gathered read): the data slices, then parity
/// too if they do not open. `None` when fewer than k slices are here.
fn open_slice_by_slice(store: &LocalStore, manifest: &Chunk, keys: &NodeKeys) -> EngineResult<Option<Vec<u8>>> // PA
{
    let k = manifest.erasure.data as usize;
    let read = |count: usize| -> Vec<Option<SealedSlice>> {
        let mut slices = vec![None; manifest.erasure.total()];
        for (index, hash) in manifest.slices.iter().enumerate().take(count) {
            if let Ok(Some(slice)) = store.get_slice(hash) {
                slices[index] = Some(slice).filter(|s| s.hash == *hash);
            }
        }
        slices
    };
    let slices = read(k);
    if slices.iter().flatten().count() < k {
        return Ok(None);
    }
    match seal::open_chunk(manifest, slices, keys) {
        // A damaged data slice: parity on this node may cover it.
        Err(error) if manifest.erasure.parity > 0 => {
            tracing::warn!(chunk = %manifest.id, %error, "local slices unusable, reading parity");
            Ok(Some(seal::open_chunk(manifest, read(manifest.erasure.total()), keys)?))
        }
        opened => Ok(Some(opened?)),
    }
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// A chunk list of a key's blob, from the first replica that has it intact.
    async fn fetch_chunk_list(&self, bucket: &str, key: &str, hash: &Hash) -> EngineResult<ChunkList> // PA
    {
        let query = Query::new(
            format!("chunk list {hash}"),
            self.object_replicas(bucket, key).all(),
            GetChunkList { hash: *hash },
        );
        let verified = |bytes: Option<Vec<u8>>| match ChunkList::decode_verified(hash, &bytes?) {
            Ok(list) => Some(list),
            Err(error) => {
                tracing::warn!(%error, "a replica holds a damaged chunk list; asking the next");
                None
            }
        };
        match self.ask_first(query, &verified).await? {
            Some(list) => Ok(list),
            None => Err(EngineError::NoReplica { what: format!("chunk list {hash} (not found)"), errors: Vec::new() }),
        }
    }

    /// The chunks of a blob that overlap `start..end`, in order, whether
    /// inline or in chunk lists.
    pub async fn chunks_in(&self, blob: &Blob, start: u64, end: u64) -> EngineResult<Vec<ChunkRef>> // PA
    {
        let mut out = blob.chunks[blob.chunks_overlapping(start, end)].to_vec();
        for list in blob.chunk_lists.iter().filter(|l| l.offset < end && l.offset + l.len > start) {
            let held = self.fetch_chunk_list(&blob.bucket, &blob.key, &list.hash).await?;
            out.extend(held.chunks.into_iter().filter(|c| c.offset < end && c.offset + c.len as u64 > start));
        }
        Ok(out)
    }

    /// Stream `range` of a blob's bytes (clamped to its size), fetching and
    /// opening only the chunks that overlap it, `read_ahead` at a time. The
    /// chunk lists of a large blob are fetched one at a time as the read
    /// reaches them.
    pub fn read(&self, blob: &Blob, range: Range<u64>) -> impl Stream<Item = EngineResult<Bytes>> + Send + 'static // PA
    {
        let end = range.end.min(blob.size);
        let start = range.start.min(end);
        let mut runs = vec![ChunkRun::Inline(blob.chunks[blob.chunks_overlapping(start, end)].to_vec())];
        runs.extend(
            blob.chunk_lists
                .iter()
                .filter(|l| l.offset < end && l.offset + l.len > start)
                .map(|l| ChunkRun::Listed(l.hash)),
        );
        let (bucket, key) = (blob.bucket.clone(), blob.key.clone());
        let lister = self.clone();
        let chunks = stream::iter(runs)
            .then(move |run| {
                let (engine, bucket, key) = (lister.clone(), bucket.clone(), key.clone());
                async move {
                    match run {
                        ChunkRun::Inline(chunks) => Ok(chunks),
                        ChunkRun::Listed(hash) => Ok(engine.fetch_chunk_list(&bucket, &key, &hash).await?.chunks),
                    }
                }
            })
            .map(move |run: EngineResult<Vec<ChunkRef>>| {
                let chunks: Vec<EngineResult<ChunkRef>> = match run {
                    Ok(chunks) => chunks
                        .into_iter()
                        .filter(|c| c.offset < end && c.offset + c.len as u64 > start)
                        .map(Ok)
                        .collect(),
                    Err(error) => vec![Err(error)],
                };
                stream::iter(chunks)
            })
            .flatten();
        let engine = self.clone();
        chunks
            .map(move |chunk| {
                let engine = engine.clone();
                async move {
                    let chunk = chunk?;
                    let permit = engine.read_permits.clone().acquire_owned().await;
                    let plain = engine.read_chunk(&chunk).await;
                    drop(permit);
                    let plain = plain?;
                    let from = start.saturating_sub(chunk.offset) as usize;
                    let to = (end - chunk.offset).min(chunk.len as u64) as usize;
                    Ok(Bytes::from(plain).slice(from..to))
                }
            })
            .buffered(self.config.read_ahead)
    }

    /// Fetch a chunk's slices (data slices first, parity only if needed) and
    /// open it.
    pub(super) async fn read_chunk(&self, chunk: &ChunkRef) -> EngineResult<Vec<u8>> // PA
    {
        let plain = match self.read_local_chunk(chunk.id).await? {
            Some(plain) => plain,
            None => self.fetch_and_open_chunk(chunk.id).await?,
        };
        if plain.len() != chunk.len as usize {
            return Err(EngineError::ChunkLength { chunk: chunk.id, expected: chunk.len, actual: plain.len() });
        }
        Ok(plain)
    }

    /// When this node holds a chunk's manifest and its k data slices, read
    /// and open them in one job on a CPU worker, so the slices are still in
    /// that core's cache when they are decrypted, and no request is made per
    /// slice. `None` when any of it is elsewhere or missing; the general path
    /// then takes over.
    async fn read_local_chunk(&self, id: Hash) -> EngineResult<Option<Vec<u8>>> // PA
    {
        let local = self.view.local_node();
        let Some(store) = self.transport.local_store(local) else { return Ok(None) };
        let layout = self.view.layout();
        if !layout.hash_replicas(&id).all().contains(&local) {
            return Ok(None);
        }
        let members = layout.placing_members();
        let keys = self.keys.clone();
        let (reader, opener) = (store.clone(), keys.clone());
        let opened = compute(move || {
            let manifest = match reader.get_chunk(&id) {
                Ok(Some(manifest)) if manifest.id == id => manifest,
                _ => return None,
            };
            let k = manifest.erasure.data as usize;
            let homes = placement::slice_homes(&id, manifest.slices.len(), &members);
            if manifest.slices.len() < k || (0..k).any(|i| homes.get(i) != Some(&local)) {
                return None;
            }
            let opened = gather_data_shards(&reader, &manifest).map(|(stored, seals)| {
                seal::open_gathered(&manifest, stored, &seals, &opener).inspect_err(
                    |error| tracing::warn!(chunk = %id, %error, "gathered slices unusable, opening one by one"),
                )
            });
            Some((manifest, opened))
        })
        .await?;
        let manifest = match opened {
            None => return Ok(None),
            Some((_, Some(Ok(plain)))) => return Ok(Some(plain)),
            Some((manifest, _)) => manifest,
        };
        blocking(move || open_slice_by_slice(&store, &manifest, &keys)).await?
    }

    /// The general read path: the manifest from the first replica that
    /// has one, then its slices. When that manifest's slices are out of
    /// reach, the next replica's manifest of another sealing: a node that
    /// was away while the chunk was freed and stored again keeps a manifest
    /// whose slices are gone.
    async fn fetch_and_open_chunk(&self, id: Hash) -> EngineResult<Vec<u8>> // PA
    {
        let mut tried: Vec<Vec<Hash>> = Vec::new();
        let mut unavailable = None;
        let mut errors = Vec::new();
        for node in self.chunk_replicas(&id).all() {
            let manifest = match self.transport.ask(node, GetChunk { id }).await {
                Ok(Some(manifest)) if manifest.id == id => manifest,
                Ok(_) => continue,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            if tried.contains(&manifest.slices) {
                continue;
            }
            tried.push(manifest.slices.clone());
            match self.open_with_manifest(manifest).await {
                Err(error @ EngineError::NoReplica { .. }) => {
                    tracing::warn!(chunk = %id, node = %node, %error, "a manifest's slices are out of reach");
                    unavailable = Some(error);
                }
                opened => return opened,
            }
        }
        match unavailable {
            Some(error) => Err(error),
            // No replica had it, though some did not answer: unavailable, not lost.
            None if !errors.is_empty() => {
                Err(EngineError::NoReplica { what: format!("manifest of chunk {id}"), errors })
            }
            None => Err(EngineError::ChunkNotFound(id)),
        }
    }

    /// Fetch k slices of a chunk from the nodes that hold them, parity only
    /// when data slices are missing, and open it. A slice that fails its
    /// authentication (its bytes rotted on a disk that no scrub has read
    /// yet) is left out and another one fetched in its place, up to the
    /// chunk's parity.
    async fn open_with_manifest(&self, manifest: Chunk) -> EngineResult<Vec<u8>> // PA
    {
        let id = manifest.id;
        let total = manifest.erasure.total();
        if manifest.slices.len() != total {
            let reason = format!("{} slices listed for {total} positions", manifest.slices.len());
            return Err(crate::seal::SealError::BadManifest { chunk: id, reason }.into());
        }
        let mut damaged = Vec::new();
        loop {
            let slices = self.fetch_slices(&manifest, &damaged).await?;
            let (opened, keys) = (manifest.clone(), self.keys.clone());
            match compute(move || seal::open_chunk(&opened, slices, &keys)).await? {
                Err(crate::seal::SealError::SliceAuthentication { index, .. })
                    if damaged.len() < manifest.erasure.parity as usize && !damaged.contains(&index) =>
                {
                    tracing::warn!(chunk = %id, index, "a slice failed its authentication; reading another in its place");
                    damaged.push(index);
                }
                opened => return Ok(opened?),
            }
        }
    }

    /// k slices of a chunk, none of the `damaged` positions: from their
    /// homes, data slices first, then from where a writer hands them off.
    async fn fetch_slices(&self, manifest: &Chunk, damaged: &[usize]) -> EngineResult<Vec<Option<SealedSlice>>> // PA
    {
        let id = manifest.id;
        let k = manifest.erasure.data as usize;
        let total = manifest.erasure.total();
        let layout = self.view.layout();
        let homes = placement::slice_homes(&id, total, &layout.placing_members());
        // Where else a slice may be: handed off, or not yet moved off a
        // node leaving.
        let others = layout.members(&layout.in_service());
        if homes.is_empty() {
            return Err(EngineError::NoReplica { what: format!("chunk {id} (no members)"), errors: Vec::new() });
        }
        let mut slices: Vec<Option<SealedSlice>> = vec![None; total];
        let mut errors = Vec::new();
        let mut have = 0;
        let mut next = 0;
        let usable: Vec<usize> = (0..total).filter(|index| !damaged.contains(index)).collect();
        while have < k && next < usable.len() {
            let batch: Vec<usize> = usable[next..].iter().copied().take(k - have).collect();
            next += batch.len();
            let fetches = batch.iter().map(|&index| {
                let node = homes[index];
                let hash = manifest.slices[index];
                let call = self.transport.ask(node, GetSlice { hash });
                async move { (index, node, call.await) }
            });
            for (index, node, result) in futures::future::join_all(fetches).await {
                match result {
                    Ok(Some(slice)) if slice.hash == manifest.slices[index] => {
                        slices[index] = Some(slice);
                        have += 1;
                    }
                    Ok(_) => errors.push(TransportError::Remote {
                        node,
                        message: format!("slice {index} of chunk {} missing", id),
                    }),
                    Err(error) => errors.push(error),
                }
            }
        }
        // Too few at home (nodes away, slices handed off): ask the other
        // nodes, in the order a writer hands slices off.
        for &index in &usable {
            if have >= k {
                break;
            }
            if slices[index].is_some() {
                continue;
            }
            let home = homes[index];
            let hash = manifest.slices[index];
            for node in placement::handoff_order(index, &homes, &others, |node| self.view.is_down(node))
                .into_iter()
                .filter(|n| *n != home)
            {
                if let Ok(Some(slice)) = self.transport.ask(node, GetSlice { hash }).await {
                    if slice.hash == hash {
                        slices[index] = Some(slice);
                        have += 1;
                        break;
                    }
                }
            }
        }
        if have < k {
            // A writer or a move pass that knew of a node joining before
            // this node did may have put slices there.
            for node in self.nodes_known_elsewhere(&layout).await {
                for &index in &usable {
                    if have >= k {
                        break;
                    }
                    let hash = manifest.slices[index];
                    if slices[index].is_none() {
                        if let Ok(Some(slice)) = self.transport.ask(node, GetSlice { hash }).await {
                            if slice.hash == hash {
                                slices[index] = Some(slice);
                                have += 1;
                            }
                        }
                    }
                }
            }
        }
        if have < k {
            // Too few slices within reach: the chunk is unavailable, not lost.
            return Err(EngineError::NoReplica { what: format!("{have} of the {k} slices of chunk {id}"), errors });
        }
        if !errors.is_empty() {
            tracing::warn!(chunk = %id, errors = %join_errors(&errors), "slices missing, reading parity");
        }
        Ok(slices)
    }

    /// The nodes in service that `layout` does not know of, as the layouts
    /// of the nodes it knows name them; this node's layout takes theirs in.
    async fn nodes_known_elsewhere(&self, layout: &Layout) -> Vec<NodeId> // PA
    {
        let local = self.view.local_node();
        let peers = layout.in_service().into_iter().filter(|node| *node != local && !self.view.is_down(*node));
        let asks = peers.map(|node| self.transport.ask(node, ShareLayout { layout: layout.clone() }));
        let mut merged = layout.clone();
        for answer in futures::future::join_all(asks).await.into_iter().flatten() {
            merged.merge(&answer);
        }
        let known = layout.in_service();
        let learned: Vec<NodeId> = merged.in_service().into_iter().filter(|node| !known.contains(node)).collect();
        if let (false, Some(store)) = (learned.is_empty(), self.transport.local_store(local)) {
            match blocking(move || store.merge_layout(&merged)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "layout learned while reading not stored"),
                Err(error) => tracing::warn!(%error, "layout learned while reading not stored"),
            }
        }
        learned
    }
}
