//! `ouroboros status`, `ouroboros node drain|remove` and `ouroboros repair
//! scrub`, for operators. The server side is an s3s custom route on `GET
//! /?x-ouroboros-status` (the members a node sees, with their layout
//! states, what they store and the passes under way), `POST
//! /?x-ouroboros-node=drain|remove&id=ID` (a layout change) and `POST
//! /?x-ouroboros-repair=scrub` (a scrub on every node in service), so
//! s3s checks the SigV4 signature against the node's access keys like any
//! S3 request; the client side signs that one request and prints the answer.

use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use hyper::http::Extensions;
use hyper::{HeaderMap, Method, Uri};
use ouroboros_core::cluster::{StartScrub, StoreUsage, Transport, Usage};
use ouroboros_core::layout::{Layout, NodeState};
use ouroboros_core::pace::PassProgress;
use ouroboros_core::store::{LocalStore, ScrubSummary};
use ouroboros_core::NodeId;
use ouroboros_membership::{Members, NetTransport};

use crate::node::NodeSteward;
use s3s::route::S3Route;
use s3s::{Body, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The query parameter that names the status request.
pub const STATUS_QUERY: &str = "x-ouroboros-status";
/// The query parameter that names a layout change, and the one naming its node.
pub const NODE_QUERY: &str = "x-ouroboros-node";
pub const NODE_ID_QUERY: &str = "id";
/// The query parameter that asks for a repair action (`scrub`).
pub const REPAIR_QUERY: &str = "x-ouroboros-repair";

/// Answers the status request with the member table as JSON, and layout
/// changes.
pub struct StatusRoute {
    pub members: Arc<Members>,
    /// Asks each member what it stores.
    pub transport: NetTransport,
    pub store: Arc<LocalStore>,
    /// Makes layout changes; `None` on a node alone.
    pub steward: Option<Arc<NodeSteward>>,
}

/// How long status waits for a member to say what it stores.
const USAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `GET /?x-ouroboros-status` answers, as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// The id of the node that answered.
    pub node: String,
    /// The version of its layout: it grows with every change of state.
    pub layout_version: u64,
    pub members: Vec<MemberReport>,
    pub repair: RepairReport,
}

/// How far the cluster is from holding everything where it belongs, over
/// the members that answered.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RepairReport {
    /// Metadata partitions a member found out of step with another replica
    /// at its last anti-entropy round: 0 once replicas agree.
    pub partitions_unsynced: u64,
    /// Slices that belong on another node than the one holding them, and
    /// their bytes, at each member's last move pass: 0 once everything is
    /// where the layout puts it.
    pub slices_to_move: u64,
    pub bytes_to_move: u64,
    /// Chunks short of a slice at its home after each gateway's last repair
    /// pass: 0 once every chunk has all its k+m slices where they belong.
    pub chunks_degraded: u64,
    /// Hints members keep for nodes that missed them (metadata writes, and
    /// slices stored elsewhere than their home), handed over as soon as
    /// those are back: 0 once every replica has every write and every
    /// handed-off slice is home.
    pub hints: u64,
    /// Seconds until the slowest move or repair pass under way is done, at
    /// its pace so far; `None` when none is under way or none can tell yet.
    pub eta_secs: Option<u64>,
}

/// One member as the answering node sees it.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberReport {
    pub id: String,
    /// Its cluster address.
    pub addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// `joining`, `active`, `draining` or `gone`; absent when the layout
    /// does not hold it yet.
    pub layout: Option<String>,
    /// Its zone and capacity (bytes) in the layout; absent when the layout
    /// does not hold it yet.
    pub zone: Option<String>,
    pub capacity: Option<u64>,
    /// `gateway` or `storage`.
    pub role: String,
    pub generation: u64,
    /// Slices it stores and their bytes; absent when it did not answer.
    pub slices: Option<u64>,
    pub slice_bytes: Option<u64>,
    /// Partitions it found out of step at its last anti-entropy round.
    pub partitions_unsynced: Option<u64>,
    /// Slices it holds that belong elsewhere, and their bytes.
    pub slices_to_move: Option<u64>,
    pub bytes_to_move: Option<u64>,
    /// Chunks its last repair pass left short of slices (gateways only).
    pub chunks_degraded: Option<u64>,
    /// Its passes under way: moving slices to their homes, repairing
    /// chunks, scrubbing its disk; each with how far it is.
    pub moving: Option<PassProgress>,
    pub repairing: Option<PassProgress>,
    pub scrubbing: Option<PassProgress>,
    /// Its last finished scrub.
    pub last_scrub: Option<ScrubSummary>,
    /// Hints it keeps for nodes that missed them: metadata writes, and
    /// slices it stored elsewhere than their home.
    pub hints: Option<u64>,
}

