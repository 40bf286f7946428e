//! The small metadata tables: rows kept on the replicas of an object key
//! (multipart uploads and their parts), and bucket records, which every
//! node keeps whole and reads from its own copy. Rows are replaced and
//! deleted in place, so their writes wait for every replica.

use std::collections::BTreeMap;

use super::calls::{Query, Wait};
use super::{blocking, Engine, EngineResult, Home, TableRow};
use crate::cluster::{ClusterView, DeleteRow, GetRow, ListBuckets, PutBucket, PutRow, ScanRows, Transport};
use crate::codec;
use crate::model::{BucketRecord, Versioning};
use crate::store::Row;

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Set a row of a small metadata table on the replicas of `home`'s key.
    pub async fn put_row(&self, home: Home<'_>, row: TableRow) -> EngineResult<()> // PA
    {
        let TableRow { table, key, value, chunks } = row;
        let replicas = self.object_replicas(home.bucket, home.key);
        let query = Query::new(format!("row of table {table}"), replicas, PutRow { table, key, value, chunks });
        self.write_to(query, Wait::ForAll).await
    }

    /// A row from the first replica of `home` that has it.
    pub async fn get_row(&self, home: Home<'_>, table: u8, key: Vec<u8>) -> EngineResult<Option<Vec<u8>>> // PA
    {
        let replicas = self.object_replicas(home.bucket, home.key);
        self.ask_first(Query::new(format!("row of table {table}"), replicas, GetRow { table, key }), &|row| row).await
    }

    pub async fn delete_row(&self, home: Home<'_>, table: u8, key: Vec<u8>) -> EngineResult<()> // PA
    {
        let replicas = self.object_replicas(home.bucket, home.key);
        let query = Query::new(format!("row deletion in table {table}"), replicas, DeleteRow { table, key });
        self.write_to(query, Wait::ForAll).await
    }

    /// Up to `max` rows under `prefix` after `after`, merged from every
    /// member; every partition must have had a read quorum.
    pub async fn scan_rows(&self, table: u8, prefix: &[u8], after: &[u8], max: usize) -> EngineResult<Vec<Row>> // PA
    {
        let message = ScanRows { table, prefix: prefix.to_vec(), after: after.to_vec(), max };
        let answers = self.ask_partitions(format!("scan of table {table}"), message).await?;
        let merged: BTreeMap<Vec<u8>, Vec<u8>> = answers.into_iter().flatten().collect();
        Ok(merged.into_iter().take(max).collect())
    }

    /// Every node's view of the bucket registers, merged (newest wins).
    async fn bucket_records(&self) -> EngineResult<BTreeMap<String, BucketRecord>> // PA
    {
        let query = Query::new("bucket list", self.view.members(), ListBuckets {});
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
        let query = Query::new(format!("bucket {}", record.name), self.view.members(), PutBucket { bytes });
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
