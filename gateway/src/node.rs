//! Opening a node from its data directory: the lock that keeps a second
//! server out, the node's key material, the local store and the engine.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ouroboros_core::layout::{Layout, NodeState};
use ouroboros_core::steward::{Steward, StewardSettings};
use ouroboros_core::store::{LocalStore, StoreError};
use ouroboros_core::{ClusterSecret, DataKeyPair, Engine, EngineConfig, EngineError, Hash, NodeKeys};
use ouroboros_membership::{
    node_id_of_secret, short_id, Cluster, ClusterConfig, ClusterError, Liveness, Members, MembersView, NetTransport,
    NoiseKeys, Peer, Role,
};
use serde::{Deserialize, Serialize};

use crate::config::Config;

pub const LOCK_FILE: &str = "LOCK";
pub const IDENTITY_FILE: &str = "identity.toml";
/// How long a new node waits for the members it was told to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

pub type NodeEngine = Engine<NetTransport, MembersView>;
/// The layout steward of a node of a cluster.
pub type NodeSteward = Steward<NetTransport, MembersView>;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another ouroboros server is already using the data directory {0}")]
    Locked(PathBuf),
    #[error("identity file {path} is damaged: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error(
        "the {what} given differs from the one this data directory was created with ({path}); \
         a node's data belongs to one cluster"
    )]
    OtherCluster { what: &'static str, path: PathBuf },
    #[error("a storage-only node {0}")]
    StorageOnly(&'static str),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(
        "no member answered at {join:?} within {timeout:?}; is the address right, and the cluster secret the same?"
    )]
    JoinFailed { join: Vec<String>, timeout: Duration },
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_secret: Option<String>,
    /// X25519 secret of the cluster's data key pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_secret: Option<String>,
}

/// The secrets a node runs with, from its identity file and its settings.
struct Secrets {
    node: [u8; 32],
    cluster: [u8; 32],
    /// `None` on a storage-only node: it never holds the key.
    data: Option<[u8; 32]>,
    /// Made on this start: this is the first node of a new cluster.
    new_cluster: bool,
}

fn parse_secret(path: &Path, name: &str, value: &str) -> Result<[u8; 32], NodeError> // PA
{
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| NodeError::Identity { path: path.into(), reason: format!("{name} is not 64 hex digits") })?;
    Ok(out)
}

/// A secret given in the settings, else the stored one, else a new one
/// (recorded). A given secret that differs from the stored one is refused.
/// A secret and whether it was made just now.
type Settled = Result<([u8; 32], bool), NodeError>;

