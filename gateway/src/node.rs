//! Opening a node from its data directory: the lock that keeps a second
//! server out, the node's key material, the local store and the engine.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ouroboros_core::memory::{MemoryCluster, MemoryView};
use ouroboros_core::store::{Durability, LocalStore, StoreError};
use ouroboros_core::{ClusterSecret, DataKeyPair, Engine, EngineConfig, EngineError, Hash, NodeKeys};
use serde::{Deserialize, Serialize};

pub const LOCK_FILE: &str = "LOCK";
pub const IDENTITY_FILE: &str = "identity.toml";

pub type NodeEngine = Engine<MemoryCluster, MemoryView>;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another ouroboros server is already using the data directory {0}")]
    Locked(PathBuf),
    #[error("identity file {path} is damaged: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A node's long-lived secrets, hex in `identity.toml` (owner-only).
#[derive(Serialize, Deserialize)]
struct Identity {
    /// X25519 secret of this node; its public key names the node.
    node_secret: String,
    /// Shared by the cluster: authenticates members, derives the dedup key.
    cluster_secret: String,
    /// X25519 secret of the cluster's data key pair.
    data_secret: String,
}

fn random_hex() -> String // PA
{
    hex::encode(rand::random::<[u8; 32]>())
}

fn parse_secret(path: &Path, name: &str, value: &str) -> Result<[u8; 32], NodeError> // PA
{
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| NodeError::Identity { path: path.into(), reason: format!("{name} is not 64 hex digits") })?;
    Ok(out)
}

fn load_identity(data_dir: &Path) -> Result<Identity, NodeError> // PA
{
    let path = data_dir.join(IDENTITY_FILE);
    let io = |source| NodeError::Io { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| NodeError::Identity { path: path.clone(), reason: e.to_string() })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let identity =
                Identity { node_secret: random_hex(), cluster_secret: random_hex(), data_secret: random_hex() };
            let text = toml::to_string(&identity).map_err(|e| io(std::io::Error::other(e)))?;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = path.with_extension("toml.tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(identity)
        }
        Err(source) => Err(io(source)),
    }
}

/// An open node: keep it alive as long as the server runs.
pub struct Node {
    pub engine: NodeEngine,
    pub store: Arc<LocalStore>,
    pub id: Hash,
    _lock: File,
}

impl Node {
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, NodeError> // PA
    {
        let io = |source| NodeError::Io { path: data_dir.to_path_buf(), source };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let lock = File::create(data_dir.join(LOCK_FILE)).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(NodeError::Locked(data_dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        let identity = load_identity(data_dir)?;
        let path = data_dir.join(IDENTITY_FILE);
        let node_pair = DataKeyPair::from_secret_bytes(parse_secret(&path, "node_secret", &identity.node_secret)?);
        let cluster = ClusterSecret::from_bytes(parse_secret(&path, "cluster_secret", &identity.cluster_secret)?);
        let data_pair = DataKeyPair::from_secret_bytes(parse_secret(&path, "data_secret", &identity.data_secret)?);
        let id = Hash::of(node_pair.public().as_bytes());

        let store = Arc::new(LocalStore::open(&data_dir.join("store"), durability)?);
        let transport = MemoryCluster::new();
        transport.add_node(id, store.clone());
        let view = Arc::new(transport.view(id));
        let keys = NodeKeys { dedup_key: cluster.dedup_key(), recipients: vec![data_pair.public()], data_pair };
        let engine = Engine::new(Arc::new(transport), view, keys, EngineConfig::default())?;
        Ok(Node { engine, store, id, _lock: lock })
    }
}
