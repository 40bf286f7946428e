//! S3 access keys: kept in `keys.toml` in the data directory, re-read when a
//! request names an unknown key and when the file changes (so `ouroboros
//! key create` and `key delete` work against a running server), plus the
//! root key from the environment when set. In a cluster, every node
//! publishes its file's keys to the cluster (secrets sealed to the data
//! key) and its deletions as tombstones, and accepts the keys of every
//! node; a key deleted anywhere is refused everywhere.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use ouroboros_core::cluster::{ClusterView, Transport};
use ouroboros_core::{AccessKeyEntry, ClusterAccessKeys, Engine};

use rand::Rng;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};
use serde::{Deserialize, Serialize};

pub const KEYS_FILE: &str = "keys.toml";
pub const ROOT_ID_ENV: &str = "OUROBOROS_ACCESS_KEY_ID";
pub const ROOT_SECRET_ENV: &str = "OUROBOROS_SECRET_ACCESS_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("access keys file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("access keys file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("a key named {0:?} already exists")]
    Exists(String),
    #[error("no key named {0:?} in this node's keys file, and it is not an access key id")]
    NoSuchKey(String),
    #[error("{0} and {1} must be set together")]
    HalfRoot(&'static str, &'static str),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessKey {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// RFC 3339, UTC.
    pub created: String,
}

/// A key deleted through this node: the cluster refuses it everywhere.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletedKey {
    pub access_key_id: String,
    /// RFC 3339, UTC.
    pub deleted: String,
}

/// What `keys.toml` holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeysFile {
    #[serde(default, rename = "key")]
    pub keys: Vec<AccessKey>,
    #[serde(default, rename = "deleted", skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<DeletedKey>,
}

fn keys_path(data_dir: &Path) -> PathBuf // A
{
    data_dir.join(KEYS_FILE)
}

/// Every key stored in the data directory.
pub fn load_keys(data_dir: &Path) -> Result<Vec<AccessKey>, KeyError> // PA
{
    Ok(load_keys_file(data_dir)?.keys)
}

