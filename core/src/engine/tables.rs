//! The small metadata tables: rows kept on the replicas of an object key
//! (multipart uploads and their parts), and the bucket records every node
//! keeps whole and reads from its own copy. A row is a last-writer-wins
//! register with a tombstone for each delete, so its writes return at
//! quorum and its reads take the newest of a read quorum's answers.

use std::collections::BTreeMap;

use super::calls::{Query, Wait};
use super::{blocking, Engine, EngineResult, Home, TableRow};
use crate::cluster::{ClusterView, GetRow, ListBuckets, PutBucket, PutRow, ScanRows, Transport};
use crate::codec;
use crate::model::{BucketRecord, RowVersion, Versioning};
use crate::placement;
use crate::store::Row;

/// Rows asked of each node per round of a scan.
const ROW_PAGE: usize = 1000;

/// Merge the rows several nodes sent for one scan: the newest version of
/// each key. A full answer may have stopped short of keys another node
/// sent, so the merged page ends at the smallest last key of any full
/// answer; returns the page and whether more may follow.
pub(super) fn merge_rows(answers: impl IntoIterator<Item = Vec<Row>>, page: usize) -> (Vec<Row>, bool) // PA
{
    let mut merged: BTreeMap<Vec<u8>, RowVersion> = BTreeMap::new();
    let mut cutoff: Option<Vec<u8>> = None;
    for rows in answers {
        if rows.len() >= page {
            if let Some((last, _)) = rows.last() {
                cutoff = Some(cutoff.map_or_else(|| last.clone(), |held| held.min(last.clone())));
            }
        }
        for (key, version) in rows {
            match merged.get(&key) {
                Some(held) if !version.supersedes(held) => {}
                _ => {
                    merged.insert(key, version);
                }
            }
        }
    }
    let more = cutoff.is_some();
    let rows = merged.into_iter().take_while(|(key, _)| cutoff.as_ref().is_none_or(|c| key <= c)).collect();
    (rows, more)
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Set a row of a small metadata table on the replicas of `home`'s key.
    pub async fn put_row(&self, home: Home<'_>, row: TableRow) -> EngineResult<()> // PA
    {
        let TableRow { table, key, value, chunks } = row;
        let version = RowVersion::live(self.world.now_nanos(), value, chunks);
        self.write_row(home, table, key, version).await
    }

    async fn write_row(&self, home: Home<'_>, table: u8, key: Vec<u8>, version: RowVersion) -> EngineResult<()> // PA
    {
        let replicas = self.object_replicas(home.bucket, home.key);
        let partition = Some(placement::partition_of(home.bucket, home.key));
        let query =
            Query::to_replicas(format!("row of table {table}"), &replicas, PutRow { table, key, version, partition });
        self.write_to(query, Wait::ForQuorum).await
    }

    /// A row's value: the newest version among a read quorum of the
    /// replicas of `home`, so a read after an acknowledged write or
    /// delete sees it.
    pub async fn get_row(&self, home: Home<'_>, table: u8, key: Vec<u8>) -> EngineResult<Option<Vec<u8>>> // PA
    {
        Ok(self.row_version(home, table, key).await?.and_then(|version| version.value))
    }

    async fn row_version(&self, home: Home<'_>, table: u8, key: Vec<u8>) -> EngineResult<Option<RowVersion>> // PA
    {
        let replicas = self.object_replicas(home.bucket, home.key).holding;
        let needed = placement::read_quorum(replicas.len());
        let query = Query::new(format!("row of table {table}"), replicas, GetRow { table, key });
        let answers = self.ask_quorum(query, needed).await?;
        Ok(answers.into_iter().filter_map(|(_, version)| version).reduce(|newest, version| {
            if version.supersedes(&newest) {
                version
            } else {
                newest
            }
        }))
    }

    /// Delete a row: a tombstone newer than the version a read quorum
    /// holds, whatever the writers' clocks say.
    pub async fn delete_row(&self, home: Home<'_>, table: u8, key: Vec<u8>) -> EngineResult<()> // PA
    {
        let held = self.row_version(home, table, key.clone()).await?;
        let updated = self.world.now_nanos().max(held.map_or(0, |held| held.updated + 1));
        self.write_row(home, table, key, RowVersion::tombstone(updated)).await
    }

    /// Up to `max` live rows under `prefix` after `after`, merged from
    /// every member (newest version of each); every partition must have
    /// had a read quorum.
    pub async fn scan_rows(&self, table: u8, prefix: &[u8], after: &[u8], max: usize) -> ScannedRows // PA
    {
        let mut live = Vec::new();
        let mut after = after.to_vec();
        loop {
            let message = ScanRows { table, prefix: prefix.to_vec(), after: after.clone(), max: ROW_PAGE };
            let answers = self.ask_partitions(format!("scan of table {table}"), message).await?;
            let (rows, more) = merge_rows(answers.into_iter().map(|(_, rows)| rows), ROW_PAGE);
            let last = rows.last().map(|(key, _)| key.clone());
            live.extend(rows.into_iter().filter_map(|(key, version)| version.value.map(|value| (key, value))));
            if live.len() >= max {
                live.truncate(max);
                return Ok(live);
            }
            match (more, last) {
                (true, Some(last)) => after = last,
                _ => return Ok(live),
            }
        }
    }

    /// Every node's view of the bucket registers, merged (newest wins).
    async fn bucket_records(&self) -> EngineResult<BTreeMap<String, BucketRecord>> // PA
    {
        let query = Query::new("bucket list", self.every_node(), ListBuckets {});
        let mut merged: BTreeMap<String, BucketRecord> = BTreeMap::new();
        for record in self.ask_all(query).await?.into_iter().flat_map(|(_, records)| records) {
            match merged.get(&record.name) {
                Some(held) if !record.supersedes(held) => {}
                _ => {
                    merged.insert(record.name.clone(), record);
                }
            }
        }
        Ok(merged)
    }

    /// Live buckets, by name.
    pub async fn list_buckets(&self) -> EngineResult<Vec<BucketRecord>> // A
    {
        Ok(self.bucket_records().await?.into_values().filter(|b| !b.deleted).collect())
    }

    /// A live bucket's record, from this node's copy: every node keeps every
    /// bucket record, so the hot path asks no other node. A bucket this node
    /// has not heard of is asked of every member, and kept. A node that
    /// missed an update catches up at the next `sync_buckets`.
    pub async fn bucket(&self, name: &str) -> EngineResult<Option<BucketRecord>> // PA
    {
        let store = self.transport.local_store(self.view.local_node());
        if let Some(store) = store.clone() {
            let wanted = name.to_string();
            if let Some(record) = blocking(move || store.get_bucket(&wanted)).await?? {
                return Ok((!record.deleted).then_some(record));
            }
        }
        let record = self.bucket_records().await?.remove(name);
        if let (Some(record), Some(store)) = (record.clone(), store) {
            blocking(move || store.put_bucket(&record)).await??;
        }
        Ok(record.filter(|b| !b.deleted))
    }

    /// Bring this node's copy of every bucket record up to date with what
    /// the reachable members hold (newest wins); returns how many records
    /// were asked about. Run at start and every little while.
    pub async fn sync_buckets(&self) -> EngineResult<usize> // PA
    {
        let merged = self.bucket_records().await?;
        let count = merged.len();
        if let Some(store) = self.transport.local_store(self.view.local_node()) {
            blocking(move || merged.values().try_for_each(|record| store.put_bucket(record))).await??;
        }
        Ok(count)
    }

    /// Write a bucket record to every member; a majority must take it.
    pub async fn put_bucket_record(&self, record: &BucketRecord) -> EngineResult<()> // PA
    {
        let bytes = codec::encode(record);
        let query = Query::new(format!("bucket {}", record.name), self.every_node(), PutBucket { bytes });
        self.write_to(query, Wait::ForAll).await
    }

    /// Create a bucket; `false` if it already exists.
    pub async fn create_bucket(&self, name: &str) -> EngineResult<bool> // PA
    {
        let held = self.bucket_records().await?.remove(name);
        if held.as_ref().is_some_and(|b| !b.deleted) {
            return Ok(false);
        }
        let now = self.world.now_nanos().max(held.map_or(0, |b| b.updated + 1));
        let record = BucketRecord {
            name: name.to_string(),
            created: now,
            updated: now,
            deleted: false,
            versioning: Versioning::Unversioned,
        };
        self.put_bucket_record(&record).await?;
        Ok(true)
    }

    /// Set a bucket's versioning state (S3's PutBucketVersioning).
    pub async fn set_versioning(&self, record: BucketRecord, versioning: Versioning) -> EngineResult<()> // PA
    {
        let updated = self.world.now_nanos().max(record.updated + 1);
        self.put_bucket_record(&BucketRecord { versioning, updated, ..record }).await
    }

    /// Mark a bucket deleted. The caller checks that it is empty.
    pub async fn delete_bucket(&self, record: BucketRecord) -> EngineResult<()> // PA
    {
        let updated = self.world.now_nanos().max(record.updated + 1);
        self.put_bucket_record(&BucketRecord { deleted: true, updated, ..record }).await
    }
}

/// Live rows: key and value.
pub type ScannedRows = EngineResult<Vec<(Vec<u8>, Vec<u8>)>>;
