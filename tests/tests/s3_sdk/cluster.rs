//! Real clusters: `ouroboros serve` processes on 127.0.0.1, each with its own
//! S3 and cluster ports and data directory, joined with `--join`, driven by
//! the SDK through any node. Faults are real: a node is killed with SIGKILL
//! and restarted from its data directory. Every process is killed when the
//! test ends, passed or failed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use ouroboros_core::{placement, Hash};

use super::*;

/// The `ouroboros` binary of this build: `OUROBOROS_BIN`, else the one
/// beside this test's directory (`scripts/test.sh` builds it first).
fn ouroboros_binary() -> PathBuf // A
{
    if let Some(path) = std::env::var_os("OUROBOROS_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let binary = profile_dir.join("ouroboros");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p ouroboros-gateway --bin ouroboros` first (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// PUT `body` under `key`; the SDK's error says why it failed.
async fn put_bytes(client: &Client, bucket: &str, key: &str, body: &[u8]) -> Result<(), String> // A
{
    let put = client.put_object().bucket(bucket).key(key).body(ByteStream::from(body.to_vec()));
    put.send().await.map(drop).map_err(|error| format!("PUT {bucket}/{key}: {error:?}"))
}

/// A loopback address whose port is free for TCP and UDP alike.
fn free_address() -> SocketAddr // A
{
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = tcp.local_addr().expect("address");
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
}

struct ClusterNode {
    dir: tempfile::TempDir,
    s3: SocketAddr,
    cluster: SocketAddr,
    child: Option<Child>,
    /// Started with `--storage-only` and neither the data key nor access keys.
    storage_only: bool,
    /// Its zone (`OUROBOROS_ZONE`), if the test gives one.
    zone: Option<String>,
}

/// Nodes of one cluster, sharing its secret, data key and root access key.
struct TestCluster {
    nodes: Vec<ClusterNode>,
    /// Settings every node starts with, beside the ones all tests use.
    env: Vec<(String, String)>,
    secret: String,
    data_key: String,
    access_key: String,
    secret_key: String,
}

impl Drop for TestCluster {
    fn drop(&mut self) // A
    {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What `/_ouroboros/health` says.
#[derive(Debug)]
struct Health {
    status: u16,
    node: String,
    alive: usize,
    members: usize,
}

/// The whole answer to `GET /_ouroboros/health`.
fn health_body(s3: SocketAddr) -> Option<String> // A
{
    let mut stream = std::net::TcpStream::connect(s3).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /_ouroboros/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

fn health(s3: SocketAddr) -> Option<Health> // A
{
    let text = health_body(s3)?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let field = |name: &str| -> Option<String> {
        let start = text.find(&format!("\"{name}\":"))? + name.len() + 3;
        let rest = &text[start..];
        let end = rest.find([',', '}'])?;
        Some(rest[..end].trim_matches('"').to_string())
    };
    Some(Health {
        status,
        node: field("node")?,
        alive: field("alive")?.parse().ok()?,
        members: field("members")?.parse().ok()?,
    })
}

impl TestCluster {
    /// `size` nodes: the first alone, the others joining it; returns once
    /// every node sees all of them alive.
    async fn start(size: usize) -> Self // A
    {
        Self::start_with(size, &[]).await
    }

    /// As `start`, with the nodes in `storage_only` started storage-only.
    async fn start_with(size: usize, storage_only: &[usize]) -> Self // A
    {
        Self::start_tuned(size, storage_only, &[]).await
    }

    /// As `start_with`, every node also given the environment `env`.
    async fn start_tuned(size: usize, storage_only: &[usize], env: &[(&str, &str)]) -> Self // A
    {
        Self::start_placed(size, storage_only, env, &[]).await
    }

    /// As `start_tuned`, node i in zone `zones[i]` (when given).
    async fn start_placed(size: usize, storage_only: &[usize], env: &[(&str, &str)], zones: &[&str]) -> Self // A
    {
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            env: env.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect(),
            secret: hex::encode(rand::random::<[u8; 32]>()),
            data_key: hex::encode(rand::random::<[u8; 32]>()),
            access_key: "GKCLUSTERTEST0000001".into(),
            secret_key: hex::encode(rand::random::<[u8; 20]>()),
        };
        for index in 0..size {
            cluster.nodes.push(ClusterNode {
                dir: tempfile::tempdir().expect("tempdir"),
                s3: free_address(),
                cluster: free_address(),
                child: None,
                storage_only: storage_only.contains(&index),
                zone: zones.get(index).map(|zone| zone.to_string()),
            });
            cluster.spawn_on_free_ports(index).await;
        }
        for index in 0..size {
            cluster.wait_alive(index, size).await;
        }
        let gateway = (0..size).find(|i| !storage_only.contains(i)).expect("a gateway node");
        cluster.wait_layout(gateway, |states| states.len() == size && states.iter().all(|s| s == "active")).await;
        // And every node knows every other is active.
        for index in 0..size {
            cluster.wait_settled(index, size).await;
        }
        cluster
    }

    /// Every member's layout state, by node index, as node `asked` reports
    /// them ("-" for a member its layout does not hold).
    fn layout_states(&self, asked: usize) -> Vec<String> // A
    {
        let out = self.status(asked, &self.secret_key);
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return Vec::new() };
        let members = report["members"].as_array().cloned().unwrap_or_default();
        self.nodes
            .iter()
            .filter_map(|node| members.iter().find(|m| m["addr"] == node.cluster.to_string()))
            .map(|m| m["layout"].as_str().unwrap_or("-").to_string())
            .collect()
    }

    /// Until node `index`'s health says `active` nodes are active and known
    /// so by every node.
    async fn wait_settled(&self, index: usize, active: usize) // A
    {
        let wanted = format!("\"active\":{active},");
        for _ in 0..300 {
            if health_body(self.nodes[index].s3).is_some_and(|body| body.contains(&wanted)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node {index} never saw {active} nodes settled active: {:?}", health_body(self.nodes[index].s3));
    }

    /// Until the layout node `asked` holds satisfies `done` (a minute at most).
    async fn wait_layout(&self, asked: usize, done: impl Fn(&[String]) -> bool) // A
    {
        let mut states = Vec::new();
        for _ in 0..300 {
            states = self.layout_states(asked);
            if done(&states) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the layout never settled: {states:?}\n{}", self.log(asked));
    }

    /// Start node `index`; if it exits at once (a port found free was taken
    /// by another test meanwhile), start it again on other ports.
    async fn spawn_on_free_ports(&mut self, index: usize) // A
    {
        for _ in 0..3 {
            self.spawn(index);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let exited = self.nodes[index].child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if !exited {
                return;
            }
            eprintln!("node {index} exited at start, trying other ports:\n{}", self.log(index));
            self.nodes[index].child = None;
            self.nodes[index].s3 = free_address();
            self.nodes[index].cluster = free_address();
        }
        panic!("node {index} would not start:\n{}", self.log(index));
    }

    fn spawn(&mut self, index: usize) // A
    {
        let seed = self.nodes[0].cluster;
        let node = &mut self.nodes[index];
        let log = std::fs::File::create(node.dir.path().with_extension("log")).expect("log file");
        let mut command = Command::new(ouroboros_binary());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(node.dir.path())
            .arg("--listen")
            .arg(node.s3.to_string())
            .arg("--cluster-listen")
            .arg(node.cluster.to_string())
            .env("OUROBOROS_CLUSTER_SECRET", &self.secret)
            .env("OUROBOROS_DURABILITY", "flush")
            .env("OUROBOROS_SYNC_INTERVAL_SECS", "2")
            .env("OUROBOROS_LOG", "info,s3s::ops=off,ouroboros_gateway::server=warn")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if index > 0 {
            command.arg("--join").arg(seed.to_string());
        }
        if let Some(zone) = &node.zone {
            command.env("OUROBOROS_ZONE", zone);
        }
        if node.storage_only {
            command.arg("--storage-only");
        } else {
            command
                .env("OUROBOROS_DATA_KEY", &self.data_key)
                .env("OUROBOROS_ACCESS_KEY_ID", &self.access_key)
                .env("OUROBOROS_SECRET_ACCESS_KEY", &self.secret_key);
        }
        node.child = Some(command.spawn().expect("start ouroboros"));
    }

    /// SIGKILL: no goodbye, no flush beyond what was acknowledged.
    fn kill(&mut self, index: usize) // A
    {
        if let Some(mut child) = self.nodes[index].child.take() {
            child.kill().expect("kill");
            child.wait().expect("reap");
        }
    }

    fn log(&self, index: usize) -> String // A
    {
        std::fs::read_to_string(self.nodes[index].dir.path().with_extension("log")).unwrap_or_default()
    }

    /// Until node `index` answers its health check seeing `alive` nodes alive.
    async fn wait_alive(&mut self, index: usize, alive: usize) // A
    {
        for _ in 0..600 {
            if let Some(child) = self.nodes[index].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("node {index} exited ({status}):\n{}", self.log(index));
                }
            }
            if health(self.nodes[index].s3).is_some_and(|h| h.alive == alive && h.status == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node {index} never saw {alive} nodes alive: {:?}\n{}", health(self.nodes[index].s3), self.log(index));
    }

    /// `ouroboros status --json` asked of node `asked`, signed with the
    /// cluster's access key and `secret`.
    fn status(&self, asked: usize, secret: &str) -> std::process::Output // A
    {
        Command::new(ouroboros_binary())
            .args(["status", "--json", "--endpoint", &format!("http://{}", self.nodes[asked].s3)])
            .env("OUROBOROS_ACCESS_KEY_ID", &self.access_key)
            .env("OUROBOROS_SECRET_ACCESS_KEY", secret)
            .output()
            .expect("run ouroboros status")
    }

    /// Every node's id, by node index, from `ouroboros status --json`
    /// asked of node `asked`.
    fn member_ids(&self, asked: usize) -> Vec<Hash> // A
    {
        let out = self.status(asked, &self.secret_key);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
        let members = report["members"].as_array().expect("members").clone();
        self.nodes
            .iter()
            .map(|node| {
                let member = members.iter().find(|m| m["addr"] == node.cluster.to_string()).expect("every node listed");
                member["id"].as_str().and_then(|id| id.parse().ok()).expect("a hex node id")
            })
            .collect()
    }

    fn client(&self, index: usize) -> Client // A
    {
        sdk_client(self.nodes[index].s3, &self.access_key, &self.secret_key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_every_request_from_any_node() // A
{
    let cluster = TestCluster::start(3).await;
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    clients[0].create_bucket().bucket("spread").send().await.unwrap();

    // Each node writes; both others read every byte back.
    let mut objects = Vec::new();
    for (writer, size) in [(0, 1024), (1, 3 << 20), (2, 9 << 20)] {
        let key = format!("from-{writer}");
        let body = random_bytes(size, writer as u64 + 40);
        put_bytes(&clients[writer], "spread", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    for (key, body) in &objects {
        for (reader, client) in clients.iter().enumerate() {
            let got = get_bytes(client, "spread", key).await;
            assert!(got == *body, "{key} read through node {reader} differs ({} bytes)", got.len());
        }
    }

    // Listings are the same, and complete, from every node.
    for client in &clients {
        let listed = client.list_objects_v2().bucket("spread").send().await.unwrap();
        let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, ["from-0", "from-1", "from-2"]);
    }

    // Versions written through different nodes list in order from a third.
    enable_versioning(&clients[0], "spread", BucketVersioningStatus::Enabled).await;
    let first = put_text(&clients[1], "spread", "doc", "one").await.unwrap();
    let second = put_text(&clients[2], "spread", "doc", "two").await.unwrap();
    let versions = clients[0].list_object_versions().bucket("spread").prefix("doc").send().await.unwrap();
    let ids: Vec<&str> = versions.versions().iter().filter_map(|v| v.version_id()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    let old = clients[0].get_object().bucket("spread").key("doc").version_id(&first).send().await.unwrap();
    assert_eq!(old.body.collect().await.unwrap().into_bytes().as_ref(), b"one");

    // A multipart upload started on one node, fed through another, completed on a third.
    let upload = clients[0].create_multipart_upload().bucket("spread").key("parts").send().await.unwrap();
    let upload_id = upload.upload_id().unwrap().to_string();
    let parts = [random_bytes(5 << 20, 50), random_bytes(1 << 20, 51)];
    let mut completed = Vec::new();
    for (number, part) in parts.iter().enumerate() {
        let number = number as i32 + 1;
        let out = clients[1]
            .upload_part()
            .bucket("spread")
            .key("parts")
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap();
        completed
            .push(aws_sdk_s3::types::CompletedPart::builder().part_number(number).e_tag(out.e_tag().unwrap()).build());
    }
    clients[2]
        .complete_multipart_upload()
        .bucket("spread")
        .key("parts")
        .upload_id(&upload_id)
        .multipart_upload(aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await
        .unwrap();
    assert!(get_bytes(&clients[0], "spread", "parts").await == parts.concat(), "multipart object differs");

    // A delete through one node holds on the others.
    clients[2].delete_object().bucket("spread").key("from-0").send().await.unwrap();
    for client in &clients {
        let gone = client.get_object().bucket("spread").key("from-0").send().await;
        assert_eq!(code(gone), "NoSuchKey");
    }

    // The metrics say what crossed between nodes.
    let (status, text) = raw_http(
        cluster.nodes[0].s3,
        b"GET /_ouroboros/metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    let value = |name: &str| -> u64 {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    assert_eq!(value("ouroboros_members"), 3);
    assert_eq!(value("ouroboros_members_alive"), 3);
    // Node 0 wrote a 1 KiB object and read 12 MiB written by the others.
    assert!(value("ouroboros_cluster_received_bytes_total") > 8 << 20, "{text}");
    assert_eq!(value("ouroboros_cluster_refused_handshakes_total"), 0);

    // `ouroboros status`, signed with the access key, lists all three as
    // node 1 sees them; a wrong secret is refused.
    let status = |secret: &str| cluster.status(1, secret);
    let out = status(&cluster.secret_key);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    let members = report["members"].as_array().expect("members");
    let mut addrs: Vec<String> = members.iter().map(|m| m["addr"].as_str().unwrap_or("").to_string()).collect();
    addrs.sort();
    let mut expected: Vec<String> = cluster.nodes.iter().map(|n| n.cluster.to_string()).collect();
    expected.sort();
    assert_eq!(addrs, expected);
    for member in members {
        assert_eq!(member["state"], "alive", "{member}");
        assert_eq!(member["role"], "gateway", "{member}");
        assert_eq!(member["id"].as_str().map(str::len), Some(64), "{member}");
        // Every node holds slices of the megabyte objects written above.
        assert!(member["slice_bytes"].as_u64().is_some_and(|b| b > 1 << 20), "{member}");
    }
    let refused = status("not-the-secret");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"), "{}", String::from_utf8_lossy(&refused.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_rejoins_under_its_id() // A
{
    let mut cluster = TestCluster::start(3).await;
    let first = cluster.client(0);
    first.create_bucket().bucket("survive").send().await.unwrap();
    let mut objects = Vec::new();
    for n in 0..12usize {
        let body = random_bytes(if n.is_multiple_of(3) { 2 << 20 } else { 10_000 + n * 100 }, 100 + n as u64);
        let key = format!("object-{n:02}");
        put_bytes(&cluster.client(n % 3), "survive", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    let id_before = health(cluster.nodes[2].s3).expect("health").node;

    cluster.kill(2);
    // Every acknowledged object reads through both survivors.
    for survivor in [0, 1] {
        let client = cluster.client(survivor);
        for (key, body) in &objects {
            assert!(get_bytes(&client, "survive", key).await == *body, "{key} through node {survivor}");
        }
    }
    // New writes succeed, and listings are complete.
    for n in 12..16 {
        let body = random_bytes(50_000, 100 + n as u64);
        let key = format!("object-{n:02}");
        put_bytes(&cluster.client(n % 2), "survive", &key, &body).await.unwrap_or_else(|e| panic!("node down: {e}"));
        objects.push((key, body));
    }
    let listed = cluster.client(1).list_objects_v2().bucket("survive").send().await.unwrap();
    assert_eq!(listed.contents().len(), objects.len(), "a listing with a node down is incomplete");

    // Restarted from its data directory: the same id, seen alive by all,
    // and it serves everything, including what was written while it was down.
    cluster.spawn(2);
    for index in 0..3 {
        cluster.wait_alive(index, 3).await;
    }
    let after = health(cluster.nodes[2].s3).expect("health");
    assert_eq!(after.node, id_before, "the node came back under another id");
    assert_eq!(after.members, 3);
    let back = cluster.client(2);
    for (key, body) in &objects {
        assert!(get_bytes(&back, "survive", key).await == *body, "{key} through the restarted node");
    }
}

/// SIGSTOP or SIGCONT to a node: it stops answering without closing a
/// single connection, as a hung machine or `docker pause` does.
fn signal(cluster: &TestCluster, index: usize, signal: libc::c_int) // A
{
    let pid = cluster.nodes[index].child.as_ref().expect("node is running").id();
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "signal {signal} to node {index}");
}

/// The SDK with a whole-operation timeout, as a user's tool has one.
fn impatient_client(cluster: &TestCluster, index: usize, timeout: Duration) -> Client // A
{
    let base = cluster.client(index);
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder().operation_timeout(timeout).build();
    Client::from_conf(base.config().to_builder().timeout_config(timeouts).build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_holds_up_no_client_of_the_others_and_serves_after_it_resumes() // A
{
    let mut cluster = TestCluster::start(3).await;
    cluster.client(0).create_bucket().bucket("paused").send().await.unwrap();
    let clients = [0, 1].map(|i| impatient_client(&cluster, i, Duration::from_secs(15)));
    let mut objects = Vec::new();
    let mut write_and_cross_read = |n: usize| {
        let (writer, reader) = (clients[n % 2].clone(), clients[(n + 1) % 2].clone());
        let body = random_bytes(if n.is_multiple_of(4) { 3 << 20 } else { 20_000 }, 300 + n as u64);
        let key = format!("object-{n:02}");
        objects.push((key.clone(), body.clone()));
        async move {
            put_bytes(&writer, "paused", &key, &body).await.unwrap_or_else(|e| panic!("node paused: {e}"));
            let got = reader.get_object().bucket("paused").key(&key).send().await;
            let got = got.unwrap_or_else(|e| panic!("GET {key} with a node paused: {e:?}"));
            assert!(got.body.collect().await.unwrap().into_bytes() == body, "{key} read back differs");
        }
    };
    write_and_cross_read(0).await;

    // Paused: first only suspected, then seen down. Requests through the
    // other two keep succeeding within the client's timeout all along.
    signal(&cluster, 2, libc::SIGSTOP);
    for n in 1..6 {
        write_and_cross_read(n).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster.wait_alive(0, 2).await;
    for n in 6..10 {
        write_and_cross_read(n).await;
    }
    let listed = clients[1].list_objects_v2().bucket("paused").send().await.unwrap();
    assert_eq!(listed.contents().len(), 10);

    // Resumed: alive again everywhere, and it serves what was written meanwhile.
    signal(&cluster, 2, libc::SIGCONT);
    for index in 0..3 {
        cluster.wait_alive(index, 3).await;
    }
    let back = impatient_client(&cluster, 2, Duration::from_secs(15));
    for (key, body) in &objects {
        assert!(get_bytes(&back, "paused", key).await == *body, "{key} through the resumed node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_at_4_2_read_everything_with_any_two_killed() // A
{
    let mut cluster = TestCluster::start(6).await;
    let first = cluster.client(0);
    first.create_bucket().bucket("wide").send().await.unwrap();
    let mut objects = Vec::new();
    for n in 0..12usize {
        let body = random_bytes(if n.is_multiple_of(3) { 6 << 20 } else { 30_000 + n }, 500 + n as u64);
        let key = format!("object-{n:02}");
        let client = cluster.client(n % 6);
        put_bytes(&client, "wide", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    // Two nodes other than the first, drawn anew each run (printed, so a
    // failure can be replayed by hand).
    let mut victims: Vec<usize> = (1..6).collect();
    let draw = rand::random::<usize>();
    let one = victims.remove(draw % victims.len());
    let two = victims.remove((draw / 7) % victims.len());
    println!("killing nodes {one} and {two}");
    cluster.kill(one);
    cluster.kill(two);
    for reader in (0..6).filter(|i| *i != one && *i != two) {
        let client = cluster.client(reader);
        for (key, body) in &objects {
            assert!(
                get_bytes(&client, "wide", key).await == *body,
                "{key} through node {reader} (killed {one}, {two})"
            );
        }
        let listed = client.list_objects_v2().bucket("wide").send().await.unwrap();
        assert_eq!(listed.contents().len(), 12, "listing through node {reader}");
    }
    // Metadata is kept on five of the six with a quorum of three: writes go
    // on with two nodes lost, and read back through every survivor.
    let survivors: Vec<usize> = (0..6).filter(|i| *i != one && *i != two).collect();
    for (n, writer) in survivors.iter().enumerate() {
        let body = random_bytes(if n.is_multiple_of(2) { 5 << 20 } else { 40_000 }, 600 + n as u64);
        let key = format!("after-{n}");
        let put = put_bytes(&cluster.client(*writer), "wide", &key, &body).await;
        put.unwrap_or_else(|e| panic!("through node {writer} (killed {one}, {two}): {e}"));
        objects.push((key, body));
    }
    for reader in &survivors {
        let client = cluster.client(*reader);
        for (key, body) in &objects[12..] {
            assert!(
                get_bytes(&client, "wide", key).await == *body,
                "{key} through node {reader} (killed {one}, {two})"
            );
        }
    }

    // A third loss leaves some metadata partitions without a read quorum
    // (three of their five replicas): their keys answer 503, the keys of
    // the other partitions still answer, and a listing, which needs every
    // partition, answers 503. The third node is one that splits the keys.
    let ids = cluster.member_ids(0);
    let readable = |dead: &[usize], key: &str| {
        let replicas = placement::partition_replicas(placement::partition_of("wide", key), &placement::alike(&ids));
        let alive = replicas.iter().filter(|id| !dead.iter().any(|d| ids[*d] == **id)).count();
        alive >= placement::read_quorum(replicas.len())
    };
    let keys: Vec<&str> = objects.iter().map(|(key, _)| key.as_str()).collect();
    let splits = |third: &usize| {
        let served = keys.iter().filter(|key| readable(&[one, two, *third], key)).count();
        served > 0 && served < keys.len()
    };
    let Some(three) = survivors.iter().copied().filter(|i| *i != 0).find(splits) else {
        println!("no third node splits these {} keys; skipping the partition check", keys.len());
        return;
    };
    println!("killing node {three} too");
    cluster.kill(three);
    let client = cluster.client(0);
    for key in &keys {
        let head = client.head_object().bucket("wide").key(*key).send().await;
        if readable(&[one, two, three], key) {
            head.unwrap_or_else(|e| panic!("{key} has a read quorum (killed {one}, {two}, {three}): {e:?}"));
        } else {
            let status = head.err().and_then(|e| e.raw_response().map(|r| r.status().as_u16()));
            assert_eq!(status, Some(503), "{key} has no read quorum (killed {one}, {two}, {three})");
        }
    }
    let listing = client.list_objects_v2().bucket("wide").send().await;
    assert_eq!(code(listing), "ServiceUnavailable", "a listing needs every partition");
    assert!(health(cluster.nodes[0].s3).is_some(), "the node still answers its health check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_bucket_changes_catches_up_when_it_returns() // A
{
    let mut cluster = TestCluster::start(3).await;
    cluster.client(0).create_bucket().bucket("before").send().await.unwrap();
    cluster.kill(2);
    // While node 2 is away: a new bucket, and versioning turned on for the old one.
    cluster.client(0).create_bucket().bucket("during").send().await.unwrap();
    enable_versioning(&cluster.client(1), "before", BucketVersioningStatus::Enabled).await;

    cluster.spawn(2);
    for index in 0..3 {
        cluster.wait_alive(index, 3).await;
    }
    let back = cluster.client(2);
    // It serves the bucket made while it was away...
    put_text(&back, "during", "k", "made while away").await;
    assert_eq!(get_bytes(&back, "during", "k").await, b"made while away");
    // ...and keeps versions in the bucket whose versioning changed: two PUTs
    // through it leave two versions, not one overwritten null version.
    let mut synced = false;
    for _ in 0..50 {
        let status = back.get_bucket_versioning().bucket("before").send().await.unwrap();
        if status.status() == Some(&BucketVersioningStatus::Enabled) {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(synced, "the returned node never learned that versioning was enabled");
    put_text(&back, "before", "doc", "one").await;
    put_text(&back, "before", "doc", "two").await;
    let versions = cluster.client(0).list_object_versions().bucket("before").prefix("doc").send().await.unwrap();
    assert_eq!(versions.versions().len(), 2, "a PUT through the returned node overwrote a version");
}

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> // A
{
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool // A
{
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_only_node_holds_ciphertext_only_and_refuses_s3() // A
{
    let mut cluster = TestCluster::start_with(3, &[2]).await;
    let refused = cluster.client(2).list_buckets().send().await;
    assert_eq!(code(refused), "AccessDenied");

    let gateway = cluster.client(0);
    gateway.create_bucket().bucket("sealed").send().await.unwrap();
    let text = b"OUROBOROS PLAINTEXT MARKER, never on a storage node. ".repeat(40_000);
    let noise = random_bytes(3 << 20, 700);
    for (key, body) in [("text", &text), ("noise", &noise)] {
        put_bytes(&gateway, "sealed", key, body).await.unwrap();
    }
    // With the other gateway gone, every chunk needs the storage node's slices.
    cluster.kill(1);
    assert!(get_bytes(&gateway, "sealed", "text").await == text);
    assert!(get_bytes(&gateway, "sealed", "noise").await == noise);

    cluster.kill(2);
    let identity = std::fs::read_to_string(cluster.nodes[2].dir.path().join("identity.toml")).unwrap();
    assert!(!identity.contains("data_secret"), "{identity}");
    let data_key = hex::decode(&cluster.data_key).unwrap();
    let files = files_under(cluster.nodes[2].dir.path());
    let stored: usize = files.iter().map(|(_, bytes)| bytes.len()).sum();
    assert!(stored > 1 << 20, "the storage node holds only {stored} bytes");
    for (path, bytes) in &files {
        let shown = path.display();
        assert!(!contains(bytes, cluster.data_key.as_bytes()) && !contains(bytes, &data_key), "data key in {shown}");
        assert!(!contains(bytes, b"OUROBOROS PLAINTEXT MARKER"), "plaintext in {shown}");
        assert!(!contains(bytes, &noise[1 << 20..(1 << 20) + 64]), "plaintext in {shown}");
    }
}

/// An access key made on one node (`ouroboros key create` in its data
/// directory) works through every node, one that was down meanwhile too:
/// that node publishes it, its secret sealed to the data key, and another
/// node takes it in when a request names it. A storage-only node keeps the record, never the secret in the
/// clear, and a key no node made is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_key_made_on_one_node_works_through_every_node() // A
{
    let mut cluster = TestCluster::start_with(3, &[2]).await;
    // Node 1 is down while the key is made and published.
    cluster.kill(1);
    let out = Command::new(ouroboros_binary())
        .args(["key", "create", "ci-user", "--data-dir"])
        .arg(cluster.nodes[0].dir.path())
        .output()
        .expect("run ouroboros key create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |label: &str| -> String {
        let line = printed.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label} in {printed}"));
        line[label.len()..].trim().to_string()
    };
    let (id, secret) = (field("access key id:"), field("secret access key:"));

    sdk_client(cluster.nodes[0].s3, &id, &secret).create_bucket().bucket("made-on-0").send().await.unwrap();
    cluster.spawn(1);
    cluster.wait_alive(1, 3).await;
    let elsewhere = sdk_client(cluster.nodes[1].s3, &id, &secret);
    let mut answer = elsewhere.list_buckets().send().await;
    for _ in 0..50 {
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = elsewhere.list_buckets().send().await;
    }
    let buckets = answer.unwrap_or_else(|e| panic!("the key made on node 0 is refused by node 1: {e:?}"));
    assert!(buckets.buckets().iter().any(|b| b.name() == Some("made-on-0")));

    for (path, bytes) in files_under(cluster.nodes[2].dir.path()) {
        assert!(!contains(&bytes, secret.as_bytes()), "{} holds the secret in the clear", path.display());
    }
    let stranger = sdk_client(cluster.nodes[1].s3, "OBNOSUCHKEY000000000", &"x".repeat(40));
    assert_eq!(code(stranger.list_buckets().send().await), "InvalidAccessKeyId");

    // Deleted on node 0 while node 1 is down: node 0 refuses it at once,
    // and node 1 once it is back, though it held the key when it went down.
    cluster.kill(1);
    let out = Command::new(ouroboros_binary())
        .args(["key", "delete", "ci-user", "--data-dir"])
        .arg(cluster.nodes[0].dir.path())
        .output()
        .expect("run ouroboros key delete");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused_by = |s3: SocketAddr| {
        let client = sdk_client(s3, &id, &secret);
        async move {
            for _ in 0..75 {
                if let Err(error) = client.list_buckets().send().await {
                    if error.code() == Some("InvalidAccessKeyId") {
                        return true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            false
        }
    };
    assert!(refused_by(cluster.nodes[0].s3).await, "node 0 still accepts the key deleted in its keys file");
    cluster.spawn(1);
    cluster.wait_alive(1, 3).await;
    assert!(refused_by(cluster.nodes[1].s3).await, "node 1 still accepts a key deleted while it was down");
}

/// Issue 17: a node that was down while objects were written, a version
/// was forgotten and a delete marker was written catches up with nothing
/// read through it first: the others kept what it missed as hints and hand
/// them over once it is back, and anti-entropy checks every partition.
/// Once every hint is handed over and every node's last round found its
/// partitions in step, the returning node serves everything, the forgotten
/// version stays forgotten, and its store holds exactly what the others
/// hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_node_catches_up_from_hints_and_anti_entropy_and_deletes_stay_deleted() // A
{
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client(0);
    client.create_bucket().bucket("healing").send().await.unwrap();
    enable_versioning(&client, "healing", BucketVersioningStatus::Enabled).await;
    let doomed = put_text(&client, "healing", "doomed", "forgotten while node 2 is away").await.unwrap();
    let kept = put_text(&client, "healing", "doomed", "the version that stays").await.unwrap();
    put_text(&client, "healing", "marked", "hidden by a marker while node 2 is away").await.unwrap();

    cluster.kill(2);
    let mut written = Vec::new();
    for i in 0..30u64 {
        let (key, body) = (format!("while-away/{i}"), random_bytes(1000 + 37 * i as usize, 600 + i));
        put_bytes(&cluster.client((i % 2) as usize), "healing", &key, &body).await.unwrap();
        written.push((key, body));
    }
    client.delete_object().bucket("healing").key("doomed").version_id(&doomed).send().await.unwrap();
    client.delete_object().bucket("healing").key("marked").send().await.unwrap();
    // The two nodes up keep every write node 2 missed: a blob per object,
    // the forget's tombstone and the marker.
    let hints = |cluster: &TestCluster| cluster.status_json(0)["repair"]["hints"].as_u64();
    let missed = hints(&cluster).unwrap_or(0);
    assert!(missed >= 32, "{missed} writes kept for node 2 while it was down");
    cluster.spawn(2);
    cluster.wait_alive(2, 3).await;
    let mut left = Some(missed);
    for _ in 0..40 {
        left = hints(&cluster);
        if left == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(left, Some(0), "hints never handed over to the returning node");

    // Every node has had a round with node 2 back (rounds every 2 s), and
    // then each reports its partitions in step.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut unsynced = None;
    for _ in 0..60 {
        let out = cluster.status(0, &cluster.secret_key);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
        let per_node: Vec<Option<u64>> =
            report["members"].as_array().expect("members").iter().map(|m| m["partitions_unsynced"].as_u64()).collect();
        if per_node.iter().all(|n| *n == Some(0)) && report["repair"]["partitions_unsynced"] == 0 {
            unsynced = None;
            break;
        }
        unsynced = Some(per_node);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(unsynced, None, "replicas never reported their partitions in step");

    let back = cluster.client(2);
    for (key, body) in &written {
        assert!(get_bytes(&back, "healing", key).await == *body, "{key} differs through the returning node");
    }
    let forgotten = back.get_object().bucket("healing").key("doomed").version_id(&doomed).send().await;
    assert_eq!(code(forgotten), "NoSuchVersion");
    let versions = back.list_object_versions().bucket("healing").prefix("doomed").send().await.unwrap();
    let ids: Vec<&str> = versions.versions().iter().filter_map(|v| v.version_id()).collect();
    assert_eq!(ids, [kept.as_str()], "the forgotten version is listed again");
    assert_eq!(code(back.get_object().bucket("healing").key("marked").send().await), "NoSuchKey");

    // Stopped, the three stores hold the same metadata, partition by partition.
    for index in 0..3 {
        cluster.kill(index);
    }
    let all: Vec<u8> = (0..=u8::MAX).collect();
    let roots: Vec<_> = cluster
        .nodes
        .iter()
        .map(|node| {
            let store = LocalStore::open(&node.dir.path().join("store"), Durability::Flush)
                .expect("open a stopped node's store");
            store.sync_roots(&all).expect("sync roots")
        })
        .collect();
    for (index, node_roots) in roots.iter().enumerate().skip(1) {
        let differing = node_roots.iter().zip(&roots[0]).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "node {index} differs from node 0 in {differing} partitions");
    }
}

/// Issue 17: a storage-only node that takes slices for a gateway that is
/// down keeps a hint with each, and takes them home itself once that node
/// is back (it runs the hand-off with no data key). Three nodes at 2+1,
/// node 2 storage-only: while node 1 is down, node 1's slice of a chunk
/// goes to node 0 or node 2, which then holds two of the chunk's three.
/// Once the hints are done, losing node 2 leaves every chunk two slices,
/// so everything reads (no repair pass runs in the test's time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_only_node_takes_home_the_slices_it_took_for_a_node_away() // A
{
    let mut cluster = TestCluster::start_with(3, &[2]).await;
    let client = cluster.client(0);
    client.create_bucket().bucket("handed").send().await.unwrap();
    cluster.kill(1);
    let mut written = Vec::new();
    for i in 0..20u64 {
        let (key, body) = (format!("away/{i}"), random_bytes(200_000 + 1000 * i as usize, 900 + i));
        put_bytes(&client, "handed", &key, &body).await.unwrap();
        written.push((key, body));
    }
    let addr = cluster.nodes[2].cluster.to_string();
    let hints_on_2 = |cluster: &TestCluster| {
        let report = cluster.status_json(0);
        let members = report["members"].as_array().cloned().unwrap_or_default();
        members.iter().find(|m| m["addr"] == addr.as_str()).and_then(|m| m["hints"].as_u64())
    };
    let held = hints_on_2(&cluster).unwrap_or(0);
    assert!(held > 0, "the storage-only node keeps no hint for the slices it took");

    cluster.spawn(1);
    cluster.wait_alive(1, 3).await;
    let mut left = (hints_on_2(&cluster), cluster.status_json(0)["repair"]["hints"].as_u64());
    for _ in 0..80 {
        if left == (Some(0), Some(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        left = (hints_on_2(&cluster), cluster.status_json(0)["repair"]["hints"].as_u64());
    }
    assert_eq!(left, (Some(0), Some(0)), "hints left (on node 2, everywhere) of {held} on node 2");

    cluster.kill(2);
    for (key, body) in &written {
        assert!(get_bytes(&client, "handed", key).await == *body, "{key} with the storage-only node down");
    }
}

/// Issue 16: garbage collection goes on while a node is down. An object
/// deleted while node 2 is away has its slices freed on the other two; once
/// node 2 is back with its manifests of the freed chunks, the same bytes
/// written again are stored again and read back through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_collected_while_a_node_is_down() // A
{
    let tuned = [("OUROBOROS_MAINTENANCE_INTERVAL_SECS", "1"), ("OUROBOROS_GC_GRACE_SECS", "2")];
    let mut cluster = TestCluster::start_tuned(3, &[], &tuned).await;
    let client = cluster.client(0);
    client.create_bucket().bucket("collected").send().await.unwrap();
    let body = random_bytes(6 << 20, 700);
    put_bytes(&client, "collected", "doomed", &body).await.unwrap();
    // Slice bytes on nodes 0 and 1, as `ouroboros status --json` reports them.
    let stored = |cluster: &TestCluster| -> u64 {
        let out = cluster.status(0, &cluster.secret_key);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
        let members = report["members"].as_array().expect("members").clone();
        cluster.nodes[..2]
            .iter()
            .map(|node| {
                let member = members.iter().find(|m| m["addr"] == node.cluster.to_string()).expect("listed");
                member["slice_bytes"].as_u64().expect("a live node's slice bytes")
            })
            .sum()
    };
    let before = stored(&cluster);
    assert!(before >= body.len() as u64, "{before} bytes stored for a {} byte object", body.len());

    cluster.kill(2);
    client.delete_object().bucket("collected").key("doomed").send().await.unwrap();
    let mut after = before;
    for _ in 0..80 {
        after = stored(&cluster);
        if before - after >= body.len() as u64 * 9 / 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(before - after >= body.len() as u64 * 9 / 10, "only {} of {before} bytes freed", before - after);

    cluster.spawn(2);
    cluster.wait_alive(2, 3).await;
    put_bytes(&cluster.client(1), "collected", "again", &body).await.unwrap();
    for index in 0..3 {
        assert!(get_bytes(&cluster.client(index), "collected", "again").await == body, "read through node {index}");
    }
}

impl TestCluster {
    /// `ouroboros node ACTION ID` against node `asked`.
    fn node_command(&self, asked: usize, action: &str, id: &str) -> std::process::Output // A
    {
        self.admin_command(asked, &["node", action, id])
    }

    /// `ouroboros ARGS... --endpoint` node `asked`, with the root key.
    fn admin_command(&self, asked: usize, args: &[&str]) -> std::process::Output // A
    {
        Command::new(ouroboros_binary())
            .args(args)
            .args(["--endpoint", &format!("http://{}", self.nodes[asked].s3)])
            .env("OUROBOROS_ACCESS_KEY_ID", &self.access_key)
            .env("OUROBOROS_SECRET_ACCESS_KEY", &self.secret_key)
            .output()
            .expect("run ouroboros")
    }

    /// Run `ouroboros repair scrub` through node 0 and wait until every
    /// node has finished a scrub since; each node's last scrub, by index.
    async fn scrub_everywhere(&self, ids: &[Hash]) -> Vec<serde_json::Value> // A
    {
        let finished = |report: &serde_json::Value| -> Vec<serde_json::Value> {
            let members = report["members"].as_array().cloned().unwrap_or_default();
            ids.iter()
                .map(|id| {
                    let member = members.iter().find(|m| m["id"] == id.to_hex());
                    member.map_or(serde_json::Value::Null, |m| m["last_scrub"].clone())
                })
                .collect()
        };
        let before = finished(&self.status_json(0));
        let out = self.admin_command(0, &["repair", "scrub"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(said.matches("scrub started").count(), ids.len(), "{said}");
        for _ in 0..120 {
            let now = finished(&self.status_json(0));
            if now
                .iter()
                .zip(&before)
                .all(|(now, before)| now["finished_ms"] != before["finished_ms"] && !now.is_null())
            {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the nodes never finished the scrub asked for: {}", self.status_json(0));
    }

    /// `ouroboros status --json` of node `asked`, parsed.
    fn status_json(&self, asked: usize) -> serde_json::Value // A
    {
        let out = self.status(asked, &self.secret_key);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_over_its_data_and_a_dead_node_is_marked_gone() // A
{
    let env = [("OUROBOROS_DEAD_AFTER_SECS", "3"), ("OUROBOROS_MAINTENANCE_INTERVAL_SECS", "2")];
    let mut cluster = TestCluster::start_tuned(4, &[], &env).await;
    let client = cluster.client(0);
    client.create_bucket().bucket("moving").send().await.unwrap();
    let mut objects = Vec::new();
    for n in 0..12usize {
        let body = random_bytes(if n.is_multiple_of(3) { 6 << 20 } else { 50_000 + n }, 700 + n as u64);
        let key = format!("object-{n:02}");
        put_bytes(&cluster.client(n % 4), "moving", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    let ids = cluster.member_ids(0);

    // Refused, naming what is wrong: an id no node has.
    let unknown = cluster.node_command(0, "drain", "ffffffffffff0000");
    assert!(!unknown.status.success(), "draining an unknown node succeeded");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no node of the layout"), "{unknown:?}");

    // Drain node 3 by the short id status shows: it hands its slices over
    // and leaves the layout with no operator step; stopped, it is missed by
    // no read.
    let short = &ids[3].to_hex()[..12];
    let drain = cluster.node_command(0, "drain", short);
    assert!(drain.status.success(), "{}", String::from_utf8_lossy(&drain.stderr));
    assert!(String::from_utf8_lossy(&drain.stdout).contains("draining"), "{drain:?}");
    cluster.wait_layout(1, |states| states.get(3).is_some_and(|s| s == "gone")).await;
    let report = cluster.status_json(0);
    let member = |report: &serde_json::Value, id: &Hash| {
        report["members"].as_array().and_then(|m| m.iter().find(|m| m["id"] == id.to_hex()).cloned())
    };
    let drained = member(&report, &ids[3]).expect("node 3 listed");
    assert_eq!(drained["slices"], 0, "the drained node kept slices: {drained}");
    cluster.kill(3);
    for reader in 0..3 {
        for (key, body) in &objects {
            let got = get_bytes(&cluster.client(reader), "moving", key).await;
            assert!(got == *body, "{key} through node {reader} after node 3 drained");
        }
    }
    let again = cluster.node_command(0, "remove", short);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already gone"), "{again:?}");

    // Node 2 dies: after dead_after (3 s) the others mark it gone on their
    // own, repair rebuilds its slices on the two left (maintenance every
    // 2 s), and everything still reads once replicas are in step.
    cluster.kill(2);
    cluster.wait_layout(0, |states| states.get(2).is_some_and(|s| s == "gone")).await;
    cluster.wait_layout(1, |states| states.get(2).is_some_and(|s| s == "gone")).await;
    let mut healed = false;
    let zero = Some(serde_json::json!(0));
    for _ in 0..60 {
        let report = cluster.status_json(0);
        let field = |name: &str| [0, 1].map(|i| member(&report, &ids[i]).map(|m| m[name].clone()));
        let unsynced = field("partitions_unsynced");
        let degraded = field("chunks_degraded");
        if unsynced.iter().chain(&degraded).all(|n| *n == zero) {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(healed, "the two survivors never reported their partitions in step and no chunk short of slices");
    for reader in 0..2 {
        for (key, body) in &objects {
            let got = get_bytes(&cluster.client(reader), "moving", key).await;
            assert!(got == *body, "{key} through node {reader} after node 2 was lost");
        }
    }
}

/// Flip one byte in every KiB of the slice segments of a node's store: a
/// disk that rotted under a running node (every slice is larger).
fn rot_slices(data_dir: &std::path::Path) // A
{
    use std::os::unix::fs::FileExt;
    for entry in std::fs::read_dir(data_dir.join("store").join("slices")).expect("a slices folder") {
        let path = entry.expect("a segment").path();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("open a segment");
        let len = file.metadata().expect("segment size").len();
        let mut byte = [0u8; 1];
        for at in (512..len).step_by(1024) {
            file.read_exact_at(&mut byte, at).expect("read a segment");
            byte[0] ^= 0x5a;
            file.write_all_at(&byte, at).expect("write a segment");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_finds_a_rotten_disk_and_repair_rebuilds_what_it_held() // A
{
    let env = [("OUROBOROS_MAINTENANCE_INTERVAL_SECS", "2")];
    let cluster = TestCluster::start_tuned(3, &[], &env).await;
    let client = cluster.client(0);
    client.create_bucket().bucket("rot").send().await.unwrap();
    let mut objects = Vec::new();
    for n in 0..8usize {
        let body = random_bytes(if n == 0 { 6 << 20 } else { 40_000 + n * 9_000 }, 1900 + n as u64);
        let key = format!("object-{n}");
        put_bytes(&cluster.client(n % 3), "rot", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    let ids = cluster.member_ids(0);

    // Node 1's disk rots: reads still succeed from the other slices, and a
    // scrub finds every slice it holds damaged and sets them aside.
    rot_slices(cluster.nodes[1].dir.path());
    for (key, body) in &objects {
        assert!(get_bytes(&cluster.client(1), "rot", key).await == *body, "{key} through the rotten node");
    }
    let first = cluster.scrub_everywhere(&ids).await;
    let checked = first[1]["slices_checked"].as_u64().unwrap_or(0);
    assert!(checked > 0 && first[1]["slices_damaged"] == checked, "the rotten node's scrub: {}", first[1]);
    for sound in [0, 2] {
        assert_eq!(first[sound]["slices_damaged"], 0, "node {sound}'s scrub: {}", first[sound]);
    }

    // Repair (every 2 s) rebuilds them: a later scrub finds the same number
    // of slices on node 1, all sound, and everything reads through it.
    let mut healed = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = cluster.scrub_everywhere(&ids).await;
        if again[1]["slices_checked"] == checked && again[1]["slices_damaged"] == 0 {
            healed = Some(again);
            break;
        }
    }
    assert!(healed.is_some(), "node 1 never held its slices sound again: {}", cluster.status_json(0));
    for (key, body) in &objects {
        assert!(get_bytes(&cluster.client(1), "rot", key).await == *body, "{key} after repair");
    }
    let table = cluster.admin_command(0, &["status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("last scrub finished"), "{table:?}");
}

/// The slices every member in `members` reports, or `None` while one of
/// them has not answered, still has slices to move, or still has chunks
/// short of a slice or partitions out of step.
fn settled_slices(report: &serde_json::Value, members: &[Hash]) -> Option<u64> // A
{
    let listed = report["members"].as_array()?;
    let mut total = 0;
    for id in members {
        let member = listed.iter().find(|m| m["id"] == id.to_hex())?;
        let zero = |name: &str| member[name].as_u64() == Some(0);
        let level = zero("slices_to_move") && zero("partitions_unsynced") && zero("chunks_degraded");
        if !level || member["repairing"].is_object() || member["moving"].is_object() {
            return None;
        }
        total += member["slices"].as_u64()?;
    }
    Some(total)
}

impl TestCluster {
    /// Wait until every member of `members` reports everything in place
    /// (as `settled_slices`) and, if `slices` is given, holds that many
    /// slices in all, asking node `asked`; the slices they hold.
    async fn wait_healed(&self, asked: usize, members: &[Hash], slices: Option<u64>, what: &str) -> u64 // A
    {
        for _ in 0..240 {
            let settled = settled_slices(&self.status_json(asked), members);
            if let Some(total) = settled.filter(|total| slices.is_none_or(|wanted| wanted == *total)) {
                return total;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{what}: never healed; last status {}", self.status_json(asked));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_nodes_at_4_2_heal_a_lost_node_with_no_operator_step() // A
{
    let env = [("OUROBOROS_DEAD_AFTER_SECS", "3"), ("OUROBOROS_MAINTENANCE_INTERVAL_SECS", "2")];
    let mut cluster = TestCluster::start_tuned(7, &[], &env).await;
    cluster.client(0).create_bucket().bucket("healing").send().await.unwrap();
    let mut objects = Vec::new();
    for n in 0..10usize {
        let body = random_bytes(if n.is_multiple_of(3) { 5 << 20 } else { 60_000 + n }, 800 + n as u64);
        let key = format!("object-{n:02}");
        put_bytes(&cluster.client(n % 7), "healing", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    let ids = cluster.member_ids(0);
    // Every chunk is coded 4+2: six slices, one on each of six nodes.
    let before = cluster.wait_healed(0, &ids, None, "seven nodes").await;
    assert!(before > 0 && before.is_multiple_of(6), "{before} slices over seven nodes");

    // Node 6 dies for good. After dead_after the others mark it gone on
    // their own, and repair rebuilds what it held on the six left: every
    // chunk again has its six slices on six distinct live nodes, and every
    // partition has its replicas in step.
    cluster.kill(6);
    for asked in 0..6 {
        cluster.wait_layout(asked, |states| states.get(6).is_some_and(|s| s == "gone")).await;
    }
    // Every slice again, each at its home: with six nodes, six distinct.
    cluster.wait_healed(0, &ids[..6], Some(before), "six nodes after node 6 was lost").await;
    for (key, body) in &objects {
        assert!(get_bytes(&cluster.client(1), "healing", key).await == *body, "{key} after node 6 was lost");
    }

    // Two more die at once, the parity of every chunk: everything still
    // reads through each survivor, before and after they are marked gone.
    cluster.kill(4);
    cluster.kill(5);
    for reader in 0..4 {
        for (key, body) in &objects {
            let got = get_bytes(&cluster.client(reader), "healing", key).await;
            assert!(got == *body, "{key} through node {reader} with nodes 4 and 5 just killed");
        }
    }
    cluster.wait_layout(0, |states| states[4..7].iter().all(|s| s == "gone")).await;
    // Four nodes hold the six slices of each chunk, two of them two each.
    cluster.wait_healed(0, &ids[..4], Some(before), "four nodes after nodes 4 and 5 were lost").await;
    for reader in 0..4 {
        for (key, body) in &objects {
            let got = get_bytes(&cluster.client(reader), "healing", key).await;
            assert!(got == *body, "{key} through node {reader} once nodes 4 and 5 are gone");
        }
    }
}

/// Read every object through each client in turn until `stop`; the reads
/// made and a line for each that failed or returned other bytes.
async fn read_until(clients: Vec<Client>, objects: Arc<Vec<(String, Vec<u8>)>>, stop: Arc<AtomicBool>) -> Reads // A
{
    let mut reads = 0;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (reader, client) in clients.iter().enumerate() {
            for (key, body) in objects.iter() {
                let got = client.get_object().bucket("growing").key(key).send().await;
                let got = match got {
                    Ok(out) => out.body.collect().await.map(|b| b.into_bytes().to_vec()).map_err(|e| e.to_string()),
                    Err(error) => Err(format!("{error:?}")),
                };
                reads += 1;
                match got {
                    Ok(got) if got == *body => {}
                    Ok(got) => failures.push(format!("{key} through node {reader}: {} other bytes", got.len())),
                    Err(error) => failures.push(format!("{key} through node {reader}: {error}")),
                }
            }
        }
    }
    (reads, failures)
}

/// Reads made, and the ones that went wrong.
type Reads = (usize, Vec<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_to_six_takes_its_share_while_every_object_reads() // A
{
    // Moves are paced to 1 MiB/s, so the new node is restarted while its
    // share is still arriving.
    let env = [("OUROBOROS_MAINTENANCE_INTERVAL_SECS", "2"), ("OUROBOROS_REPAIR_BYTES_PER_SEC", "1048576")];
    let mut cluster = TestCluster::start_tuned(6, &[], &env).await;
    cluster.client(0).create_bucket().bucket("growing").send().await.unwrap();
    let mut objects = Vec::new();
    for n in 0..12usize {
        let body = random_bytes(if n.is_multiple_of(3) { 6 << 20 } else { 70_000 + n }, 900 + n as u64);
        let key = format!("object-{n:02}");
        put_bytes(&cluster.client(n % 6), "growing", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    let six = cluster.member_ids(0);
    let before = cluster.wait_healed(0, &six, None, "six nodes").await;

    // Clients of the six read every object over and over from here on.
    let objects = Arc::new(objects);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = (0..6).map(|index| cluster.client(index)).collect();
    let readers = tokio::spawn(read_until(clients, objects.clone(), stop.clone()));

    // Node 6 joins with no operator step beyond starting it.
    cluster.nodes.push(ClusterNode {
        dir: tempfile::tempdir().expect("tempdir"),
        s3: free_address(),
        cluster: free_address(),
        child: None,
        storage_only: false,
        zone: None,
    });
    cluster.spawn_on_free_ports(6).await;
    cluster.wait_layout(0, |states| states.len() == 7 && states.iter().all(|s| s == "active")).await;
    let seven = cluster.member_ids(0);
    let held_by = |report: &serde_json::Value, id: &Hash| {
        let members = report["members"].as_array().cloned().unwrap_or_default();
        members.iter().find(|m| m["id"] == id.to_hex()).and_then(|m| m["slices"].as_u64()).unwrap_or(0)
    };
    // Killed and started again as soon as its first slices are in: the
    // move goes on from where it was.
    let mut arrived = 0;
    for _ in 0..600 {
        arrived = held_by(&cluster.status_json(0), &seven[6]);
        if arrived > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(arrived > 0, "nothing moved to the new node: {}", cluster.status_json(0));
    cluster.kill(6);
    cluster.spawn(6);
    cluster.wait_alive(6, 7).await;

    // Each chunk keeps its six slices, now over seven nodes: the old
    // owners dropped what moved, and the new node holds its share.
    cluster.wait_healed(0, &seven, Some(before), "seven nodes after node 6 joined").await;
    let share = held_by(&cluster.status_json(0), &seven[6]);
    assert!(share >= before / 7 / 2, "node 6 holds {share} of {before} slices");
    stop.store(true, Ordering::Relaxed);
    let (reads, failures) = readers.await.expect("readers");
    assert!(failures.is_empty(), "{} of {reads} reads went wrong during the join: {failures:#?}", failures.len());
    assert!(reads >= objects.len() * 6, "only {reads} reads during the join");
    for (key, body) in objects.iter() {
        assert!(get_bytes(&cluster.client(6), "growing", key).await == *body, "{key} through the new node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_nodes_in_three_zones_lose_a_whole_zone_at_once_and_lose_nothing() // A
{
    // Seven nodes at 4+2 in zones of 2, 2 and 3 nodes: each chunk keeps
    // two slices in each zone, and each partition at most two of its five
    // replicas, so losing the largest zone (three nodes, one more than the
    // parity) costs every chunk two slices and every partition two replicas.
    let zones = ["east", "east", "west", "west", "north", "north", "north"];
    let mut cluster = TestCluster::start_placed(7, &[], &[], &zones).await;
    let report = cluster.status_json(0);
    let ids = cluster.member_ids(0);
    for (id, zone) in ids.iter().zip(zones) {
        let members = report["members"].as_array().expect("members");
        let member = members.iter().find(|m| m["id"] == id.to_hex()).expect("listed");
        assert_eq!(member["zone"], zone, "{member}");
        assert_eq!(member["capacity"], 1_000_000_000_000u64, "the default capacity: {member}");
    }
    cluster.client(0).create_bucket().bucket("zoned").send().await.unwrap();
    let mut objects = Vec::new();
    for n in 0..10usize {
        let body = random_bytes(if n.is_multiple_of(3) { 5 << 20 } else { 50_000 + n }, 900 + n as u64);
        let key = format!("object-{n:02}");
        put_bytes(&cluster.client(n % 4), "zoned", &key, &body).await.unwrap();
        objects.push((key, body));
    }
    let total = cluster.wait_healed(0, &ids, None, "seven nodes in three zones").await;
    assert!(total > 0 && total.is_multiple_of(6), "{total} slices");
    // Zone north holds a third of all slices: two of each chunk's six.
    let report = cluster.status_json(0);
    let members = report["members"].as_array().expect("members");
    let north: u64 = ids[4..]
        .iter()
        .map(|id| members.iter().find(|m| m["id"] == id.to_hex()).and_then(|m| m["slices"].as_u64()).expect("slices"))
        .sum();
    assert_eq!(north * 3, total, "zone north holds {north} of {total} slices, not two of each chunk's six");

    for node in 4..7 {
        cluster.kill(node);
    }
    for reader in 0..4 {
        let client = cluster.client(reader);
        for (key, body) in &objects {
            let got = get_bytes(&client, "zoned", key).await;
            assert!(got == *body, "{key} through node {reader} with zone north lost");
        }
        let listed = client.list_objects_v2().bucket("zoned").send().await.unwrap();
        assert_eq!(listed.contents().len(), objects.len(), "listing through node {reader} with zone north lost");
    }
    // The two zones left take new writes, and read them back everywhere.
    let body = random_bytes(3 << 20, 999);
    put_bytes(&cluster.client(1), "zoned", "after", &body).await.unwrap();
    for reader in 0..4 {
        assert!(get_bytes(&cluster.client(reader), "zoned", "after").await == body, "through node {reader}");
    }
}
