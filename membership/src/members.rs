//! Who is in the cluster: each known node's identity (id, cluster address,
//! generation, role) and whether SWIM sees it alive now. Placement reads
//! the known set, never liveness: a node that stops answering keeps its
//! place until it is declared gone (the layout's job), so a brief outage
//! moves nothing. The set is saved in the data directory, so a restarted
//! node places data where the cluster does before gossip reaches it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ouroboros_core::cluster::ClusterView;
use ouroboros_core::layout::Layout;
use ouroboros_core::store::LocalStore;
use ouroboros_core::{Hash, NodeId};
use serde::{Deserialize, Serialize};

/// What a node does for the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Holds the data private key and answers S3.
    Gateway,
    /// Stores ciphertext only; refuses S3.
    Storage,
}

impl Role {
    pub fn as_str(&self) -> &'static str // A
    {
        match self {
            Role::Gateway => "gateway",
            Role::Storage => "storage",
        }
    }
}

/// A node as gossip names it. The address is what foca keys members by; a
/// restarted node comes back with a higher generation and replaces its
/// stale self at the same address.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub generation: u64,
    pub role: Role,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result // A
    {
        write!(f, "{}@{}#{}", short_id(&self.id), self.addr, self.generation)
    }
}

impl Peer {
    /// A seed address whose node is not known yet: it loses every address
    /// conflict, so the real node's first answer replaces it.
    pub fn seed(addr: SocketAddr) -> Self // A
    {
        Peer { id: Hash::default(), addr, generation: 0, role: Role::Storage }
    }

    pub fn is_seed(&self) -> bool // A
    {
        self.id == Hash::default()
    }
}

impl foca::Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> // PA
    {
        Some(Peer { generation: self.generation + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr // A
    {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool // PA
    {
        (self.generation, self.id) > (adversary.generation, adversary.id)
    }
}

/// The short form of a node id people read: 12 hex digits.
pub fn short_id(id: &NodeId) -> String // A
{
    id.to_hex()[..12].to_string()
}

/// Whether SWIM sees a node answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    Alive,
    Suspect,
    Down,
}

impl Liveness {
    pub fn as_str(&self) -> &'static str // A
    {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
        }
    }
}

/// One known node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub peer: Peer,
    pub liveness: Liveness,
    /// Since when SWIM has seen it down without a break.
    pub down_since: Option<Instant>,
}

#[derive(Default)]
struct Table {
    members: BTreeMap<NodeId, Member>,
}

/// The known nodes, shared by gossip (which writes) and the engine and
/// transport (which read).
pub struct Members {
    local: Peer,
    file: PathBuf,
    table: RwLock<Table>,
}

const MEMBERS_FILE: &str = "cluster-members";
const MEMBERS_FILE_VERSION: u8 = 1;