/// The member table as a report, with what each member that answers in
/// time says it stores.
pub async fn status_report(members: &Members, transport: &NetTransport, layout: &Layout) -> StatusReport // A
{
    let snapshot = members.snapshot();
    let usage = snapshot.iter().map(|m| async move {
        match tokio::time::timeout(USAGE_TIMEOUT, transport.ask(m.peer.id, Usage {})).await {
            Ok(Ok(usage)) => Some(usage),
            _ => None,
        }
    });
    let usage = futures::future::join_all(usage).await;
    let members_seen = snapshot
        .into_iter()
        .zip(usage)
        .map(|(m, usage): (_, Option<Box<StoreUsage>>)| {
            let usage = usage.as_deref();
            MemberReport {
                id: m.peer.id.to_hex(),
                addr: m.peer.addr.to_string(),
                state: m.liveness.as_str().to_string(),
                layout: layout.state_of(&m.peer.id).map(|state| state.as_str().to_string()),
                zone: layout.nodes.contains_key(&m.peer.id).then(|| layout.place_of(&m.peer.id).zone),
                capacity: layout.nodes.contains_key(&m.peer.id).then(|| layout.place_of(&m.peer.id).capacity),
                role: m.peer.role.as_str().to_string(),
                generation: m.peer.generation,
                slices: usage.map(|u| u.slices),
                slice_bytes: usage.map(|u| u.bytes),
                partitions_unsynced: usage.and_then(|u| u.partitions_unsynced),
                slices_to_move: usage.and_then(|u| u.slices_to_move),
                bytes_to_move: usage.and_then(|u| u.bytes_to_move),
                chunks_degraded: usage.and_then(|u| u.chunks_degraded),
                moving: usage.and_then(|u| u.passes.moving),
                repairing: usage.and_then(|u| u.passes.repairing),
                scrubbing: usage.and_then(|u| u.passes.scrubbing),
                last_scrub: usage.and_then(|u| u.last_scrub),
                hints: usage.map(|u| u.hints),
            }
        })
        .collect::<Vec<_>>();
    let sum = |field: fn(&MemberReport) -> Option<u64>| members_seen.iter().filter_map(field).sum();
    let repair = RepairReport {
        partitions_unsynced: sum(|m| m.partitions_unsynced),
        slices_to_move: sum(|m| m.slices_to_move),
        bytes_to_move: sum(|m| m.bytes_to_move),
        chunks_degraded: sum(|m| m.chunks_degraded),
        hints: sum(|m| m.hints),
        eta_secs: members_seen
            .iter()
            .flat_map(|m| [m.moving, m.repairing])
            .flatten()
            .filter_map(|pass| pass.eta_secs)
            .max(),
    };
    let layout_version = layout.version();
    StatusReport { node: members.local().id.to_hex(), layout_version, members: members_seen, repair }
}

#[async_trait::async_trait]
impl S3Route for StatusRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _headers: &HeaderMap, _extensions: &mut Extensions) -> bool // PA
    {
        let names = |name: &str| uri.query().is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some(name)));
        uri.path() == "/"
            && ((*method == Method::GET && names(STATUS_QUERY))
                || (*method == Method::POST && (names(NODE_QUERY) || names(REPAIR_QUERY))))
    }

    async fn call(&self, request: S3Request<Body>) -> S3Result<S3Response<Body>> // PA
    {
        if request.method == Method::POST && query_param(&request.uri, REPAIR_QUERY).is_some() {
            return self.start_scrub(&request.uri).await;
        }
        if request.method == Method::POST {
            return self.change_layout(&request.uri).await;
        }
        let layout = self.store.layout();
        let json = serde_json::to_string_pretty(&status_report(&self.members, &self.transport, &layout).await)
            .map_err(|error| s3s::s3_error!(InternalError, "status report: {error}"))?;
        let mut response = S3Response::new(Body::from(json));
        response
            .headers
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        Ok(response)
    }
}