/// The keys file: its keys and the keys deleted through this node.
pub fn load_keys_file(data_dir: &Path) -> Result<KeysFile, KeyError> // PA
{
    let path = keys_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str::<KeysFile>(&text).map_err(|source| KeyError::Parse { path, source: Box::new(source) })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

/// Write the keys file atomically, readable by the owner only.
fn store_keys(data_dir: &Path, file: &KeysFile) -> Result<(), KeyError> // PA
{
    let path = keys_path(data_dir);
    let io = |source| KeyError::Io { path: path.clone(), source };
    let text = toml::to_string_pretty(file).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = path.with_extension("toml.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)
}

fn now_rfc3339() -> String // A
{
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn random_string(len: usize, alphabet: &[u8]) -> String // PA
{
    let mut rng = rand::rngs::OsRng;
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// A new key pair in the AWS shape: a 20-character id, a 40-character secret.
pub fn generate_key(name: &str) -> AccessKey // PA
{
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    AccessKey {
        name: name.to_string(),
        access_key_id: format!("OB{}", random_string(18, ID)),
        secret_access_key: random_string(40, SECRET),
        created: now_rfc3339(),
    }
}

/// Create and store a named key.
pub fn create_key(data_dir: &Path, name: &str) -> Result<AccessKey, KeyError> // PA
{
    let mut file = load_keys_file(data_dir)?;
    if file.keys.iter().any(|k| k.name == name) {
        return Err(KeyError::Exists(name.to_string()));
    }
    let key = generate_key(name);
    file.keys.push(key.clone());
    store_keys(data_dir, &file)?;
    Ok(key)
}

/// Whether `text` has the shape of an access key id (AWS allows 16 to 128
/// word characters).
fn looks_like_key_id(text: &str) -> bool // A
{
    (16..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Delete a key by its name in this node's keys file or by its id (a key
/// made on another node): it leaves the file and is recorded as deleted,
/// and the running server refuses it and tells the cluster, which
/// refuses it everywhere. Returns the id deleted.
pub fn delete_key(data_dir: &Path, name_or_id: &str) -> Result<String, KeyError> // PA
{
    let mut file = load_keys_file(data_dir)?;
    let id = match file.keys.iter().find(|k| k.name == name_or_id || k.access_key_id == name_or_id) {
        Some(key) => key.access_key_id.clone(),
        None if looks_like_key_id(name_or_id) => name_or_id.to_string(),
        None => return Err(KeyError::NoSuchKey(name_or_id.to_string())),
    };
    file.keys.retain(|k| k.access_key_id != id);
    if !file.deleted.iter().any(|d| d.access_key_id == id) {
        file.deleted.push(DeletedKey { access_key_id: id.clone(), deleted: now_rfc3339() });
    }
    store_keys(data_dir, &file)?;
    Ok(id)
}

/// The root key from the environment, if both variables are set.
pub fn root_from_env() -> Result<Option<(String, String)>, KeyError> // PA
{
    let id = std::env::var(ROOT_ID_ENV).ok().filter(|v| !v.is_empty());
    let secret = std::env::var(ROOT_SECRET_ENV).ok().filter(|v| !v.is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        (None, None) => Ok(None),
        _ => Err(KeyError::HalfRoot(ROOT_ID_ENV, ROOT_SECRET_ENV)),
    }
}

/// Publishes the keys of this node's keys file, and its deletions, to the
/// cluster and returns every access key the cluster holds and every id it
/// deleted; `None` when the cluster could not be asked (the keys known so
/// far are kept).
pub type ClusterKeys = Arc<dyn Fn(KeysFile) -> BoxFuture<'static, Synced> + Send + Sync>;

/// The root key pair (id, secret), when the environment sets one.
type Root = Option<(String, String)>;
/// The cluster's keys, or `None` when it could not be asked.
type Synced = Option<ClusterAccessKeys>;

/// How often a request with an unknown key may make this node ask the
/// cluster, so bad keys cannot turn into a flood of node requests.
const CLUSTER_ASK_INTERVAL: Duration = Duration::from_secs(1);

/// What the server authenticates requests against: the root key, the keys
/// file, and in a cluster every node's keys. Clones share it.
#[derive(Clone)]
pub struct KeyRing(Arc<Ring>);

struct Ring {
    data_dir: PathBuf,
    root: Option<(String, String)>,
    known: RwLock<Known>,
    cluster: Option<ClusterKeys>,
    last_asked: Mutex<Option<Instant>>,
    /// When the keys file was last looked at for changes.
    last_checked: Mutex<Instant>,
}

/// The keys a ring knows besides the root key.
#[derive(Default)]
struct Known {
    /// The keys file's keys: id → secret.
    file: HashMap<String, String>,
    /// Ids the keys file records as deleted.
    file_deleted: HashSet<String>,
    /// The keys file's modification time when it was read.
    file_modified: Option<std::time::SystemTime>,
    /// Every node's keys, as the cluster last answered.
    cluster: HashMap<String, String>,
    /// Ids deleted anywhere in the cluster.
    cluster_deleted: HashSet<String>,
}

/// How often the request path looks at the keys file for changes.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster's keys, published from every node's keys file.
pub fn cluster_keys<T: Transport, V: ClusterView>(engine: Engine<T, V>) -> ClusterKeys // PA
{
    Arc::new(move |local| {
        let engine = engine.clone();
        async move { sync_keys(&engine, local).await }.boxed()
    })
}

async fn sync_keys<T: Transport, V: ClusterView>(engine: &Engine<T, V>, local: KeysFile) -> Synced // PA
{
    let mut held = match engine.sync_access_keys().await {
        Ok(held) => held,
        Err(error) => {
            tracing::warn!(%error, "access keys not brought up to date");
            return None;
        }
    };
    for gone in local.deleted {
        if held.deleted.contains(&gone.access_key_id) {
            continue;
        }
        match engine.delete_access_key(&gone.access_key_id).await {
            Ok(()) => {
                tracing::info!(id = %gone.access_key_id, "access key deletion published to the cluster");
                held.live.retain(|key| key.access_key_id != gone.access_key_id);
                held.deleted.push(gone.access_key_id);
            }
            Err(error) => tracing::warn!(id = %gone.access_key_id, %error, "access key deletion not published"),
        }
    }
    let known: HashSet<String> =
        held.live.iter().map(|h| h.access_key_id.clone()).chain(held.deleted.iter().cloned()).collect();
    for key in local.keys.into_iter().filter(|key| !known.contains(&key.access_key_id)) {
        let entry = AccessKeyEntry {
            access_key_id: key.access_key_id,
            name: key.name,
            created: key.created,
            secret: key.secret_access_key,
        };
        match engine.put_access_key(&entry).await {
            Ok(()) => {
                tracing::info!(id = %entry.access_key_id, name = %entry.name, "access key published to the cluster");
                held.live.push(entry);
            }
            Err(error) => tracing::warn!(id = %entry.access_key_id, %error, "access key not published"),
        }
    }
    Some(held)
}

impl KeyRing {
    pub fn open(data_dir: &Path, root: Root, cluster: Option<ClusterKeys>) -> Result<Self, KeyError> // PA
    {
        let ring = KeyRing(Arc::new(Ring {
            data_dir: data_dir.to_path_buf(),
            root,
            known: RwLock::new(Known::default()),
            cluster,
            last_asked: Mutex::new(None),
            last_checked: Mutex::new(Instant::now()),
        }));
        ring.reload()?;
        Ok(ring)
    }

    /// Read the keys file again; returns whether it records deletions the
    /// ring did not know of.
    fn reload(&self) -> Result<bool, KeyError> // PA
    {
        let modified = std::fs::metadata(keys_path(&self.0.data_dir)).and_then(|m| m.modified()).ok();
        let file = load_keys_file(&self.0.data_dir)?;
        let mut known = self.0.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let deleted: HashSet<String> = file.deleted.into_iter().map(|d| d.access_key_id).collect();
        let newly_deleted = deleted.iter().any(|id| !known.file_deleted.contains(id));
        known.file = file.keys.into_iter().map(|k| (k.access_key_id, k.secret_access_key)).collect();
        known.file_deleted = deleted;
        known.file_modified = modified;
        Ok(newly_deleted)
    }

    /// Re-read the keys file when it changed since it was read, looking at
    /// most once a second; a deletion found there goes to the cluster at once.
    fn reload_if_changed(&self) // PA
    {
        {
            let mut checked = self.0.last_checked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if checked.elapsed() < FILE_CHECK_INTERVAL {
                return;
            }
            *checked = Instant::now();
        }
        let modified = std::fs::metadata(keys_path(&self.0.data_dir)).and_then(|m| m.modified()).ok();
        if modified == self.0.known.read().unwrap_or_else(|poisoned| poisoned.into_inner()).file_modified {
            return;
        }
        match self.reload() {
            Ok(true) if self.0.cluster.is_some() => {
                let ring = self.clone();
                tokio::spawn(async move { ring.sync_with_cluster().await });
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot re-read access keys"),
        }
    }

    /// Publish this node's keys file to the cluster and take in every key
    /// the cluster holds. Does nothing on a node that is not in a cluster.
    pub async fn sync_with_cluster(&self) // PA
    {
        let Some(cluster) = &self.0.cluster else { return };
        *self.0.last_asked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        if let Err(error) = self.reload() {
            tracing::error!(%error, "cannot re-read access keys");
        }
        let local = load_keys_file(&self.0.data_dir).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read access keys");
            KeysFile::default()
        });
        if let Some(held) = cluster(local).await {
            let mut known = self.0.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            known.cluster = held.live.into_iter().map(|k| (k.access_key_id, k.secret)).collect();
            known.cluster_deleted = held.deleted.into_iter().collect();
        }
    }

    /// Whether an unknown key may make this node ask the cluster now.
    fn may_ask_cluster(&self) -> bool // PA
    {
        let mut last = self.0.last_asked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.0.cluster.is_none() || last.is_some_and(|at| at.elapsed() < CLUSTER_ASK_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn lookup(&self, access_key: &str) -> Option<String> // PA
    {
        if let Some((id, secret)) = &self.0.root {
            if id == access_key {
                return Some(secret.clone());
            }
        }
        let known = self.0.known.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.file_deleted.contains(access_key) || known.cluster_deleted.contains(access_key) {
            return None;
        }
        known.file.get(access_key).or_else(|| known.cluster.get(access_key)).cloned()
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyRing {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> // PA
    {
        self.reload_if_changed();
        if let Some(secret) = self.lookup(access_key) {
            return Ok(SecretKey::from(secret));
        }
        // A key created in this node's keys file since the last read: the
        // other nodes learn it from here.
        if let Err(error) = self.reload() {
            tracing::error!(%error, "cannot re-read access keys");
        }
        if let Some(secret) = self.lookup(access_key) {
            let ring = self.clone();
            tokio::spawn(async move { ring.sync_with_cluster().await });
            return Ok(SecretKey::from(secret));
        }
        // A key made on another node.
        if self.may_ask_cluster() {
            self.sync_with_cluster().await;
        }
        match self.lookup(access_key) {
            Some(secret) => Ok(SecretKey::from(secret)),
            None => {
                Err(s3_error!(InvalidAccessKeyId, "The AWS Access Key Id you provided does not exist in our records."))
            }
        }
    }
}
