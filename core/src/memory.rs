//! An in-process cluster: nodes are local stores in one process, reached
//! through the same `Transport` and `ClusterView` traits as over the network.
//! A single node uses it as its real transport; tests use it to run several
//! nodes and to take some of them down.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::cluster::{handle_request, Call, ClusterView, Request, Transport, TransportError, Unreachable};
use crate::layout::Layout;
use crate::model::NodeId;
use crate::store::LocalStore;

#[derive(Default)]
struct Nodes {
    stores: BTreeMap<NodeId, Arc<LocalStore>>,
    /// Nodes down, and since when.
    down: BTreeMap<NodeId, Instant>,
}

/// Nodes in this process, any of which can be marked down.
#[derive(Clone, Default)]
pub struct MemoryCluster {
    nodes: Arc<RwLock<Nodes>>,
}

impl MemoryCluster {
    pub fn new() -> Self // A
    {
        Self::default()
    }

    /// Add a node, active at once: every node's layout holds it (a
    /// cluster formed together, or a single node).
    pub fn add_node(&self, id: NodeId, store: Arc<LocalStore>) // A
    {
        let mut nodes = self.write();
        nodes.stores.insert(id, store);
        let ids: Vec<NodeId> = nodes.stores.keys().copied().collect();
        let layout = Layout::of_active(&ids);
        for (node, store) in &nodes.stores {
            if let Err(error) = store.merge_layout(&layout) {
                tracing::warn!(node = %node, %error, "layout not stored");
            }
        }
    }

    /// Add a node that is reachable but not in any layout yet: it enters
    /// the way a node joining a running cluster does.
    pub fn add_unplaced_node(&self, id: NodeId, store: Arc<LocalStore>) // A
    {
        self.write().stores.insert(id, store);
    }

    /// Take a node's store out, as a crash does: the node is unreachable
    /// until `restore_node` puts a store back.
    pub fn remove_store(&self, id: &NodeId) -> Option<Arc<LocalStore>> // A
    {
        self.write().stores.remove(id)
    }

    /// Put back a node's store, reopened after `remove_store`; its layout
    /// is the one the store kept.
    pub fn restore_node(&self, id: NodeId, store: Arc<LocalStore>) // A
    {
        self.write().stores.insert(id, store);
    }

    /// Requests to a down node fail as if it had crashed.
    pub fn set_down(&self, id: NodeId, down: bool) // A
    {
        let mut nodes = self.write();
        if down {
            nodes.down.entry(id).or_insert_with(Instant::now);
        } else {
            nodes.down.remove(&id);
        }
    }

    pub fn store(&self, id: &NodeId) -> Option<Arc<LocalStore>> // A
    {
        self.read().stores.get(id).cloned()
    }

    /// A view of this cluster as seen from `local`.
    pub fn view(&self, local: NodeId) -> MemoryView // A
    {
        MemoryView { cluster: self.clone(), local }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Nodes> // A
    {
        self.nodes.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Nodes> // A
    {
        self.nodes.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Transport for MemoryCluster {
    fn call(&self, node: NodeId, request: Request) -> Call // PA
    {
        let store = self.local_store(node);
        async move {
            let store = store.ok_or(TransportError::Unreachable { node, cause: Unreachable::SeenDown })?;
            // The store blocks (disk, fsync): keep it off the async threads.
            crate::compute::blocking(move || handle_request(&store, request))
                .await
                .map_err(|error| TransportError::Remote { node, message: error.to_string() })?
                .map_err(|error| TransportError::from_store(node, &error))
        }
        .boxed()
    }

    fn local_store(&self, node: NodeId) -> Option<Arc<LocalStore>> // PA
    {
        let nodes = self.read();
        if nodes.down.contains_key(&node) {
            None
        } else {
            nodes.stores.get(&node).cloned()
        }
    }
}

/// The members of a `MemoryCluster`, seen from one of them.
#[derive(Clone)]
pub struct MemoryView {
    cluster: MemoryCluster,
    local: NodeId,
}

impl ClusterView for MemoryView {
    fn local_node(&self) -> NodeId // A
    {
        self.local
    }

    fn layout(&self) -> Arc<Layout> // PA
    {
        self.cluster.store(&self.local).map(|store| store.layout()).unwrap_or_default()
    }

    fn is_down(&self, node: NodeId) -> bool // A
    {
        self.cluster.read().down.contains_key(&node)
    }

    fn down_for(&self, node: NodeId) -> Option<Duration> // A
    {
        self.cluster.read().down.get(&node).map(|since| since.elapsed())
    }
}