impl StatusRoute {
    /// `POST /?x-ouroboros-node=drain|remove&id=ID`: move a node of the
    /// layout to draining or gone. ID is its id or a prefix of it that
    /// names one node.
    async fn change_layout(&self, uri: &Uri) -> S3Result<S3Response<Body>> // PA
    {
        let param = |name: &str| query_param(uri, name);
        let state = match param(NODE_QUERY) {
            Some("drain") => NodeState::Draining,
            Some("remove") => NodeState::Gone,
            other => {
                return Err(s3s::s3_error!(InvalidArgument, "{NODE_QUERY} must be drain or remove, not {other:?}"))
            }
        };
        let Some(steward) = &self.steward else {
            return Err(s3s::s3_error!(InvalidRequest, "this node runs alone: it has no layout to change"));
        };
        let wanted = param(NODE_ID_QUERY).unwrap_or_default().to_ascii_lowercase();
        let layout = self.store.layout();
        let matching: Vec<NodeId> =
            layout.nodes.keys().filter(|id| !wanted.is_empty() && id.to_hex().starts_with(&wanted)).copied().collect();
        let node = match matching.as_slice() {
            [node] => *node,
            [] => return Err(s3s::s3_error!(InvalidArgument, "no node of the layout has an id starting {wanted:?}")),
            _ => return Err(s3s::s3_error!(InvalidArgument, "{} nodes have ids starting {wanted:?}", matching.len())),
        };
        if layout.state_of(&node).is_some_and(|held| held >= state) {
            let held = layout.state_of(&node).map_or("", |s| s.as_str());
            return Err(s3s::s3_error!(InvalidRequest, "node {} is already {held}", node.to_hex()));
        }
        if layout.placing().iter().all(|other| *other == node) {
            return Err(s3s::s3_error!(
                InvalidRequest,
                "the last node new data can be placed on cannot leave the layout"
            ));
        }
        if state == NodeState::Draining && layout.is_moving() {
            return Err(s3s::s3_error!(
                InvalidRequest,
                "a node is joining or draining already: drain one node at a time, once the layout has settled"
            ));
        }
        let Some(changed) = steward.set_state(node, state).await else {
            return Err(s3s::s3_error!(InternalError, "the layout could not be stored; see this node's log"));
        };
        let held = changed.state_of(&node).map_or("unknown", |s| s.as_str());
        Ok(S3Response::new(Body::from(format!("node {}: {held}\n", node.to_hex()))))
    }
}

impl StatusRoute {
    /// `POST /?x-ouroboros-repair=scrub`: every node in service (this one
    /// alone on a single node) starts a scrub; one line per node.
    async fn start_scrub(&self, uri: &Uri) -> S3Result<S3Response<Body>> // A
    {
        match query_param(uri, REPAIR_QUERY) {
            Some("scrub") => {}
            other => return Err(s3s::s3_error!(InvalidArgument, "{REPAIR_QUERY} must be scrub, not {other:?}")),
        }
        let local = self.members.local().id;
        let layout = self.store.layout();
        let mut nodes = layout.in_service();
        if !nodes.contains(&local) {
            nodes.push(local);
        }
        let asked = nodes.iter().map(|node| async move {
            tokio::time::timeout(USAGE_TIMEOUT, self.transport.ask(*node, StartScrub {})).await
        });
        let mut out = String::new();
        for (node, answer) in nodes.iter().zip(futures::future::join_all(asked).await) {
            let said = match answer {
                Ok(Ok(true)) => "scrub started".to_string(),
                Ok(Ok(false)) => "a scrub is under way already".to_string(),
                Ok(Err(error)) => format!("not started: {error}"),
                Err(_) => "not started: no answer in time".to_string(),
            };
            out.push_str(&format!("node {}: {said}\n", node.to_hex()));
        }
        Ok(S3Response::new(Body::from(out)))
    }
}

/// The value of a query parameter.
fn query_param<'u>(uri: &'u Uri, name: &str) -> Option<&'u str> // A
{
    uri.query()?.split('&').find_map(|p| p.split_once('=').filter(|(key, _)| *key == name).map(|(_, v)| v))
}

