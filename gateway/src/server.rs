//! The HTTP server: binds, answers `/_ouroboros/health`, hands everything
//! else to the S3 service, stamps and logs every request, and drains
//! in-flight requests on Ctrl-C or SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use ouroboros_core::anti_entropy::AntiEntropy;
use ouroboros_core::cluster::ClusterView;
use ouroboros_core::handoff::Handoff;
use ouroboros_core::layout::{Layout, NodeState};
use ouroboros_core::store::LocalStore;
use ouroboros_membership::{GossipCounters, Liveness, Members, MembersView, NetTransport, TransportCounters};
use s3s::host::{MultiDomain, S3Host};
use s3s::s3_error;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::{Config, Maintenance};
use crate::connection::{self, ConnectionLimits, StallGuard, StallTimedBody};
use crate::credentials::{self, KeyRing};
use crate::front_door;
use crate::node::{Node, NodeEngine, NodeSteward};
use crate::s3::Gateway;

type HttpResult = Result<Response<s3s::Body>, Infallible>;

pub const HEALTH_PATH: &str = "/_ouroboros/health";
pub const METRICS_PATH: &str = "/_ouroboros/metrics";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A browser form upload (POST policy) is held in memory while s3s checks
/// its policy, so it is kept far below S3's 5 GiB; larger files go by PUT.
pub const MAX_POST_OBJECT: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error(transparent)]
    Keys(#[from] credentials::KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("virtual-host domains {domains:?}: {reason}")]
    Domains { domains: Vec<String>, reason: String },
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
}

/// A server that is listening; `run` serves until a shutdown signal.
pub struct Server {
    listener: TcpListener,
    /// `None` on a storage-only node: every S3 request is refused.
    service: Option<S3Service>,
    /// `None` on a storage-only node.
    keys: Option<KeyRing>,
    node: Node,
    region: String,
    maintenance: Maintenance,
    /// How often replicas and registers are brought up to date.
    sync_interval: Duration,
    /// How fast repairs and scrubs go at most.
    repair_bytes_per_sec: u64,
    connections: ConnectionLimits,
    /// The virtual-host domains s3s routes by, to see a request as s3s will.
    hosts: Option<Arc<MultiDomain>>,
}

