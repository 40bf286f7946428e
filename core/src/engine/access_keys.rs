//! Access keys in the cluster's metadata: a register every node keeps whole
//! (rows of `ACCESS_KEY_TABLE`), each key's secret sealed to the data key
//! so storage-only nodes keep the records but cannot open them. A deleted
//! key is a tombstone row, which wins over the key on every node.

use super::calls::{Query, Wait};
use super::tables::merge_rows;
use super::{blocking, Engine, EngineError, EngineResult};
use crate::cluster::{ClusterView, PutRow, ScanRows, Transport};
use crate::codec;
use crate::hash::Hash;
use crate::keys::{open_secret, seal_secret};
use crate::model::{AccessKeyRecord, RowVersion};
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

/// The cluster's access keys as a gateway takes them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterAccessKeys {
    /// Keys this node can open (none on a node without the data key).
    pub live: Vec<AccessKeyEntry>,
    /// Ids of deleted keys: refused everywhere, even when a node's keys
    /// file still lists them.
    pub deleted: Vec<String>,
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Write an access key to every member, its secret sealed to the data
    /// key; every reachable member takes it, and at least a majority.
    pub async fn put_access_key(&self, key: &AccessKeyEntry) -> EngineResult<()> // PA
    {
        let id = &key.access_key_id;
        let context = Hash::of(id.as_bytes());
        let secret = seal_secret(key.secret.as_bytes(), &context, &self.keys.recipients)
            .map_err(|_| EngineError::SealSecret { id: id.clone() })?;
        let updated = self.world.now_nanos();
        let record = AccessKeyRecord {
            access_key_id: id.clone(),
            name: key.name.clone(),
            created: key.created.clone(),
            updated,
            secret,
        };
        let version = RowVersion::live(updated, codec::encode(&record), Vec::new());
        self.write_access_key(id, version).await
    }

    /// Delete an access key on every member: a tombstone that outranks
    /// every version of the key the cluster holds.
    pub async fn delete_access_key(&self, id: &str) -> EngineResult<()> // PA
    {
        let held = self.access_key_rows().await?.into_iter().find(|(key, _)| key == id.as_bytes());
        let updated = self.world.now_nanos().max(held.map_or(0, |(_, version)| version.updated + 1));
        self.write_access_key(id, RowVersion::tombstone(updated)).await
    }

    async fn write_access_key(&self, id: &str, version: RowVersion) -> EngineResult<()> // PA
    {
        let row = PutRow { table: ACCESS_KEY_TABLE, key: id.as_bytes().to_vec(), version, partition: None };
        self.write_to(Query::new(format!("access key {id}"), self.every_node(), row), Wait::ForAll).await
    }

    /// Bring this node's copy of the access keys up to date with what the
    /// reachable members hold (newest wins, deletions included), and return
    /// the keys this node can open and the ids deleted.
    pub async fn sync_access_keys(&self) -> EngineResult<ClusterAccessKeys> // PA
    {
        let merged = self.access_key_rows().await?;
        if let Some(store) = self.transport.local_store(self.view.local_node()) {
            let rows = merged.clone();
            blocking(move || {
                rows.iter()
                    .try_for_each(|(key, version)| store.put_row(ACCESS_KEY_TABLE, key, version, None).map(|_| ()))
            })
            .await??;
        }
        let mut keys = ClusterAccessKeys::default();
        for (id, version) in merged {
            let id = String::from_utf8_lossy(&id).into_owned();
            let Some(value) = version.value else {
                keys.deleted.push(id);
                continue;
            };
            let record = match codec::decode::<AccessKeyRecord>(&value) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%id, %error, "a member holds a malformed access key record");
                    continue;
                }
            };
            let context = Hash::of(record.access_key_id.as_bytes());
            match open_secret(&record.secret, &context, &self.keys.data_pair).map(|s| String::from_utf8(s.to_vec())) {
                Ok(Ok(secret)) => keys.live.push(AccessKeyEntry {
                    access_key_id: record.access_key_id,
                    name: record.name,
                    created: record.created,
                    secret,
                }),
                Ok(Err(_)) => tracing::warn!(%id, "an access key's secret is not text"),
                Err(error) => tracing::warn!(%id, %error, "an access key does not open"),
            }
        }
        Ok(keys)
    }

    /// Every access key row the reachable members hold, newest of each,
    /// tombstones included.
    async fn access_key_rows(&self) -> EngineResult<Vec<Row>> // PA
    {
        let mut out = Vec::new();
        let mut after = Vec::new();
        loop {
            let scan = ScanRows { table: ACCESS_KEY_TABLE, prefix: Vec::new(), after, max: ACCESS_KEY_PAGE };
            let answers = self.ask_all(Query::new("access keys", self.every_node(), scan)).await?;
            let (rows, more) = merge_rows(answers.into_iter().map(|(_, rows)| rows), ACCESS_KEY_PAGE);
            let last = rows.last().map(|(key, _)| key.clone());
            out.extend(rows);
            match (more, last) {
                (true, Some(last)) => after = last,
                _ => return Ok(out),
            }
        }
    }
}