fn settle(path: &Path, what: &'static str, given: Option<[u8; 32]>, stored: &mut Option<String>) -> Settled // PA
{
    let kept = match stored.as_deref() {
        Some(text) => Some(parse_secret(path, what, text)?),
        None => None,
    };
    match (given, kept) {
        (Some(given), Some(kept)) if given != kept => Err(NodeError::OtherCluster { what, path: path.into() }),
        (Some(given), Some(_)) => Ok((given, false)),
        (Some(given), None) => {
            *stored = Some(hex::encode(given));
            Ok((given, false))
        }
        (None, Some(kept)) => Ok((kept, false)),
        (None, None) => {
            let made: [u8; 32] = rand::random();
            *stored = Some(hex::encode(made));
            Ok((made, true))
        }
    }
}

fn load_secrets(data_dir: &Path, config: &Config) -> Result<Secrets, NodeError> // PA
{
    let path = data_dir.join(IDENTITY_FILE);
    let io = |source| NodeError::Io { path: path.clone(), source };
    let (mut identity, existed) = match std::fs::read_to_string(&path) {
        Ok(text) => (
            toml::from_str::<Identity>(&text)
                .map_err(|e| NodeError::Identity { path: path.clone(), reason: e.to_string() })?,
            true,
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => (
            Identity { node_secret: hex::encode(rand::random::<[u8; 32]>()), cluster_secret: None, data_secret: None },
            false,
        ),
        Err(source) => return Err(io(source)),
    };
    let before = (identity.cluster_secret.clone(), identity.data_secret.clone());
    let node = parse_secret(&path, "node_secret", &identity.node_secret)?;
    let storage_only = config.cluster.storage_only;
    if storage_only && config.cluster.secret.is_none() && identity.cluster_secret.is_none() {
        return Err(NodeError::StorageOnly(
            "needs the cluster secret (OUROBOROS_CLUSTER_SECRET or --cluster-secret-file)",
        ));
    }
    let (cluster, new_cluster) = settle(&path, "cluster secret", config.cluster.secret, &mut identity.cluster_secret)?;
    let data = if storage_only {
        if config.cluster.data_key.is_some() {
            return Err(NodeError::StorageOnly("must not be given the data key: it stores ciphertext only"));
        }
        if identity.data_secret.is_some() {
            return Err(NodeError::StorageOnly(
                "cannot use a data directory that holds the data private key; start it on a fresh one",
            ));
        }
        None
    } else {
        Some(settle(&path, "data key", config.cluster.data_key, &mut identity.data_secret)?.0)
    };
    if !existed || before != (identity.cluster_secret.clone(), identity.data_secret.clone()) {
        let text = toml::to_string(&identity).map_err(|e| io(std::io::Error::other(e)))?;
        write_private(&path, text.as_bytes()).map_err(io)?;
    }
    Ok(Secrets { node, cluster, data, new_cluster })
}

/// Write a file only its owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> // PA
{
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("toml.tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// An open node: keep it alive as long as the server runs.
pub struct Node {
    /// The read and write paths; `None` on a storage-only node, which
    /// cannot open chunks and answers no S3 request.
    pub engine: Option<NodeEngine>,
    pub store: Arc<LocalStore>,
    pub id: Hash,
    pub members: Arc<Members>,
    /// The running membership and transport; `None` for a node alone.
    pub cluster: Option<Cluster>,
    /// Calls to members (this node's own store when alone).
    pub transport: NetTransport,
    /// Keeps the layout and moves data; `None` for a node alone.
    pub steward: Option<Arc<NodeSteward>>,
    _lock: File,
}

impl Node {
    pub async fn open(config: &Config) -> Result<Self, NodeError> // PA
    {
        let data_dir = config.data_dir.as_path();
        let io = |source| NodeError::Io { path: data_dir.to_path_buf(), source };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let lock = File::create(data_dir.join(LOCK_FILE)).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(NodeError::Locked(data_dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        let secrets = load_secrets(data_dir, config)?;
        let cluster_secret = ClusterSecret::from_bytes(secrets.cluster);
        let id = node_id_of_secret(&secrets.node);
        let role = if config.cluster.storage_only { Role::Storage } else { Role::Gateway };

        let store = Arc::new(LocalStore::open(&data_dir.join("store"), config.durability)?);
        let (transport, members, cluster) = match config.cluster.listen {
            Some(listen) => {
                let settings = ClusterConfig {
                    data_dir: data_dir.to_path_buf(),
                    listen,
                    advertise: config.cluster.advertise,
                    join: config.cluster.join.clone(),
                    role,
                    secret: cluster_secret.clone(),
                    node_secret: secrets.node,
                    gossip: Default::default(),
                    transport: Default::default(),
                };
                let cluster = Cluster::start(settings, store.clone()).await?;
                (cluster.transport.clone(), cluster.members.clone(), Some(cluster))
            }
            None => {
                // Alone: the same engine over a transport that only ever
                // calls this node, and no port for others.
                let generation = ouroboros_membership::next_generation(data_dir).map_err(io)?;
                let peer = Peer { id, addr: SocketAddr::from(([0, 0, 0, 0], 0)), generation, role: Role::Gateway };
                let members = Members::load(peer, data_dir).map_err(io)?;
                let keys = NoiseKeys { static_secret: secrets.node, psk: cluster_secret.transport_psk() };
                (NetTransport::new(store.clone(), members.clone(), keys, Default::default()), members, None)
            }
        };
        let known: Vec<Hash> = members.snapshot().iter().map(|m| m.peer.id).collect();
        // A node started before: it ran without a layout if it has none.
        let ran_before = members.local().generation > 1;
        let alone = cluster.is_none();
        let now_ms = ouroboros_core::now_nanos() / 1_000_000;
        let place = config.cluster.place.clone();
        store.update_layout(move |layout| {
            let entered = enter_layout(layout, id, &known, alone, ran_before, now_ms);
            // A node entering as joining (or alone) gives its zone and
            // capacity; one of a cluster from before the layout, active at
            // once, and one in the layout already keep theirs, as a place
            // changed with no state change would move data unnoticed.
            let joined = entered && (alone || layout.state_of(&id) == Some(NodeState::Joining));
            entered | (joined && layout.set_place(id, place))
        })?;
        let held = store.layout().place_of(&id);
        if held != config.cluster.place {
            tracing::warn!(
                zone = %held.zone,
                capacity = held.capacity,
                "this node joined with another zone or capacity than it is configured with now; the layout keeps \
                 the ones it joined with (drain it and start a new node to change them)"
            );
        }
        if let Some(cluster) = &cluster {
            if secrets.new_cluster && config.cluster.join.is_empty() {
                print_new_cluster(config, cluster.members.local(), &secrets);
            }
            wait_for_join(config, &cluster.members).await?;
        }
        let engine = match secrets.data {
            Some(data) => {
                let data_pair = DataKeyPair::from_secret_bytes(data);
                let recipients = vec![data_pair.public()];
                let keys = NodeKeys { dedup_key: cluster_secret.dedup_key(), recipients, data_pair };
                let view = Arc::new(MembersView { members: members.clone(), store: store.clone() });
                let engine_config = EngineConfig {
                    repair_bytes_per_sec: config.cluster.repair_bytes_per_sec,
                    ..EngineConfig::default()
                };
                Some(Engine::new(Arc::new(transport.clone()), view, keys, engine_config)?)
            }
            None => None,
        };
        let steward = cluster.as_ref().map(|_| {
            let settings = StewardSettings {
                dead_after: config.cluster.dead_after,
                may_stand_alone: config.cluster.join.is_empty(),
                move_bytes_per_sec: config.cluster.repair_bytes_per_sec,
                place: config.cluster.place.clone(),
            };
            let view = Arc::new(MembersView { members: members.clone(), store: store.clone() });
            Arc::new(Steward::new(Arc::new(transport.clone()), view, store.clone(), settings))
        });
        if let Some(steward) = &steward {
            hear_the_layout(config, &members, steward).await?;
        }
        Ok(Node { engine, store, id, members, cluster, transport, steward, _lock: lock })
    }

    /// Leave the cluster (others mark this node down at once) and stop.
    pub async fn leave(&self) // A
    {
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
    }
}

/// Put this node in its own layout the first time it starts with one. A
/// node alone is active at once. A node of a cluster formed before the
/// layout existed (it ran before, knows other members from then, and has
/// no layout) enters with every member it knows as active, as placement
/// treated them. Any other node joins, and the layout steward makes it
/// active once it holds its share.
fn enter_layout(layout: &mut Layout, id: Hash, known: &[Hash], alone: bool, ran_before: bool, now_ms: u64) -> bool // PA
{
    if layout.state_of(&id).is_some() {
        return false;
    }
    if alone {
        return layout.advance(id, NodeState::Active, id, now_ms);
    }
    if layout.nodes.is_empty() && ran_before && known.len() > 1 {
        tracing::info!(nodes = known.len(), "a cluster from before the layout: every known node enters it active");
        return layout.merge(&Layout::of_active(known));
    }
    layout.advance(id, NodeState::Joining, id, now_ms)
}

/// Take in another node's layout before serving. A node told to join
/// whose layout holds only itself must (a layout of itself alone would
/// have it acknowledge writes by itself); a node that knew others (a
/// restart) tries for a few seconds, so it does not serve reads from a
/// layout changed while it was away, and starts anyway when no one answers
/// (it may be the first of its cluster back).
async fn hear_the_layout(config: &Config, members: &Members, steward: &NodeSteward) -> Result<(), NodeError> // PA
{
    let must = !config.cluster.join.is_empty() && steward.layout().nodes.len() <= 1;
    if !must && steward.layout().nodes.len() <= 1 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + if must { JOIN_TIMEOUT } else { RESTART_LAYOUT_WAIT };
    while tokio::time::Instant::now() < deadline {
        let alive = members.snapshot().into_iter().filter(|m| m.liveness == Liveness::Alive);
        let peers: Vec<Hash> = alive.map(|m| m.peer.id).filter(|peer| *peer != members.local().id).collect();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = tokio::time::timeout(left, steward.exchange(&peers)).await;
        if steward.has_heard_from_peer() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if must {
        return Err(NodeError::JoinFailed { join: config.cluster.join.clone(), timeout: JOIN_TIMEOUT });
    }
    tracing::warn!("no other node answered with its layout; serving with the one held from before");
    Ok(())
}

/// How long a restarted node tries to take in another node's layout.
const RESTART_LAYOUT_WAIT: Duration = Duration::from_secs(3);

/// A node told to join that knows no other member yet waits until one
/// answers: placing data over itself alone would put it where the cluster
/// will not look. A node that knew members before starts at once.
async fn wait_for_join(config: &Config, members: &Members) -> Result<(), NodeError> // PA
{
    if config.cluster.join.is_empty() || members.snapshot().len() > 1 {
        return Ok(());
    }
    tracing::info!(join = ?config.cluster.join, "waiting to join the cluster");
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if members.alive() > 1 {
            tracing::info!(members = members.alive(), "joined the cluster");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(NodeError::JoinFailed { join: config.cluster.join.clone(), timeout: JOIN_TIMEOUT })
}

fn print_new_cluster(config: &Config, local: &Peer, secrets: &Secrets) // A
{
    let root = match crate::credentials::root_from_env() {
        Ok(Some(_)) => String::new(),
        _ => match crate::credentials::load_keys(&config.data_dir) {
            Ok(keys) => keys
                .first()
                .map(|key| {
                    format!(
                        "{}={} {}={} ",
                        crate::credentials::ROOT_ID_ENV,
                        key.access_key_id,
                        crate::credentials::ROOT_SECRET_ENV,
                        key.secret_access_key
                    )
                })
                .unwrap_or_default(),
            Err(_) => String::new(),
        },
    };
    let data = secrets.data.map(hex::encode).unwrap_or_default();
    println!(
        "\nThis is node {} of a new cluster (cluster address {}). To add a node, run on it:\n\n  \
         OUROBOROS_CLUSTER_SECRET={} OUROBOROS_DATA_KEY={data} {root}ouroboros serve --cluster-listen ADDR:PORT --join {}\n\n\
         To add a storage-only node (it never holds the data key, and answers no S3 request):\n\n  \
         OUROBOROS_CLUSTER_SECRET={} ouroboros serve --storage-only --cluster-listen ADDR:PORT --join {}\n",
        short_id(&local.id),
        local.addr,
        hex::encode(secrets.cluster),
        local.addr,
        hex::encode(secrets.cluster),
        local.addr,
    );
}