impl Server {
    /// Open the node and bind. On a first start without root credentials in
    /// the environment, a root key is made and printed once.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> // A
    {
        // The root key exists before the node opens, so a new cluster's
        // first node can hand it on in the command that adds the next node.
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| crate::node::NodeError::Io { path: config.data_dir.clone(), source })?;
        if config.cluster.storage_only {
            return Self::bind_storage_only(config).await;
        }
        let root = credentials::root_from_env()?;
        let first_key = if root.is_none() && credentials::load_keys(&config.data_dir)?.is_empty() {
            Some(credentials::create_key(&config.data_dir, "root")?)
        } else {
            None
        };
        let node = Node::open(config).await?;
        if let Some(key) = &first_key {
            print_first_start(config, key);
        }
        let Some(engine) = node.engine.clone() else {
            return Err(ServeError::Node(crate::node::NodeError::StorageOnly("was opened as a gateway")));
        };
        let cluster_keys = node.cluster.is_some().then(|| credentials::cluster_keys(engine.clone()));
        let keys = KeyRing::open(&config.data_dir, root, cluster_keys)?;

        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| ServeError::Bind { addr: config.listen.clone(), source })?;
        let mut builder = S3ServiceBuilder::new(Gateway::new(engine, config.region.clone()));
        builder.set_auth(keys.clone());
        builder.set_route(crate::status::StatusRoute {
            members: node.members.clone(),
            transport: node.transport.clone(),
            store: node.store.clone(),
            steward: node.steward.clone(),
        });
        let mut limits = s3s::config::S3Config::default();
        limits.xml_max_body_size = front_door::MAX_PARSED_BODY;
        limits.post_object_max_file_size = MAX_POST_OBJECT;
        limits.presigned_url_max_skew_time_secs = front_door::MAX_CLOCK_SKEW.as_secs() as u32;
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(limits))));
        // Clients send `bucket.domain:port` in Host: accept each domain with
        // and without the port we listen on.
        let port = listener.local_addr().map_or(0, |a| a.port());
        let domains: Vec<String> = config
            .domains
            .iter()
            .flat_map(|d| if d.contains(':') { vec![d.clone()] } else { vec![d.clone(), format!("{d}:{port}")] })
            .collect();
        let hosts = if domains.is_empty() {
            None
        } else {
            let hosts = || {
                MultiDomain::new(&domains)
                    .map_err(|e| ServeError::Domains { domains: domains.clone(), reason: e.to_string() })
            };
            builder.set_host(hosts()?);
            Some(Arc::new(hosts()?))
        };
        let service = builder.build();
        let mut connections = config.connections;
        connections.max_connections =
            connection::connection_cap(connections.max_connections, connection::raise_descriptor_limit());
        if connections.max_connections < config.connections.max_connections {
            tracing::warn!(
                wanted = config.connections.max_connections,
                cap = connections.max_connections,
                "the open-file limit caps client connections"
            );
        }
        Ok(Server {
            listener,
            service: Some(service),
            keys: Some(keys),
            node,
            region: config.region.clone(),
            maintenance: config.maintenance,
            sync_interval: config.cluster.sync_interval,
            repair_bytes_per_sec: config.cluster.repair_bytes_per_sec,
            connections,
            hosts,
        })
    }

    /// The node's local store (for operators' tools and tests).
    pub fn store(&self) -> std::sync::Arc<ouroboros_core::store::LocalStore> // A
    {
        self.node.store.clone()
    }

    /// Open a storage-only node: it keeps no access keys and builds no S3
    /// service, only the cluster's store, health and metrics.
    async fn bind_storage_only(config: &Config) -> Result<Self, ServeError> // A
    {
        let node = Node::open(config).await?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| ServeError::Bind { addr: config.listen.clone(), source })?;
        Ok(Server {
            listener,
            service: None,
            keys: None,
            node,
            region: config.region.clone(),
            maintenance: config.maintenance,
            sync_interval: config.cluster.sync_interval,
            repair_bytes_per_sec: config.cluster.repair_bytes_per_sec,
            connections: config.connections,
            hosts: None,
        })
    }

    /// The node's engine (for operators' tools and tests); `None` on a
    /// storage-only node.
    pub fn engine(&self) -> Option<crate::node::NodeEngine> // A
    {
        self.node.engine.clone()
    }

    pub fn local_addr(&self) -> Option<SocketAddr> // A
    {
        self.listener.local_addr().ok()
    }

    pub async fn run(self) -> Result<(), ServeError> // A
    {
        let addr = self.local_addr();
        match &self.service {
            Some(_) => tracing::info!(?addr, node = %self.node.id, "OuroborosDB is serving S3"),
            None => {
                tracing::info!(?addr, node = %self.node.id, "OuroborosDB is storing for the cluster (storage-only)")
            }
        }
        let engine = self.node.engine.clone();
        let upkeep = engine.clone().map(|engine| {
            tokio::spawn(crate::maintenance::run(Gateway::new(engine, self.region.clone()), self.maintenance))
        });
        let bucket_sync = match (&self.node.cluster, engine) {
            (Some(_), Some(engine)) => {
                let keys = self.keys.clone();
                let registers = keep_registers_in_sync(engine, self.node.members.clone(), keys, self.sync_interval);
                Some(tokio::spawn(registers))
            }
            _ => None,
        };
        // Every node of a cluster, storage-only ones too: they take slices
        // for homes that are away, and replicate partitions.
        let (handoff, anti_entropy) = match &self.node.cluster {
            Some(_) => {
                let view = Arc::new(MembersView { members: self.node.members.clone(), store: self.node.store.clone() });
                let transport = Arc::new(self.node.transport.clone());
                let handoff = tokio::spawn(keep_hints_handed_over(Handoff::new(transport.clone(), view.clone())));
                let syncer = AntiEntropy::new(transport, view.clone());
                (Some(handoff), Some(tokio::spawn(keep_replicas_in_step(syncer, view, self.sync_interval))))
            }
            None => (None, None),
        };
        let purge = tokio::spawn(keep_tombstones_bounded(self.node.store.clone(), self.maintenance));
        let scrub = tokio::spawn(keep_slices_scrubbed(
            self.node.store.clone(),
            self.maintenance.scrub_interval,
            self.repair_bytes_per_sec,
        ));
        let layout =
            self.node.steward.clone().map(|steward| tokio::spawn(keep_layout(steward, self.node.members.clone())));
        let moves = self.node.steward.clone().map(|steward| tokio::spawn(keep_data_placed(steward)));
        let limits = self.connections;
        let mut http = ConnBuilder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
        http.http2().timer(TokioTimer::new()).keep_alive_interval(limits.header_timeout);
        let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let region: Arc<str> = self.region.clone().into();
        let status = Arc::new(NodeStatus {
            members: self.node.members.clone(),
            store: self.node.store.clone(),
            transport: self.node.cluster.as_ref().map(|c| c.transport.counters()),
            gossip: self.node.cluster.as_ref().map(|c| c.gossip.counters.clone()),
        });
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(ServeError::Signal)?;
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            // At the cap, new connections wait in the listen backlog until
            // one closes; the timeouts make sure one does.
            let permit = tokio::select! {
                permit = open.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = ctrl_c.as_mut() => break,
                _ = terminate.recv() => break,
            };
            let (socket, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        // Out of descriptors, say: give the others a moment to close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = ctrl_c.as_mut() => break,
                _ = terminate.recv() => break,
            };
            // A response is written as headers, then body frames. With Nagle on, a small body
            // waits for the client's delayed ACK of the headers: 40 ms on every small GET.
            if let Err(error) = socket.set_nodelay(true) {
                tracing::debug!(%error, %peer, "could not turn off Nagle's algorithm");
            }
            let service = self.service.clone();
            let hosts = self.hosts.clone();
            let region = region.clone();
            let status = status.clone();
            let handler = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                sign_v2_bucket_path(&mut request, hosts.as_deref());
                let virtual_hosted = is_virtual_hosted(&request, hosts.as_deref());
                let request = request.map(|body| StallTimedBody::new(body, limits.stall_timeout));
                let call = S3Call { region: region.clone(), status: status.clone(), virtual_hosted, peer };
                handle(service.clone(), call, request)
            });
            let socket = TokioIo::new(StallGuard::new(socket, limits.stall_timeout));
            let connection = http.serve_connection_with_upgrades(socket, handler);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                drop(permit);
            });
        }
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all requests drained"),
            () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out, closing anyway"),
        }
        let background = [bucket_sync, handoff, anti_entropy, Some(purge), Some(scrub), layout, moves];
        for task in upkeep.into_iter().chain(background.into_iter().flatten()) {
            task.abort();
        }
        self.node.leave().await;
        self.node.store.sync()?;
        tracing::info!("store closed cleanly");
        Ok(())
    }
}

