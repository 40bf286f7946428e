//! The small metadata tables: rows kept on the replicas of an object key
//! (multipart uploads and their parts), and the registers every node keeps
//! whole and reads from its own copy: bucket records and access keys (their
//! secrets sealed to the data key). Rows are replaced and deleted in place,
//! so their writes wait for every replica.

use std::collections::BTreeMap;

use super::calls::{Query, Wait};
use super::EngineError;
use super::{blocking, Engine, EngineResult, Home, TableRow};
use crate::cluster::{ClusterView, DeleteRow, GetRow, ListBuckets, PutBucket, PutRow, ScanRows, Transport};
use crate::codec;
use crate::hash::Hash;
use crate::keys::{open_secret, seal_secret};
use crate::model::{AccessKeyRecord, BucketRecord, Versioning};
use crate::store::Row;

/// The table of access keys, which every node holds whole; tables of rows
/// kept by partition use other numbers.
pub const ACCESS_KEY_TABLE: u8 = 255;
/// Access keys asked of each node at once.
const ACCESS_KEY_PAGE: usize = 1000;

/// An access key in the clear, as a gateway authenticates with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyEntry {
    pub access_key_id: String,
    pub name: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub secret: String,
}

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

    /// Write an access key to every member, its secret sealed to the data
    /// key; a majority must take it.
    pub async fn put_access_key(&self, key: &AccessKeyEntry) -> EngineResult<()> // PA
    {
        let id = &key.access_key_id;
        let context = Hash::of(id.as_bytes());
        let secret = seal_secret(key.secret.as_bytes(), &context, &self.keys.recipients)
            .map_err(|_| EngineError::SealSecret { id: id.clone() })?;
        let record = AccessKeyRecord {
            access_key_id: id.clone(),
            name: key.name.clone(),
            created: key.created.clone(),
            updated: self.world.now_nanos(),
            secret,
        };
        let row = PutRow {
            table: ACCESS_KEY_TABLE,
            key: id.as_bytes().to_vec(),
            value: codec::encode(&record),
            chunks: Vec::new(),
        };
        self.write_to(Query::new(format!("access key {id}"), self.view.members(), row), Wait::ForAll).await
    }

    /// Bring this node's copy of the access keys up to date with what the
    /// reachable members hold (newest wins), and return the keys this node
    /// can open (none on a node without the data key).
    pub async fn sync_access_keys(&self) -> EngineResult<Vec<AccessKeyEntry>> // PA
    {
        let merged = self.access_key_records().await?;
        if let Some(store) = self.transport.local_store(self.view.local_node()) {
            let records = merged.clone();
            blocking(move || {
                records.iter().try_for_each(|record| {
                    let key = record.access_key_id.as_bytes();
                    let held = store.get_row(ACCESS_KEY_TABLE, key)?;
                    let held = held.and_then(|bytes| codec::decode::<AccessKeyRecord>(&bytes).ok());
                    if held.is_some_and(|held| !record.supersedes(&held)) {
                        return Ok(());
                    }
                    store.put_row(ACCESS_KEY_TABLE, key, &codec::encode(record), &[])
                })
            })
            .await??;
        }
        let mut opened = Vec::with_capacity(merged.len());
        for record in merged {
            let context = Hash::of(record.access_key_id.as_bytes());
            match open_secret(&record.secret, &context, &self.keys.data_pair).map(|s| String::from_utf8(s.to_vec())) {
                Ok(Ok(secret)) => opened.push(AccessKeyEntry {
                    access_key_id: record.access_key_id,
                    name: record.name,
                    created: record.created,
                    secret,
                }),
                Ok(Err(_)) => tracing::warn!(id = %record.access_key_id, "an access key's secret is not text"),
                Err(error) => tracing::warn!(id = %record.access_key_id, %error, "an access key does not open"),
            }
        }
        Ok(opened)
    }

    /// Every access key record the reachable members hold, newest of each.
    async fn access_key_records(&self) -> EngineResult<Vec<AccessKeyRecord>> // PA
    {
        let mut merged: BTreeMap<String, AccessKeyRecord> = BTreeMap::new();
        let mut after = Vec::new();
        loop {
            let scan = ScanRows { table: ACCESS_KEY_TABLE, prefix: Vec::new(), after, max: ACCESS_KEY_PAGE };
            let answers = self.ask_all(Query::new("access keys", self.view.members(), scan)).await?;
            // A full page may stop short of keys another node sent: this
            // round ends at the smallest last key of any full page.
            let cutoff = answers
                .iter()
                .filter(|(_, rows)| rows.len() == ACCESS_KEY_PAGE)
                .filter_map(|(_, rows)| rows.last().map(|(key, _)| key.clone()))
                .min();
            for (key, value) in answers.into_iter().flat_map(|(_, rows)| rows) {
                if cutoff.as_ref().is_some_and(|cutoff| key > *cutoff) {
                    continue;
                }
                match codec::decode::<AccessKeyRecord>(&value) {
                    Ok(record) => match merged.get(&record.access_key_id) {
                        Some(held) if !record.supersedes(held) => {}
                        _ => {
                            merged.insert(record.access_key_id.clone(), record);
                        }
                    },
                    Err(error) => tracing::warn!(%error, "a member holds a malformed access key record"),
                }
            }
            match cutoff {
                Some(cutoff) => after = cutoff,
                None => return Ok(merged.into_values().collect()),
            }
        }
    }
}