/// Who is asking: an access key and the region to sign for.
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> // PA
{
    // HMAC takes a key of any length.
    let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Header names and values.
pub type Headers = Vec<(String, String)>;

/// An operator's request: `METHOD /?QUERY` with an empty body; the query
/// is in canonical form (parameters sorted, values needing no escape).
pub struct AdminRequest<'a> {
    pub method: &'a str,
    pub query: String,
}

impl AdminRequest<'_> {
    pub fn status() -> Self // A
    {
        AdminRequest { method: "GET", query: format!("{STATUS_QUERY}=") }
    }

    /// Start a scrub on every node in service.
    pub fn scrub() -> Self // A
    {
        AdminRequest { method: "POST", query: format!("{REPAIR_QUERY}=scrub") }
    }

    /// Drain or remove (`action`) the node whose id starts with `id`.
    pub fn node(action: &str, id: &str) -> AdminRequest<'static> // A
    {
        AdminRequest { method: "POST", query: format!("{NODE_ID_QUERY}={id}&{NODE_QUERY}={action}") }
    }
}

/// The headers of a SigV4-signed admin request to `host`.
pub fn signed_headers(signer: &Signer, request: &AdminRequest, host: &str, now: time::OffsetDateTime) -> Headers // PA
{
    let date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let day = &date[..8];
    let empty = hex::encode(Sha256::digest(b""));
    let (method, query) = (request.method, &request.query);
    let canonical = format!(
        "{method}\n/\n{query}\nhost:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{date}\n\nhost;x-amz-content-sha256;x-amz-date\n{empty}"
    );
    let scope = format!("{day}/{}/s3/aws4_request", signer.region);
    let to_sign = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
    let mut key = hmac(format!("AWS4{}", signer.secret_key).as_bytes(), day.as_bytes());
    for part in [signer.region.as_str(), "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
        signer.access_key
    );
    vec![
        ("host".into(), host.into()),
        ("x-amz-content-sha256".into(), empty),
        ("x-amz-date".into(), date),
        ("authorization".into(), authorization),
    ]
}

/// Why `ouroboros status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("endpoint {0:?} is not http://HOST:PORT")]
    Endpoint(String),
    #[error("cannot reach {endpoint}: {source}")]
    Connect { endpoint: String, source: std::io::Error },
    #[error("{endpoint} answered {status}: {body}")]
    Refused { endpoint: String, status: u16, body: String },
    #[error("{endpoint} answered something that is not HTTP")]
    Garbled { endpoint: String },
}

/// Send an admin request to the node at `endpoint` (http://HOST:PORT);
/// the body of its answer.
pub async fn admin_request(endpoint: &str, signer: &Signer, admin: &AdminRequest<'_>) -> Result<String, StatusError> // A
{
    let host = host_of(endpoint)?;
    let mut request = format!("{} /?{} HTTP/1.0\r\ncontent-length: 0\r\n", admin.method, admin.query);
    for (name, value) in signed_headers(signer, admin, host, time::OffsetDateTime::now_utc()) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    exchange(endpoint, host, &request).await
}

/// `GET /_ouroboros/health` of the node at `endpoint`: its body when it
/// answers 200.
pub async fn fetch_health(endpoint: &str) -> Result<String, StatusError> // A
{
    let host = host_of(endpoint)?;
    let request = format!("GET {} HTTP/1.0\r\nhost: {host}\r\n\r\n", crate::server::HEALTH_PATH);
    let answer = exchange(endpoint, host, &request);
    tokio::time::timeout(Duration::from_secs(5), answer).await.unwrap_or_else(|_| {
        let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5 s");
        Err(StatusError::Connect { endpoint: endpoint.to_string(), source })
    })
}

/// The `HOST:PORT` of an `http://HOST:PORT` endpoint.
fn host_of(endpoint: &str) -> Result<&str, StatusError> // A
{
    endpoint
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|host| !host.is_empty() && !host.contains('/'))
        .ok_or_else(|| StatusError::Endpoint(endpoint.to_string()))
}