impl From<ouroboros_core::store::StoreError> for ServeError {
    fn from(error: ouroboros_core::store::StoreError) -> Self // A
    {
        ServeError::Node(crate::node::NodeError::Store(error))
    }
}

fn print_first_start(config: &Config, key: &credentials::AccessKey) // A
{
    let endpoint = format!("http://{}", config.listen);
    println!(
        "\nOuroborosDB created a root access key (kept in {}):\n\n  access key id:     {}\n  secret access key: {}\n\nTry it:\n\n  export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={}\n  aws --endpoint-url {endpoint} s3 mb s3://my-bucket\n  aws --endpoint-url {endpoint} s3 cp ./some-file s3://my-bucket/\n",
        config.data_dir.join(credentials::KEYS_FILE).display(),
        key.access_key_id,
        key.secret_access_key,
        key.access_key_id,
        key.secret_access_key,
        config.region,
    );
}

/// Keep this node's copy of the bucket records and the access keys (read
/// locally on every request) up to date, every sync interval.
async fn keep_registers_in_sync(engine: NodeEngine, members: Arc<Members>, keys: Option<KeyRing>, every: Duration) // A
{
    // A restarted node catches up as soon as it hears from another member,
    // not a whole interval later.
    for _ in 0..50 {
        if members.alive() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(error) = engine.sync_buckets().await {
            tracing::warn!(%error, "bucket records not brought up to date");
        }
        if let Some(keys) = &keys {
            keys.sync_with_cluster().await;
        }
    }
}