impl Members {
    /// The table of `local`, with the nodes saved in `data_dir` last time.
    pub fn load(local: Peer, data_dir: &Path) -> std::io::Result<Arc<Self>> // PA
    {
        let file = data_dir.join(MEMBERS_FILE);
        let mut table = Table::default();
        match std::fs::read(&file) {
            Ok(bytes) => match saved_peers(&bytes) {
                Some(peers) => {
                    // Not yet heard from: suspect, not down, so requests
                    // still try them until gossip says otherwise.
                    for peer in peers.into_iter().filter(|p| p.id != local.id && !p.is_seed()) {
                        table.members.insert(peer.id, Member { peer, liveness: Liveness::Suspect, down_since: None });
                    }
                }
                None => tracing::warn!(file = %file.display(), "saved member list unreadable; gossip will rebuild it"),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        table.members.insert(local.id, Member { peer: local.clone(), liveness: Liveness::Alive, down_since: None });
        Ok(Arc::new(Members { local, file, table: RwLock::new(table) }))
    }

    pub fn local(&self) -> &Peer // A
    {
        &self.local
    }

    /// Every known node with its liveness, in id order.
    pub fn snapshot(&self) -> Vec<Member> // A
    {
        self.read().members.values().cloned().collect()
    }

    pub fn get(&self, id: &NodeId) -> Option<Member> // A
    {
        self.read().members.get(id).cloned()
    }

    /// Record what gossip says about a node. A stale generation never
    /// replaces a newer one. Returns whether the set of known nodes or
    /// their addresses changed (and was saved).
    pub fn observe(&self, peer: &Peer, liveness: Liveness) -> bool // PA
    {
        if peer.is_seed() || peer.id == self.local.id {
            return false;
        }
        // Gossip reports every member after every packet; most reports
        // change nothing and need no write lock.
        let known = self.read().members.get(&peer.id).is_some_and(|m| m.peer == *peer && m.liveness == liveness);
        if known {
            return false;
        }
        let changed = {
            let mut table = self.write();
            match table.members.get_mut(&peer.id) {
                Some(member) if member.peer.generation > peer.generation => false,
                Some(member) => {
                    let moved = member.peer != *peer;
                    member.peer = peer.clone();
                    member.down_since = match liveness {
                        Liveness::Down => member.down_since.or_else(|| Some(Instant::now())),
                        _ => None,
                    };
                    member.liveness = liveness;
                    moved
                }
                None => {
                    let down_since = (liveness == Liveness::Down).then(Instant::now);
                    table.members.insert(peer.id, Member { peer: peer.clone(), liveness, down_since });
                    true
                }
            }
        };
        if changed {
            if let Err(error) = self.save() {
                tracing::warn!(%error, "could not save the member list");
            }
        }
        changed
    }

    /// How many known nodes SWIM sees alive, this one included.
    pub fn alive(&self) -> usize // A
    {
        self.read().members.values().filter(|m| m.liveness == Liveness::Alive).count()
    }

    fn save(&self) -> std::io::Result<()> // PA
    {
        let peers: Vec<Peer> = self.read().members.values().map(|m| m.peer.clone()).collect();
        let mut bytes = vec![MEMBERS_FILE_VERSION];
        bytes.extend(postcard::to_allocvec(&peers).map_err(std::io::Error::other)?);
        replace_file(&self.file, &bytes)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> // A
    {
        self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> // A
    {
        self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Replace a small state file whole: written beside it, synced, renamed
/// over it, so a crash leaves the old file or the new one.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> // PA
{
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn saved_peers(bytes: &[u8]) -> Option<Vec<Peer>> // PA
{
    let (version, body) = bytes.split_first()?;
    if *version != MEMBERS_FILE_VERSION {
        return None;
    }
    postcard::from_bytes(body).ok()
}

/// The engine's view: placement from the layout the node's store holds,
/// liveness from gossip.
#[derive(Clone)]
pub struct MembersView {
    pub members: Arc<Members>,
    pub store: Arc<LocalStore>,
}

impl ClusterView for MembersView {
    fn local_node(&self) -> NodeId // A
    {
        self.members.local.id
    }

    fn layout(&self) -> Arc<Layout> // PA
    {
        self.store.layout()
    }

    fn is_down(&self, node: NodeId) -> bool // A
    {
        self.members.read().members.get(&node).is_some_and(|m| m.liveness == Liveness::Down)
    }

    fn opens_chunks(&self, node: NodeId) -> bool // A
    {
        self.members.read().members.get(&node).is_some_and(|m| m.peer.role == Role::Gateway)
    }

    fn down_for(&self, node: NodeId) -> Option<Duration> // A
    {
        self.members.read().members.get(&node).and_then(|m| m.down_since).map(|since| since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8, generation: u64) -> Peer // A
    {
        let addr = SocketAddr::from(([127, 0, 0, n], 7000));
        Peer { id: Hash::of(&[n]), addr, generation, role: Role::Gateway }
    }

    #[test]
    fn known_nodes_survive_a_restart_and_stale_generations_lose() // A
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let members = Members::load(peer(1, 1), dir.path()).expect("load");
        assert!(members.observe(&peer(2, 5), Liveness::Alive));
        assert!(!members.observe(&peer(2, 4), Liveness::Down), "an older generation replaced a newer one");
        assert_eq!(members.get(&peer(2, 0).id).map(|m| m.liveness), Some(Liveness::Alive));
        assert!(!members.observe(&Peer::seed(peer(3, 0).addr), Liveness::Alive), "a seed placeholder became a member");

        let again = Members::load(peer(1, 2), dir.path()).expect("reload");
        assert_eq!(again.snapshot().len(), 2);
        assert_eq!(again.get(&peer(2, 0).id).map(|m| (m.peer.generation, m.liveness)), Some((5, Liveness::Suspect)));
    }

    #[test]
    fn a_damaged_member_file_is_rebuilt_not_fatal() // A
    {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(MEMBERS_FILE), [1, 0xff, 0xff, 0xff]).expect("write");
        let members = Members::load(peer(1, 1), dir.path()).expect("load");
        assert_eq!(members.snapshot().len(), 1);
    }
}