/// Send one HTTP/1.0 request and read the answer to its end; the body when
/// the status is 200.
async fn exchange(endpoint: &str, host: &str, request: &str) -> Result<String, StatusError> // A
{
    let connect = |source| StatusError::Connect { endpoint: endpoint.to_string(), source };
    let mut stream = tokio::net::TcpStream::connect(host).await.map_err(connect)?;
    stream.write_all(request.as_bytes()).await.map_err(connect)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.map_err(connect)?;
    let text = String::from_utf8_lossy(&answer);
    let garbled = || StatusError::Garbled { endpoint: endpoint.to_string() };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(garbled)?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(garbled)?;
    if status != 200 {
        return Err(StatusError::Refused { endpoint: endpoint.to_string(), status, body: body.trim().to_string() });
    }
    Ok(body.to_string())
}

/// A report as a table for people.
pub fn status_table(report: &StatusReport) -> String // A
{
    let mut out = format!(
        "{:<14} {:<24} {:<8} {:<9} {:<12} {:>9} {:<8} {:>10} {:>9} {:>12}\n",
        "node", "address", "state", "layout", "zone", "capacity", "role", "generation", "slices", "slice bytes"
    );
    for member in &report.members {
        let short = member.id.get(..12).unwrap_or(&member.id);
        let local = if member.id == report.node { "  (this node)" } else { "" };
        let known = |value: Option<u64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
        out.push_str(&format!(
            "{:<14} {:<24} {:<8} {:<9} {:<12} {:>9} {:<8} {:>10} {:>9} {:>12}{local}\n",
            short,
            member.addr,
            member.state,
            member.layout.as_deref().unwrap_or("-"),
            member.zone.as_deref().unwrap_or("-"),
            member.capacity.map_or_else(|| "-".to_string(), human_bytes),
            member.role,
            member.generation,
            known(member.slices),
            known(member.slice_bytes)
        ));
    }
    for member in &report.members {
        let short = member.id.get(..12).unwrap_or(&member.id);
        let passes =
            [("moving slices", member.moving), ("repairing", member.repairing), ("scrubbing", member.scrubbing)];
        for (doing, pass) in passes.into_iter().filter_map(|(doing, pass)| Some((doing, pass?))) {
            out.push_str(&format!("{short}: {doing}, {}\n", pass_line(&pass)));
        }
        if let Some(scrub) = member.last_scrub {
            let when = time::OffsetDateTime::from_unix_timestamp((scrub.finished_ms / 1000) as i64)
                .map_or_else(|_| "-".to_string(), |t| format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute()));
            out.push_str(&format!(
                "{short}: last scrub finished {when}: {} slices checked, {} damaged\n",
                scrub.slices_checked, scrub.slices_damaged
            ));
        }
    }
    let repair = &report.repair;
    out.push_str(&format!(
        "layout version {}; partitions out of step: {}; slices to move: {} ({} bytes); chunks degraded: {}; \
         writes and slices kept for nodes away: {}{}\n",
        report.layout_version,
        repair.partitions_unsynced,
        repair.slices_to_move,
        repair.bytes_to_move,
        repair.chunks_degraded,
        repair.hints,
        repair.eta_secs.map_or_else(String::new, |secs| format!("; done in about {secs} s"))
    ));
    out
}

/// A capacity for people, in decimal units: "4 TB", "1.5 TB", "500 GB".
fn human_bytes(bytes: u64) -> String // A
{
    let units = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut scale = 0;
    while scale + 1 < units.len() && bytes >= 1000u64.pow(scale as u32 + 1) {
        scale += 1;
    }
    let value = bytes as f64 / 1000f64.powi(scale as i32);
    let text = format!("{value:.1}");
    format!("{} {}", text.strip_suffix(".0").unwrap_or(&text), units[scale])
}

/// How far a pass is, for people: "42% done, 1.2 GiB, about 3 min left".
fn pass_line(pass: &PassProgress) -> String // A
{
    let left = match pass.eta_secs {
        None => "time left not known yet".to_string(),
        Some(secs) if secs < 120 => format!("about {secs} s left"),
        Some(secs) if secs < 7200 => format!("about {} min left", secs.div_ceil(60)),
        Some(secs) => format!("about {} h left", secs.div_ceil(3600)),
    };
    format!("{}.{}% done, {} bytes, {left}", pass.done_permille / 10, pass.done_permille % 10, pass.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_read_in_decimal_units() // A
    {
        assert_eq!(human_bytes(4_000_000_000_000), "4 TB");
        assert_eq!(human_bytes(1_500_000_000_000), "1.5 TB");
        assert_eq!(human_bytes(2 << 40), "2.2 TB");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }
}