/// Anti-entropy as a node of the network runs it.
type Syncer = AntiEntropy<NetTransport, MembersView>;

/// Compare this node's metadata partitions with their other replicas and
/// exchange what differs, every sync interval (gateway and storage-only
/// nodes alike), and within `LAYOUT_INTERVAL` of a new layout version: a
/// node marked gone is replaced in its partitions' replica sets by nodes
/// that hold nothing of them yet, and until filled they make a read
/// quorum weaker.
async fn keep_replicas_in_step(syncer: Syncer, view: Arc<MembersView>, every: Duration) // PA
{
    let mut tick = tokio::time::interval(every.min(LAYOUT_INTERVAL));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut synced_for = None;
    let mut last_round: Option<Instant> = None;
    loop {
        tick.tick().await;
        let version = view.layout().version();
        let due = last_round.is_none_or(|at| at.elapsed() >= every);
        if due || synced_for != Some(version) {
            synced_for = Some(version);
            syncer.round().await;
            last_round = Some(Instant::now());
        }
    }
}

/// Hand the metadata writes other nodes missed over to them, and take the
/// slices held for them home, as soon as they are back
/// (`ouroboros_core::handoff`), checked every `LAYOUT_INTERVAL`.
async fn keep_hints_handed_over(handoff: Handoff<NetTransport, MembersView>) // A
{
    let mut tick = tokio::time::interval(LAYOUT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = handoff.hand_off_hints().await {
            tracing::warn!(%error, "hints not handed over");
        }
    }
}

/// How often a node exchanges layouts and moves itself on.
const LAYOUT_INTERVAL: Duration = Duration::from_secs(1);

/// Tend the layout (see `ouroboros_core::steward`) every `LAYOUT_INTERVAL`.
async fn keep_layout(steward: Arc<NodeSteward>, members: Arc<Members>) // A
{
    let mut tick = tokio::time::interval(LAYOUT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let alive = members.snapshot().into_iter().filter(|m| m.liveness == Liveness::Alive);
        let peers: Vec<ouroboros_core::NodeId> = alive.map(|m| m.peer.id).collect();
        steward.tend(&peers).await;
    }
}

/// Move slices and manifests to where the layout puts them, whenever
/// placement changed since the last complete pass (and while this node
/// drains), checked every `LAYOUT_INTERVAL`. Apart from `keep_layout`, so
/// a long pass holds up no layout exchange.
async fn keep_data_placed(steward: Arc<NodeSteward>) // A
{
    let mut tick = tokio::time::interval(LAYOUT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        steward.move_if_needed().await;
    }
}

/// Drop tombstones past their grace period, every maintenance interval, on
/// every node: storage-only nodes hold tombstones too, and one that kept
/// them would hand them back to the others at each anti-entropy round.
async fn keep_tombstones_bounded(store: Arc<LocalStore>, settings: Maintenance) // A
{
    let grace = u64::try_from(settings.tombstone_grace.as_nanos()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = ouroboros_core::now_nanos().saturating_sub(grace);
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.purge_tombstones(before)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "tombstones not purged"),
            Err(error) => tracing::warn!(%error, "tombstone purge stopped"),
        }
    }
}

