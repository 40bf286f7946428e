//! S3 access keys: kept in `keys.toml` in the data directory, re-read when a
//! request names an unknown key (so `ouroboros key create` works against a
//! running server), plus the root key from the environment when set. In a
//! cluster, every node publishes its file's keys to the cluster (secrets
//! sealed to the data key) and accepts the keys of every node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use ouroboros_core::cluster::{ClusterView, Transport};
use ouroboros_core::{AccessKeyEntry, Engine};

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

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeysFile {
    #[serde(default, rename = "key")]
    keys: Vec<AccessKey>,
}

fn keys_path(data_dir: &Path) -> PathBuf // A
{
    data_dir.join(KEYS_FILE)
}

/// Every key stored in the data directory.
pub fn load_keys(data_dir: &Path) -> Result<Vec<AccessKey>, KeyError> // PA
{
    let path = keys_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<KeysFile>(&text)
            .map(|file| file.keys)
            .map_err(|source| KeyError::Parse { path, source: Box::new(source) }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

/// Write the key list atomically, readable by the owner only.
fn store_keys(data_dir: &Path, keys: Vec<AccessKey>) -> Result<(), KeyError> // PA
{
    let path = keys_path(data_dir);
    let io = |source| KeyError::Io { path: path.clone(), source };
    let text = toml::to_string_pretty(&KeysFile { keys }).map_err(|e| io(std::io::Error::other(e)))?;
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
    let created =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    AccessKey {
        name: name.to_string(),
        access_key_id: format!("OB{}", random_string(18, ID)),
        secret_access_key: random_string(40, SECRET),
        created,
    }
}

/// Create and store a named key.
pub fn create_key(data_dir: &Path, name: &str) -> Result<AccessKey, KeyError> // PA
{
    let mut keys = load_keys(data_dir)?;
    if keys.iter().any(|k| k.name == name) {
        return Err(KeyError::Exists(name.to_string()));
    }
    let key = generate_key(name);
    keys.push(key.clone());
    store_keys(data_dir, keys)?;
    Ok(key)
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

/// Publishes the keys of this node's keys file to the cluster and returns
/// every access key the cluster holds; `None` when the cluster could not be
/// asked (the keys known so far are kept).
pub type ClusterKeys = Arc<dyn Fn(Vec<AccessKey>) -> BoxFuture<'static, Option<Vec<AccessKey>>> + Send + Sync>;

/// The root key pair (id, secret), when the environment sets one.
type Root = Option<(String, String)>;
/// The cluster's keys, or `None` when it could not be asked.
type Synced = Option<Vec<AccessKey>>;

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
    keys: RwLock<HashMap<String, String>>,
    cluster: Option<ClusterKeys>,
    cluster_keys: RwLock<HashMap<String, String>>,
    last_asked: Mutex<Option<Instant>>,
}

/// The cluster's keys, published from every node's keys file.
pub fn cluster_keys<T: Transport, V: ClusterView>(engine: Engine<T, V>) -> ClusterKeys // PA
{
    Arc::new(move |local| {
        let engine = engine.clone();
        async move { sync_keys(&engine, local).await }.boxed()
    })
}

async fn sync_keys<T: Transport, V: ClusterView>(engine: &Engine<T, V>, local: Vec<AccessKey>) -> Synced // PA
{
    let mut held = match engine.sync_access_keys().await {
        Ok(held) => held,
        Err(error) => {
            tracing::warn!(%error, "access keys not brought up to date");
            return None;
        }
    };
    let known: std::collections::HashSet<String> = held.iter().map(|h| h.access_key_id.clone()).collect();
    for key in local.into_iter().filter(|key| !known.contains(&key.access_key_id)) {
        let entry = AccessKeyEntry {
            access_key_id: key.access_key_id,
            name: key.name,
            created: key.created,
            secret: key.secret_access_key,
        };
        match engine.put_access_key(&entry).await {
            Ok(()) => {
                tracing::info!(id = %entry.access_key_id, name = %entry.name, "access key published to the cluster");
                held.push(entry);
            }
            Err(error) => tracing::warn!(id = %entry.access_key_id, %error, "access key not published"),
        }
    }
    Some(
        held.into_iter()
            .map(|e| AccessKey {
                name: e.name,
                access_key_id: e.access_key_id,
                secret_access_key: e.secret,
                created: e.created,
            })
            .collect(),
    )
}

impl KeyRing {
    pub fn open(data_dir: &Path, root: Root, cluster: Option<ClusterKeys>) -> Result<Self, KeyError> // PA
    {
        let ring = KeyRing(Arc::new(Ring {
            data_dir: data_dir.to_path_buf(),
            root,
            keys: RwLock::new(HashMap::new()),
            cluster,
            cluster_keys: RwLock::new(HashMap::new()),
            last_asked: Mutex::new(None),
        }));
        ring.reload()?;
        Ok(ring)
    }

    fn reload(&self) -> Result<(), KeyError> // PA
    {
        let keys = load_keys(&self.0.data_dir)?.into_iter().map(|k| (k.access_key_id, k.secret_access_key)).collect();
        *self.0.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        Ok(())
    }

    /// Publish this node's keys file to the cluster and take in every key
    /// the cluster holds. Does nothing on a node that is not in a cluster.
    pub async fn sync_with_cluster(&self) // PA
    {
        let Some(cluster) = &self.0.cluster else { return };
        *self.0.last_asked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        let local = load_keys(&self.0.data_dir).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read access keys");
            Vec::new()
        });
        if let Some(keys) = cluster(local).await {
            let keys = keys.into_iter().map(|k| (k.access_key_id, k.secret_access_key)).collect();
            *self.0.cluster_keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
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
        let read = |map: &RwLock<HashMap<String, String>>| {
            map.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(access_key).cloned()
        };
        read(&self.0.keys).or_else(|| read(&self.0.cluster_keys))
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyRing {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> // PA
    {
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