/// Scrub this node's slices every `every` after the last scrub finished
/// (after `every` from now on a node never scrubbed; never when zero), and
/// whenever one is asked for (`ouroboros repair scrub`). A scrub a stop cut
/// short goes on at once, from where it was.
async fn keep_slices_scrubbed(store: Arc<LocalStore>, every: Duration, bytes_per_sec: u64) // A
{
    let started_ms = ouroboros_core::now_nanos() / 1_000_000;
    if matches!(store.scrub_progress(), Ok(Some(_))) {
        if let Err(error) = ouroboros_core::scrub::scrub_slices(store.clone(), bytes_per_sec).await {
            tracing::warn!(%error, "scrub stopped");
        }
    }
    loop {
        let last_ms = match store.last_scrub() {
            Ok(last) => last.map_or(started_ms, |last| last.finished_ms),
            Err(error) => {
                tracing::warn!(%error, "the last scrub's record is unreadable; counting from now");
                started_ms
            }
        };
        let now_ms = ouroboros_core::now_nanos() / 1_000_000;
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        let due_in = Duration::from_millis(last_ms.saturating_add(every_ms).saturating_sub(now_ms));
        tokio::select! {
            () = tokio::time::sleep(due_in), if !every.is_zero() => {}
            () = store.scrub_requested() => {}
        }
        if let Err(error) = ouroboros_core::scrub::scrub_slices(store.clone(), bytes_per_sec).await {
            tracing::warn!(%error, "scrub stopped");
            // Not at once again: whatever failed may need a moment.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

/// What the health and metrics endpoints read.
struct NodeStatus {
    members: Arc<Members>,
    store: Arc<LocalStore>,
    transport: Option<Arc<TransportCounters>>,
    gossip: Option<Arc<GossipCounters>>,
}

/// `/_ouroboros/metrics`, in Prometheus' text format.
fn metrics(status: &NodeStatus) -> Response<s3s::Body> // A
{
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let (gauge, counter) = ("gauge", "counter");
    let mut rows = vec![
        (
            "ouroboros_members",
            gauge,
            "Nodes known to this node, itself included.",
            status.members.snapshot().len() as u64,
        ),
        (
            "ouroboros_members_alive",
            gauge,
            "Known nodes the failure detector sees alive.",
            status.members.alive() as u64,
        ),
    ];
    if let Some(transport) = &status.transport {
        rows.extend(
            [
                (
                    "ouroboros_cluster_sent_bytes_total",
                    counter,
                    "Message bytes sent to other nodes.",
                    &transport.bytes_sent,
                ),
                (
                    "ouroboros_cluster_received_bytes_total",
                    counter,
                    "Message bytes received from other nodes.",
                    &transport.bytes_received,
                ),
                (
                    "ouroboros_cluster_refused_handshakes_total",
                    counter,
                    "Node connections that did not finish a handshake (no or wrong cluster secret).",
                    &transport.refused_handshakes,
                ),
                (
                    "ouroboros_cluster_malformed_requests_total",
                    counter,
                    "Node requests that did not decode.",
                    &transport.malformed_requests,
                ),
            ]
            .map(|(name, kind, help, value)| (name, kind, help, value.load(Relaxed))),
        );
    }
    if let Some(gossip) = &status.gossip {
        rows.extend(
            [
                (
                    "ouroboros_gossip_refused_packets_total",
                    counter,
                    "Gossip packets not sealed with the cluster key.",
                    &gossip.refused_packets,
                ),
                (
                    "ouroboros_gossip_rejected_packets_total",
                    counter,
                    "Sealed gossip packets the SWIM layer could not use.",
                    &gossip.rejected_packets,
                ),
            ]
            .map(|(name, kind, help, value)| (name, kind, help, value.load(Relaxed))),
        );
    }
    let mut text = String::new();
    for (name, kind, help, value) in rows {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    }
    let mut response = Response::new(s3s::Body::from(text));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

/// `/_ouroboros/health`: 200 while this node sees a majority of the known
/// members alive (itself included), else 503; the body says what it sees,
/// and how many nodes its layout holds active and known so by every node
/// (a joining node becomes active once it holds its share).
fn health(members: &Members, layout: &Layout) -> Response<s3s::Body> // A
{
    let known = members.snapshot().len();
    let alive = members.alive();
    let active = layout.nodes.iter().filter(|(id, e)| e.state == NodeState::Active && layout.settled(id)).count();
    let quorum = alive > known / 2;
    let body = format!(
        "{{\"status\":\"{}\",\"node\":\"{}\",\"members\":{known},\"alive\":{alive},\"active\":{active},\"quorum\":{quorum}}}\n",
        if quorum { "ok" } else { "degraded" },
        ouroboros_membership::short_id(&members.local().id),
    );
    let mut response = Response::new(s3s::Body::from(body));
    if !quorum {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn request_id() -> String // A
{
    hex::encode(rand::random::<[u8; 8]>()).to_uppercase()
}

/// Bucket and key of a path-style request, for the log.
fn bucket_and_key(path: &str) -> (&str, &str) // A
{
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

/// Whether s3s takes this request's bucket from its Host header, decided as
/// s3s decides it: domains are configured, the host is no IP address, and it
/// names a bucket (`bucket.domain`, or any other host name as a CNAME).
fn is_virtual_hosted<B>(request: &Request<B>, hosts: Option<&MultiDomain>) -> bool // A
{
    let Some(hosts) = hosts else { return false };
    let header = request.headers().get(hyper::header::HOST).and_then(|v| v.to_str().ok());
    let Some(host) = header.or_else(|| request.uri().authority().map(|a| a.as_str())) else { return false };
    if host.parse::<SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    hosts.parse_host_header(host).is_ok_and(|virtual_host| virtual_host.bucket().is_some())
}

/// Whether the request is a presigned URL of AWS Signature Version 2
/// (`AWSAccessKeyId` and `Signature` in the query).
fn is_sigv2_presigned<B>(request: &Request<B>) -> bool // PA
{
    let query = request.uri().query().unwrap_or("");
    let has = |name: &str| query.split('&').any(|pair| pair.split('=').next() == Some(name));
    has("AWSAccessKeyId") && has("Signature")
}

/// A SigV2 presigned URL for a path-style bucket request is signed over
/// `/bucket/`, as AWS defines it and botocore computes it, even when the URL
/// says `/bucket`; s3s checks the signature over the path as sent, and so
/// refused boto3's default presigned URL for a listing. Such a request is
/// given the path it was signed over, which names the same bucket.
/// SigV2 in headers is left alone: rclone signs the path as sent there.
fn sign_v2_bucket_path<B>(request: &mut Request<B>, hosts: Option<&MultiDomain>) // PA
{
    let path = request.uri().path();
    let names_one_bucket = path.len() > 1 && !path[1..].contains('/');
    if !names_one_bucket || !is_sigv2_presigned(request) || is_virtual_hosted(request, hosts) {
        return;
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{path}/?{query}"),
        None => format!("{path}/"),
    };
    let mut parts = request.uri().clone().into_parts();
    match path_and_query.parse() {
        Ok(path_and_query) => parts.path_and_query = Some(path_and_query),
        Err(_) => return,
    }
    if let Ok(uri) = hyper::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

type ClientBody = StallTimedBody<Incoming>;

/// What the server knows of a request besides the request itself.
struct S3Call {
    region: Arc<str>,
    status: Arc<NodeStatus>,
    /// The bucket is named in the Host header, not the path.
    virtual_hosted: bool,
    peer: SocketAddr,
}

async fn handle(service: Option<S3Service>, call: S3Call, request: Request<ClientBody>) -> HttpResult // A
{
    let id = request_id();
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = if uri.path() == HEALTH_PATH {
        health(&call.status.members, &call.status.store.layout())
    } else if uri.path() == METRICS_PATH {
        metrics(&call.status)
    } else if let Some(service) = service {
        serve_s3(service, &call, request).instrument(span.clone()).await
    } else {
        front_door::error_response(&s3_error!(
            AccessDenied,
            "This node is storage-only: it stores data for the cluster and answers no S3 request. Use a gateway node."
        ))
    };
    if let Ok(value) = hyper::header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amz-request-id", value);
    }
    let bytes = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let (bucket, key) = bucket_and_key(uri.path());
    let _entered = span.enter();
    tracing::info!(
        %method,
        bucket,
        key,
        query = uri.query().unwrap_or(""),
        status = response.status().as_u16(),
        bytes,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        peer = %call.peer,
        "request"
    );
    Ok(response)
}

/// An S3 request through the front door, then s3s.
async fn serve_s3(service: S3Service, call: &S3Call, request: Request<ClientBody>) -> Response<s3s::Body> // A
{
    let request = match front_door::admit(request.map(s3s::Body::http_body), &call.region, call.virtual_hosted) {
        Ok(request) => request,
        Err(refused) => {
            tracing::debug!(code = refused.code().as_str(), message = refused.message(), "refused at the front door");
            return front_door::error_response(&refused);
        }
    };
    match service.call(request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(?error, "request failed before an S3 answer");
            let mut response = Response::new(s3s::Body::from("internal error\n".to_string()));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: &str, authorization: Option<&str>) -> Request<()> // A
    {
        let mut builder = Request::builder().uri(uri).header(hyper::header::HOST, host);
        if let Some(authorization) = authorization {
            builder = builder.header(hyper::header::AUTHORIZATION, authorization);
        }
        builder.body(()).unwrap_or_else(|error| panic!("test request {uri}: {error}"))
    }

    fn signed_path(uri: &str, host: &str, authorization: Option<&str>) -> String // A
    {
        let hosts = MultiDomain::new(["localhost", "localhost:9000"]).unwrap_or_else(|e| panic!("test domains: {e}"));
        let mut request = request(uri, host, authorization);
        sign_v2_bucket_path(&mut request, Some(&hosts));
        request.uri().to_string()
    }

    #[test]
    fn a_sigv2_presigned_bucket_url_gets_the_path_it_was_signed_over() // A
    {
        let presigned = "/b?encoding-type=url&AWSAccessKeyId=K&Signature=S&Expires=1";
        assert_eq!(
            signed_path(presigned, "127.0.0.1:9000", None),
            "/b/?encoding-type=url&AWSAccessKeyId=K&Signature=S&Expires=1"
        );
    }

    #[test]
    fn objects_virtual_hosted_buckets_sigv2_headers_and_sigv4_keep_their_path() // A
    {
        let v2 = "AWSAccessKeyId=K&Signature=S&Expires=1";
        assert_eq!(signed_path(&format!("/b/key?{v2}"), "127.0.0.1:9000", None), format!("/b/key?{v2}"));
        assert_eq!(signed_path(&format!("/?{v2}"), "127.0.0.1:9000", None), format!("/?{v2}"));
        assert_eq!(signed_path(&format!("/key?{v2}"), "b.localhost:9000", None), format!("/key?{v2}"));
        assert_eq!(signed_path(&format!("/key?{v2}"), "files.example.com", None), format!("/key?{v2}"));
        assert_eq!(signed_path("/b", "127.0.0.1:9000", Some("AWS K:S")), "/b");
        assert_eq!(signed_path("/b", "127.0.0.1:9000", Some("AWS4-HMAC-SHA256 Credential=K/...")), "/b");
        assert_eq!(
            signed_path("/b?X-Amz-Signature=S&X-Amz-Credential=K", "127.0.0.1:9000", None),
            "/b?X-Amz-Signature=S&X-Amz-Credential=K"
        );
        assert_eq!(signed_path("/b", "127.0.0.1:9000", None), "/b");
    }
}
