//! The real server, started in-process on a loopback port, driven by the
//! official AWS SDK for Rust at its default settings: every S3 operation the
//! gateway offers and its error cases.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, Delete, MetadataDirective, ObjectIdentifier, VersioningConfiguration,
};
use aws_sdk_s3::Client;
use md5::{Digest, Md5};
use ouroboros_core::store::{Durability, LocalStore};
use ouroboros_gateway::config::{Config, Maintenance};
use ouroboros_gateway::connection::ConnectionLimits;
use ouroboros_gateway::credentials;
use ouroboros_gateway::maintenance;
use ouroboros_gateway::node::NodeEngine;
use ouroboros_gateway::s3::Gateway;
use ouroboros_gateway::server::Server;
use rand::{RngCore, SeedableRng};

#[path = "s3_sdk/cluster.rs"]
mod cluster;
#[path = "s3_sdk/front_door.rs"]
mod front_door;

struct TestServer {
    addr: SocketAddr,
    key: credentials::AccessKey,
    store: Arc<LocalStore>,
    engine: NodeEngine,
    dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Self // A
    {
        let dir = tempfile::tempdir().unwrap();
        credentials::create_key(dir.path(), "test").unwrap();
        Self::start_in(dir).await
    }

    /// A server on a data directory that already holds a key named `test`.
    async fn start_in(dir: tempfile::TempDir) -> Self // A
    {
        Self::start_limited(dir, ConnectionLimits::default()).await
    }

    async fn start_limited(dir: tempfile::TempDir, connections: ConnectionLimits) -> Self // A
    {
        let key = credentials::load_keys(dir.path()).unwrap().into_iter().find(|k| k.name == "test").unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            region: "us-east-1".into(),
            domains: vec!["localhost".into()],
            durability: Durability::Flush,
            maintenance: Maintenance::default(),
            connections,
            cluster: Default::default(),
        };
        let server = Server::bind(&config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let store = server.store();
        let engine = server.engine().expect("a gateway node has an engine");
        tokio::spawn(server.run());
        TestServer { addr, key, store, engine, dir }
    }

    /// One maintenance pass now, with no grace period; incomplete uploads
    /// expire at any age if `expire_uploads`.
    async fn maintain(&self, expire_uploads: bool) -> maintenance::PassReport // A
    {
        let gateway = Gateway::new(self.engine.clone(), "us-east-1".into());
        let defaults = Maintenance::default();
        let upload_expiry = if expire_uploads { Duration::ZERO } else { defaults.upload_expiry };
        let now = Maintenance { gc_grace: Duration::ZERO, upload_expiry, ..defaults };
        maintenance::pass(&gateway, now).await
    }

    /// Live slice bytes in the store.
    fn slice_bytes(&self) -> u64 // A
    {
        self.store.slice_usage().unwrap().0
    }

    fn client_with(&self, access_key: &str, secret: &str) -> Client // A
    {
        sdk_client(self.addr, access_key, secret)
    }

    /// A client that names buckets in the host (`bucket.localhost:port`).
    fn virtual_host_client(&self) -> Client // A
    {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .endpoint_url(format!("http://localhost:{}", self.addr.port()))
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                &self.key.access_key_id,
                &self.key.secret_access_key,
                None,
                None,
                "test",
            ))
            .force_path_style(false)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Client::from_conf(config)
    }

    fn client(&self) -> Client // A
    {
        self.client_with(&self.key.access_key_id, &self.key.secret_access_key)
    }
}

/// The SDK at its default settings, path-style, against `addr`.
fn sdk_client(addr: SocketAddr, access_key: &str, secret: &str) -> Client // A
{
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(format!("http://{addr}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, secret, None, None, "test"))
        .force_path_style(true)
        .http_client(http)
        .build();
    Client::from_conf(config)
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> // A
{
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

fn md5_hex(data: &[u8]) -> String // A
{
    hex::encode(Md5::digest(data))
}

/// The S3 error code of a failed SDK call (`HTTP nnn` for bodiless answers).
fn code<O, E: ProvideErrorMetadata + std::fmt::Debug>(result: Result<O, SdkError<E, HttpResponse>>) -> String // A
{
    match result {
        Ok(_) => panic!("expected an error"),
        Err(error) => match error.code() {
            Some(code) => code.to_string(),
            None => match error.raw_response() {
                Some(raw) => format!("HTTP {}", raw.status().as_u16()),
                None => format!("{error:?}"),
            },
        },
    }
}

async fn get_bytes(client: &Client, bucket: &str, key: &str) -> Vec<u8> // A
{
    let out = client.get_object().bucket(bucket).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// A raw HTTP/1.1 exchange: for the health check, presigned URLs and bodies
/// cut short, which the SDK will not send.
fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) // A
{
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_credentials() // A
{
    let server = TestServer::start().await;
    let (status, text) =
        raw_http(server.addr, b"GET /_ouroboros/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{text}");
    assert!(text.to_ascii_lowercase().contains("x-amz-request-id"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_created_listed_and_deleted_with_s3_errors() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(code(s3.create_bucket().bucket("photos").send().await), "BucketAlreadyOwnedByYou");
    assert_eq!(code(s3.create_bucket().bucket("Bad_Name").send().await), "InvalidBucketName");
    s3.head_bucket().bucket("photos").send().await.unwrap();
    let names: Vec<_> =
        s3.list_buckets().send().await.unwrap().buckets().iter().filter_map(|b| b.name.clone()).collect();
    assert_eq!(names, ["photos"]);
    let location = s3.get_bucket_location().bucket("photos").send().await.unwrap();
    assert!(location.location_constraint().is_none_or(|c| c.as_str().is_empty()));

    s3.put_object().bucket("photos").key("cat.jpg").body(ByteStream::from_static(b"meow")).send().await.unwrap();
    assert_eq!(code(s3.delete_bucket().bucket("photos").send().await), "BucketNotEmpty");
    s3.delete_object().bucket("photos").key("cat.jpg").send().await.unwrap();
    s3.delete_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(code(s3.head_bucket().bucket("photos").send().await), "NotFound");
    assert_eq!(code(s3.get_object().bucket("photos").key("cat.jpg").send().await), "NoSuchBucket");
    assert_eq!(code(s3.delete_bucket().bucket("photos").send().await), "NoSuchBucket");
    // A deleted bucket's name can be taken again.
    s3.create_bucket().bucket("photos").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_metadata_and_etag() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("docs").send().await.unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 17, 1);
    let put = s3
        .put_object()
        .bucket("docs")
        .key("report.bin")
        .body(ByteStream::from(data.clone()))
        .content_type("application/x-report")
        .content_encoding("identity")
        .content_disposition("attachment; filename=\"report.bin\"")
        .content_language("en")
        .cache_control("max-age=60")
        .expires(aws_sdk_s3::primitives::DateTime::from_secs(2_000_000_000))
        .metadata("owner", "ann")
        .metadata("Project", "Ouroboros")
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some(format!("\"{}\"", md5_hex(&data)).as_str()));

    let got = s3.get_object().bucket("docs").key("report.bin").send().await.unwrap();
    assert_eq!(got.content_type(), Some("application/x-report"));
    assert_eq!(got.content_encoding(), Some("identity"));
    assert_eq!(got.content_disposition(), Some("attachment; filename=\"report.bin\""));
    assert_eq!(got.content_language(), Some("en"));
    assert_eq!(got.cache_control(), Some("max-age=60"));
    assert_eq!(got.expires_string(), Some("Wed, 18 May 2033 03:33:20 GMT"));
    let metadata = got.metadata().cloned().unwrap_or_default();
    assert_eq!(metadata, HashMap::from([("owner".into(), "ann".into()), ("project".into(), "Ouroboros".into())]));
    assert_eq!(got.content_length(), Some(data.len() as i64));
    assert_eq!(got.e_tag(), put.e_tag());
    assert!(got.body.collect().await.unwrap().into_bytes() == data, "body differs");

    let head = s3.head_object().bucket("docs").key("report.bin").send().await.unwrap();
    assert_eq!(head.content_length(), Some(data.len() as i64));
    assert_eq!(head.e_tag(), put.e_tag());
    assert_eq!(head.metadata().map(|m| m.len()), Some(2));

    // Overwriting replaces what GET sees; deleting makes it NoSuchKey.
    s3.put_object().bucket("docs").key("report.bin").body(ByteStream::from_static(b"v2")).send().await.unwrap();
    assert_eq!(get_bytes(&s3, "docs", "report.bin").await, b"v2");
    s3.delete_object().bucket("docs").key("report.bin").send().await.unwrap();
    assert_eq!(code(s3.get_object().bucket("docs").key("report.bin").send().await), "NoSuchKey");
    assert_eq!(code(s3.head_object().bucket("docs").key("report.bin").send().await), "NotFound");
    // Deleting what is not there succeeds, as in S3.
    s3.delete_object().bucket("docs").key("never-was").send().await.unwrap();
    let empty = s3.put_object().bucket("docs").key("empty").body(ByteStream::from_static(b"")).send().await.unwrap();
    assert_eq!(empty.e_tag(), Some("\"d41d8cd98f00b204e9800998ecf8427e\""));
    assert_eq!(get_bytes(&s3, "docs", "empty").await, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_conditional_reads() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("rng").send().await.unwrap();
    let data = random_bytes(2_000_000, 2);
    let put = s3.put_object().bucket("rng").key("blob").body(ByteStream::from(data.clone())).send().await.unwrap();
    let etag = put.e_tag().unwrap().to_string();
    for (range, expected) in [
        ("bytes=0-9", &data[..10]),
        ("bytes=1999990-", &data[1_999_990..]),
        ("bytes=-7", &data[data.len() - 7..]),
        ("bytes=1000000-1000000", &data[1_000_000..1_000_001]),
        ("bytes=1999995-5000000", &data[1_999_995..]),
    ] {
        let out = s3.get_object().bucket("rng").key("blob").range(range).send().await.unwrap();
        assert!(out.content_range().is_some(), "{range}");
        assert_eq!(out.body.collect().await.unwrap().into_bytes(), expected, "{range}");
    }
    assert_eq!(code(s3.get_object().bucket("rng").key("blob").range("bytes=2000000-").send().await), "InvalidRange");

    assert_eq!(code(s3.get_object().bucket("rng").key("blob").if_match("\"nope\"").send().await), "PreconditionFailed");
    s3.get_object().bucket("rng").key("blob").if_match(&etag).send().await.unwrap();
    assert_eq!(code(s3.get_object().bucket("rng").key("blob").if_none_match(&etag).send().await), "HTTP 304");
    let future = aws_sdk_s3::primitives::DateTime::from_secs(4_000_000_000);
    let past = aws_sdk_s3::primitives::DateTime::from_secs(1_000_000_000);
    assert_eq!(code(s3.get_object().bucket("rng").key("blob").if_modified_since(future).send().await), "HTTP 304");
    s3.get_object().bucket("rng").key("blob").if_modified_since(past).send().await.unwrap();
    assert_eq!(
        code(s3.get_object().bucket("rng").key("blob").if_unmodified_since(past).send().await),
        "PreconditionFailed"
    );
    assert_eq!(code(s3.head_object().bucket("rng").key("blob").if_match("\"nope\"").send().await), "HTTP 412");

    let overridden = s3
        .get_object()
        .bucket("rng")
        .key("blob")
        .response_content_type("text/plain")
        .response_content_disposition("inline")
        .response_cache_control("no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(overridden.content_type(), Some("text/plain"));
    assert_eq!(overridden.content_disposition(), Some("inline"));
    assert_eq!(overridden.cache_control(), Some("no-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_and_checksums_are_verified_and_returned() // A
{
    use base64::Engine as _;
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("sums").send().await.unwrap();
    let data = random_bytes(100_000, 3);
    let good_md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&data));
    s3.put_object()
        .bucket("sums")
        .key("ok")
        .content_md5(&good_md5)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let bad_md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(b"other"));
    let result = s3
        .put_object()
        .bucket("sums")
        .key("bad")
        .content_md5(bad_md5)
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(code(result), "BadDigest");
    assert_eq!(code(s3.head_object().bucket("sums").key("bad").send().await), "NotFound", "nothing half-stored");

    for algorithm in
        [ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Crc32C, ChecksumAlgorithm::Sha1, ChecksumAlgorithm::Sha256]
    {
        let key = format!("with-{}", algorithm.as_str());
        let put = s3
            .put_object()
            .bucket("sums")
            .key(&key)
            .checksum_algorithm(algorithm.clone())
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let sent = [put.checksum_crc32(), put.checksum_crc32_c(), put.checksum_sha1(), put.checksum_sha256()];
        assert_eq!(sent.iter().flatten().count(), 1, "{algorithm:?} is echoed");
        let head = s3
            .head_object()
            .bucket("sums")
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let stored = [head.checksum_crc32(), head.checksum_crc32_c(), head.checksum_sha1(), head.checksum_sha256()];
        assert_eq!(stored, sent, "{algorithm:?} is stored");
        assert_eq!(get_bytes(&s3, "sums", &key).await, data);
    }
    let wrong = s3
        .put_object()
        .bucket("sums")
        .key("wrong-crc")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(code(wrong), "BadDigest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_any_utf8_round_trip_and_list() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("keys").send().await.unwrap();
    let long = "k".repeat(1024);
    let keys = ["with space", "plus+sign", "percent%20", "ünïcödé/文件", "/leading/slash", "a&b=c?d#e", long.as_str()];
    for (i, key) in keys.iter().enumerate() {
        s3.put_object().bucket("keys").key(*key).body(ByteStream::from(vec![i as u8; i + 1])).send().await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(get_bytes(&s3, "keys", key).await, vec![i as u8; i + 1], "{key}");
    }
    let listed = s3.list_objects_v2().bucket("keys").send().await.unwrap();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    let names: Vec<String> = listed.contents().iter().filter_map(|o| o.key.clone()).collect();
    assert_eq!(names, expected);
    assert_eq!(
        code(s3.put_object().bucket("keys").key("k".repeat(1025)).body(ByteStream::from_static(b"x")).send().await),
        "KeyTooLongError"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_by_prefix_delimiter_and_tokens() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("list").send().await.unwrap();
    let mut keys = Vec::new();
    for dir in ["a", "b", "c"] {
        for i in 0..5 {
            keys.push(format!("{dir}/{i:02}.txt"));
        }
    }
    keys.extend(["top1".to_string(), "top2".to_string()]);
    for key in &keys {
        s3.put_object().bucket("list").key(key).body(ByteStream::from_static(b"x")).send().await.unwrap();
    }

    // Paging with max-keys never skips or repeats.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page =
            s3.list_objects_v2().bucket("list").max_keys(4).set_continuation_token(token.clone()).send().await.unwrap();
        assert!(page.key_count().unwrap_or(0) <= 4);
        seen.extend(page.contents().iter().filter_map(|o| o.key.clone()));
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_string);
    }
    assert_eq!(seen, keys);

    let grouped = s3.list_objects_v2().bucket("list").delimiter("/").send().await.unwrap();
    let prefixes: Vec<_> = grouped.common_prefixes().iter().filter_map(|p| p.prefix.clone()).collect();
    assert_eq!(prefixes, ["a/", "b/", "c/"]);
    let top: Vec<_> = grouped.contents().iter().filter_map(|o| o.key.clone()).collect();
    assert_eq!(top, ["top1", "top2"]);

    // Common prefixes count against max-keys and page correctly.
    let mut entries = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket("list")
            .delimiter("/")
            .max_keys(2)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        entries.extend(page.common_prefixes().iter().filter_map(|p| p.prefix.clone()));
        entries.extend(page.contents().iter().filter_map(|o| o.key.clone()));
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_string);
    }
    assert_eq!(entries, ["a/", "b/", "c/", "top1", "top2"]);

    let under_b = s3.list_objects_v2().bucket("list").prefix("b/").start_after("b/01.txt").send().await.unwrap();
    let names: Vec<_> = under_b.contents().iter().filter_map(|o| o.key.clone()).collect();
    assert_eq!(names, ["b/02.txt", "b/03.txt", "b/04.txt"]);
    let owned = s3.list_objects_v2().bucket("list").prefix("top").fetch_owner(true).send().await.unwrap();
    assert!(owned.contents().iter().all(|o| o.owner().is_some()));
    let encoded =
        s3.list_objects_v2().bucket("list").prefix("a/").encoding_type("url".into()).max_keys(1).send().await.unwrap();
    assert_eq!(encoded.contents()[0].key(), Some("a/00.txt"));

    // ListObjects v1 with markers.
    let v1 = s3.list_objects().bucket("list").marker("c/03.txt").send().await.unwrap();
    let names: Vec<_> = v1.contents().iter().filter_map(|o| o.key.clone()).collect();
    assert_eq!(names, ["c/04.txt", "top1", "top2"]);
    let entry = &v1.contents()[0];
    assert_eq!(entry.size(), Some(1));
    assert_eq!(entry.e_tag(), Some("\"9dd4e461268c8034f5c8564e155c67a6\""));
    assert!(entry.last_modified().is_some());
    assert_eq!(entry.storage_class().map(|c| c.as_str()), Some("STANDARD"));
    let v1 = s3.list_objects().bucket("list").delimiter("/").max_keys(2).send().await.unwrap();
    assert_eq!(v1.is_truncated(), Some(true));
    assert_eq!(v1.next_marker(), Some("b/"));
    let rest = s3.list_objects().bucket("list").delimiter("/").marker("b/").send().await.unwrap();
    let prefixes: Vec<_> = rest.common_prefixes().iter().filter_map(|p| p.prefix.clone()).collect();
    assert_eq!(prefixes, ["c/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_share_chunks_and_follow_the_metadata_directive() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("src").send().await.unwrap();
    s3.create_bucket().bucket("dst").send().await.unwrap();
    let data = random_bytes(5_000_000, 4);
    s3.put_object()
        .bucket("src")
        .key("orig")
        .content_type("image/png")
        .metadata("colour", "blue")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let before = server.store.slice_usage().unwrap();
    let copy = s3.copy_object().bucket("dst").key("copy").copy_source("src/orig").send().await.unwrap();
    assert_eq!(copy.copy_object_result().and_then(|r| r.e_tag()), Some(format!("\"{}\"", md5_hex(&data)).as_str()));
    assert_eq!(server.store.slice_usage().unwrap(), before, "a copy stores no new slice");
    let got = s3.get_object().bucket("dst").key("copy").send().await.unwrap();
    assert_eq!(got.content_type(), Some("image/png"));
    assert_eq!(got.metadata().and_then(|m| m.get("colour")).map(String::as_str), Some("blue"));
    assert!(got.body.collect().await.unwrap().into_bytes() == data);

    s3.copy_object()
        .bucket("dst")
        .key("replaced")
        .copy_source("src/orig")
        .metadata_directive(MetadataDirective::Replace)
        .content_type("text/plain")
        .metadata("colour", "red")
        .send()
        .await
        .unwrap();
    let head = s3.head_object().bucket("dst").key("replaced").send().await.unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.metadata().and_then(|m| m.get("colour")).map(String::as_str), Some("red"));

    assert_eq!(code(s3.copy_object().bucket("src").key("orig").copy_source("src/orig").send().await), "InvalidRequest");
    assert_eq!(code(s3.copy_object().bucket("dst").key("x").copy_source("src/missing").send().await), "NoSuchKey");
    assert_eq!(
        code(
            s3.copy_object().bucket("dst").key("x").copy_source("src/orig").copy_source_if_match("\"no\"").send().await
        ),
        "PreconditionFailed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_quiet_and_verbose() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("del").send().await.unwrap();
    for i in 0..6 {
        s3.put_object().bucket("del").key(format!("k{i}")).body(ByteStream::from_static(b"x")).send().await.unwrap();
    }
    let ids = |range: std::ops::Range<i32>| {
        let objects = range.map(|i| ObjectIdentifier::builder().key(format!("k{i}")).build().unwrap()).collect();
        Delete::builder().set_objects(Some(objects))
    };
    let verbose = s3.delete_objects().bucket("del").delete(ids(0..3).build().unwrap()).send().await.unwrap();
    assert_eq!(verbose.deleted().len(), 3);
    let quiet = s3.delete_objects().bucket("del").delete(ids(3..5).quiet(true).build().unwrap()).send().await.unwrap();
    assert!(quiet.deleted().is_empty() && quiet.errors().is_empty());
    let left: Vec<_> = s3
        .list_objects_v2()
        .bucket("del")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key.clone())
        .collect();
    assert_eq!(left, ["k5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_puts_protect_existing_objects() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("cas").send().await.unwrap();
    let first = s3
        .put_object()
        .bucket("cas")
        .key("lock")
        .if_none_match("*")
        .body(ByteStream::from_static(b"one"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            s3.put_object()
                .bucket("cas")
                .key("lock")
                .if_none_match("*")
                .body(ByteStream::from_static(b"two"))
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    assert_eq!(
        code(
            s3.put_object()
                .bucket("cas")
                .key("lock")
                .if_match("\"stale\"")
                .body(ByteStream::from_static(b"two"))
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    s3.put_object()
        .bucket("cas")
        .key("lock")
        .if_match(first.e_tag().unwrap())
        .body(ByteStream::from_static(b"three"))
        .send()
        .await
        .unwrap();
    assert_eq!(get_bytes(&s3, "cas", "lock").await, b"three");
    assert_eq!(
        code(
            s3.put_object().bucket("cas").key("absent").if_match("*").body(ByteStream::from_static(b"x")).send().await
        ),
        "PreconditionFailed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_presigned_urls_work() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("auth").send().await.unwrap();
    s3.put_object().bucket("auth").key("secret.txt").body(ByteStream::from_static(b"top secret")).send().await.unwrap();

    let wrong_secret = server.client_with(&server.key.access_key_id, "not-the-secret-at-all-0000000000000000");
    assert_eq!(code(wrong_secret.list_buckets().send().await), "SignatureDoesNotMatch");
    let unknown = server.client_with("OBUNKNOWNKEY00000000", "whatever");
    assert_eq!(code(unknown.list_buckets().send().await), "InvalidAccessKeyId");
    let (status, _) =
        raw_http(server.addr, b"GET /auth/secret.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 403, "anonymous requests are refused");

    let presigned = s3
        .get_object()
        .bucket("auth")
        .key("secret.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let uri: http_uri::Uri = presigned.uri().parse().unwrap();
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", uri.path_and_query, uri.authority);
    let (status, text) = raw_http(server.addr, request.as_bytes());
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("top secret"), "{text}");
    // Tampering with the signed query fails.
    let tampered = request.replace("secret.txt", "secret.txT");
    assert_eq!(raw_http(server.addr, tampered.as_bytes()).0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_leaves_no_object() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("cut").send().await.unwrap();
    let presigned = s3
        .put_object()
        .bucket("cut")
        .key("partial")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let uri: http_uri::Uri = presigned.uri().parse().unwrap();
    let mut request = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
        uri.path_and_query, uri.authority
    )
    .into_bytes();
    request.extend(vec![b'x'; 40_000]);
    {
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream.write_all(&request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = stream.read_to_end(&mut sink);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(code(s3.head_object().bucket("cut").key("partial").send().await), "NotFound");
    let listed = s3.list_objects_v2().bucket("cut").send().await.unwrap();
    assert!(listed.contents().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() // A
{
    let server = TestServer::start().await;
    let config = Config {
        data_dir: server.dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        region: "us-east-1".into(),
        domains: vec![],
        durability: Durability::Flush,
        maintenance: Maintenance::default(),
        connections: ConnectionLimits::default(),
        cluster: Default::default(),
    };
    let error = Server::bind(&config).await.err().expect("the data directory is locked");
    assert!(error.to_string().contains("already using the data directory"), "{error}");
}

/// Splits a presigned URL into what a raw request needs.
mod http_uri {
    pub struct Uri {
        pub authority: String,
        pub path_and_query: String,
    }

    impl std::str::FromStr for Uri {
        type Err = String;

        fn from_str(url: &str) -> Result<Self, String> // A
        {
            let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
            let (authority, path) = rest.split_at(rest.find('/').ok_or("no path")?);
            Ok(Uri { authority: authority.to_string(), path_and_query: path.to_string() })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_stitch_parts_and_refuse_bad_completions() // A
{
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let part_size = 5 * 1024 * 1024;
    let parts: Vec<Vec<u8>> = vec![random_bytes(part_size, 10), random_bytes(part_size, 11), random_bytes(1234, 12)];
    let create = s3.create_multipart_upload().bucket("mpu").key("big").content_type("video/mp4").send().await.unwrap();
    let upload_id = create.upload_id().unwrap().to_string();

    // Parts arrive in parallel and out of order; part 2 is sent twice and the
    // second copy wins.
    s3.upload_part()
        .bucket("mpu")
        .key("big")
        .upload_id(&upload_id)
        .part_number(2)
        .body(ByteStream::from(random_bytes(part_size, 99)))
        .send()
        .await
        .unwrap();
    let uploads = (1..=3).rev().map(|n| {
        let s3 = s3.clone();
        let body = parts[n - 1].clone();
        let upload_id = upload_id.clone();
        tokio::spawn(async move {
            let out = s3
                .upload_part()
                .bucket("mpu")
                .key("big")
                .upload_id(upload_id)
                .part_number(n as i32)
                .body(ByteStream::from(body))
                .send()
                .await
                .unwrap();
            (n as i32, out.e_tag().unwrap().to_string())
        })
    });
    let mut etags = Vec::new();
    for handle in uploads {
        etags.push(handle.await.unwrap());
    }
    etags.sort();
    let completed = |list: &[(i32, String)]| {
        let parts = list.iter().map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(e).build()).collect();
        CompletedMultipartUpload::builder().set_parts(Some(parts)).build()
    };

    let listed = s3.list_parts().bucket("mpu").key("big").upload_id(&upload_id).max_parts(2).send().await.unwrap();
    assert_eq!(listed.parts().len(), 2);
    assert_eq!(listed.is_truncated(), Some(true));
    let rest = s3
        .list_parts()
        .bucket("mpu")
        .key("big")
        .upload_id(&upload_id)
        .part_number_marker(listed.next_part_number_marker().unwrap().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.parts().iter().map(|p| p.part_number().unwrap()).collect::<Vec<_>>(), [3]);
    let in_progress = s3.list_multipart_uploads().bucket("mpu").send().await.unwrap();
    assert_eq!(in_progress.uploads().iter().filter_map(|u| u.upload_id()).collect::<Vec<_>>(), [upload_id.as_str()]);

    let reversed: Vec<_> = etags.iter().rev().cloned().collect();
    let result = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(&upload_id)
        .multipart_upload(completed(&reversed))
        .send()
        .await;
    assert_eq!(code(result), "InvalidPartOrder");
    let mut wrong = etags.clone();
    wrong[0].1 = "\"00000000000000000000000000000000\"".into();
    let result = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(&upload_id)
        .multipart_upload(completed(&wrong))
        .send()
        .await;
    assert_eq!(code(result), "InvalidPart");
    let small_first = vec![etags[2].clone()];
    let mut with_small = small_first.clone();
    with_small[0].0 = 3;
    with_small.push((4, etags[0].1.clone()));
    let result = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(&upload_id)
        .multipart_upload(completed(&with_small))
        .send()
        .await;
    assert_eq!(code(result), "InvalidPart", "part 4 was never uploaded");

    let done = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(&upload_id)
        .multipart_upload(completed(&etags))
        .send()
        .await
        .unwrap();
    let mut digests = Vec::new();
    for part in &parts {
        digests.extend_from_slice(&Md5::digest(part));
    }
    assert_eq!(done.e_tag(), Some(format!("\"{}-3\"", md5_hex(&digests)).as_str()));
    let whole = parts.concat();
    let got = s3.get_object().bucket("mpu").key("big").send().await.unwrap();
    assert_eq!(got.content_type(), Some("video/mp4"));
    assert!(got.body.collect().await.unwrap().into_bytes() == whole, "stitched object differs");
    let second = s3.get_object().bucket("mpu").key("big").part_number(2).send().await.unwrap();
    assert_eq!(second.parts_count(), Some(3));
    assert!(second.body.collect().await.unwrap().into_bytes() == parts[1]);
    assert_eq!(code(s3.head_object().bucket("mpu").key("big").part_number(4).send().await), "HTTP 416");
    assert!(s3.list_multipart_uploads().bucket("mpu").send().await.unwrap().uploads().is_empty());
    let result = s3
        .upload_part()
        .bucket("mpu")
        .key("big")
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await;
    assert_eq!(code(result), "NoSuchUpload");

    // Small non-last parts are refused; an aborted upload is gone.
    let small = s3.create_multipart_upload().bucket("mpu").key("small").send().await.unwrap();
    let small_id = small.upload_id().unwrap();
    let mut small_etags = Vec::new();
    for n in 1..=2 {
        let out = s3
            .upload_part()
            .bucket("mpu")
            .key("small")
            .upload_id(small_id)
            .part_number(n)
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .unwrap();
        small_etags.push((n, out.e_tag().unwrap().to_string()));
    }
    let result = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("small")
        .upload_id(small_id)
        .multipart_upload(completed(&small_etags))
        .send()
        .await;
    assert_eq!(code(result), "EntityTooSmall");
    s3.abort_multipart_upload().bucket("mpu").key("small").upload_id(small_id).send().await.unwrap();
    assert_eq!(
        code(s3.abort_multipart_upload().bucket("mpu").key("small").upload_id(small_id).send().await),
        "NoSuchUpload"
    );
    assert_eq!(code(s3.head_object().bucket("mpu").key("small").send().await), "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_host_style_requests_reach_their_bucket() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("vhost").send().await.unwrap();
    s3.put_object().bucket("vhost").key("dir/a.txt").body(ByteStream::from_static(b"virtual")).send().await.unwrap();
    let presigned = server
        .virtual_host_client()
        .get_object()
        .bucket("vhost")
        .key("dir/a.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let uri: http_uri::Uri = presigned.uri().parse().unwrap();
    assert!(uri.authority.starts_with("vhost.localhost:"), "{}", uri.authority);
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", uri.path_and_query, uri.authority);
    let (status, text) = raw_http(server.addr, request.as_bytes());
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("virtual"), "{text}");
}

async fn enable_versioning(s3: &Client, bucket: &str, status: BucketVersioningStatus) // A
{
    let config = VersioningConfiguration::builder().status(status).build();
    s3.put_bucket_versioning().bucket(bucket).versioning_configuration(config).send().await.unwrap();
}

async fn put_text(s3: &Client, bucket: &str, key: &str, text: &str) -> Option<String> // A
{
    let body = ByteStream::from(text.as_bytes().to_vec());
    s3.put_object().bucket(bucket).key(key).body(body).send().await.unwrap().version_id
}

async fn get_version(s3: &Client, bucket: &str, key: &str, version: &str) -> String // A
{
    let out = s3.get_object().bucket(bucket).key(key).version_id(version).send().await.unwrap();
    String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
}

type Sent<O, E> = Result<O, SdkError<E, HttpResponse>>;

/// A failed call's S3 error code and the named response header.
fn error_with_header<O, E: ProvideErrorMetadata>(result: Sent<O, E>, header: &str) -> (String, Option<String>) // A
{
    let Err(error) = result else { panic!("expected an error") };
    let value = error.raw_response().and_then(|raw| raw.headers().get(header)).map(str::to_string);
    let code = error
        .code()
        .map(str::to_string)
        .or_else(|| error.raw_response().map(|raw| format!("HTTP {}", raw.status().as_u16())))
        .unwrap_or_default();
    (code, value)
}

/// (key, version id, is latest, is delete marker) of every entry, paging
/// with `page` entries per request: the versions in listing order, then the
/// delete markers in listing order (the XML lists them apart, and their
/// millisecond times cannot restore the interleaving); and the number of
/// requests.
async fn all_versions(s3: &Client, bucket: &str, page: i32) -> (Vec<(String, String, bool, bool)>, usize) // A
{
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    let (mut out, mut markers) = (Vec::new(), Vec::new());
    let mut requests = 0;
    loop {
        let listed = s3
            .list_object_versions()
            .bucket(bucket)
            .max_keys(page)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .unwrap();
        requests += 1;
        assert!(listed.versions().len() + listed.delete_markers().len() <= page as usize);
        for v in listed.versions() {
            out.push((v.key().unwrap().into(), v.version_id().unwrap().into(), v.is_latest().unwrap(), false));
        }
        for m in listed.delete_markers() {
            markers.push((m.key().unwrap().into(), m.version_id().unwrap().into(), m.is_latest().unwrap(), true));
        }
        if listed.is_truncated() != Some(true) {
            out.extend(markers);
            return (out, requests);
        }
        key_marker = listed.next_key_marker().map(str::to_string);
        version_marker = listed.next_version_id_marker().map(str::to_string);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_buckets_keep_every_version_and_delete_markers() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("ver").send().await.unwrap();
    let state = s3.get_bucket_versioning().bucket("ver").send().await.unwrap();
    assert_eq!(state.status(), None, "a new bucket has never had versioning");
    enable_versioning(&s3, "ver", BucketVersioningStatus::Enabled).await;
    let state = s3.get_bucket_versioning().bucket("ver").send().await.unwrap();
    assert_eq!(state.status(), Some(&BucketVersioningStatus::Enabled));

    let v1 = put_text(&s3, "ver", "doc", "first").await.expect("a versioned PUT names its version");
    let v2 = put_text(&s3, "ver", "doc", "second").await.unwrap();
    assert_ne!(v1, v2);
    assert_eq!(v1.len(), 64, "version ids are blob hashes: {v1}");
    assert_eq!(get_version(&s3, "ver", "doc", &v1).await, "first");
    assert_eq!(get_version(&s3, "ver", "doc", &v2).await, "second");
    let head = s3.head_object().bucket("ver").key("doc").send().await.unwrap();
    assert_eq!(head.version_id(), Some(v2.as_str()));
    let head = s3.head_object().bucket("ver").key("doc").version_id(&v1).send().await.unwrap();
    assert_eq!(head.content_length(), Some(5));

    // DELETE writes a marker; the key reads as missing, with the marker's headers.
    let deleted = s3.delete_object().bucket("ver").key("doc").send().await.unwrap();
    assert_eq!(deleted.delete_marker(), Some(true));
    let marker = deleted.version_id().unwrap().to_string();
    let (missing, header) =
        error_with_header(s3.get_object().bucket("ver").key("doc").send().await, "x-amz-delete-marker");
    assert_eq!((missing.as_str(), header.as_deref()), ("NoSuchKey", Some("true")));
    let named = s3.get_object().bucket("ver").key("doc").version_id(&marker).send().await;
    let (refused, version) = error_with_header(named, "x-amz-version-id");
    assert_eq!((refused.as_str(), version.as_deref()), ("MethodNotAllowed", Some(marker.as_str())));
    assert_eq!(get_version(&s3, "ver", "doc", &v1).await, "first", "old versions stay readable");
    let listed = s3.list_objects_v2().bucket("ver").send().await.unwrap();
    assert!(listed.contents().is_empty(), "a deleted key is not listed");

    // Removing the marker undeletes; removing a version exposes the one before.
    let undo = s3.delete_object().bucket("ver").key("doc").version_id(&marker).send().await.unwrap();
    assert_eq!((undo.delete_marker(), undo.version_id()), (Some(true), Some(marker.as_str())));
    assert_eq!(get_bytes(&s3, "ver", "doc").await, b"second");
    s3.delete_object().bucket("ver").key("doc").version_id(&v2).send().await.unwrap();
    assert_eq!(get_bytes(&s3, "ver", "doc").await, b"first");
    assert_eq!(code(s3.get_object().bucket("ver").key("doc").version_id(&v2).send().await), "NoSuchVersion");
    assert_eq!(code(s3.get_object().bucket("ver").key("doc").version_id("nonsense").send().await), "InvalidArgument");

    // Restore an old version by copying it over the key.
    let v3 = put_text(&s3, "ver", "doc", "third").await.unwrap();
    let copied =
        s3.copy_object().bucket("ver").key("doc").copy_source(format!("ver/doc?versionId={v1}")).send().await.unwrap();
    assert_eq!(copied.copy_source_version_id(), Some(v1.as_str()));
    let restored = copied.version_id().unwrap().to_string();
    assert_eq!(get_bytes(&s3, "ver", "doc").await, b"first");
    let (versions, _) = all_versions(&s3, "ver", 1000).await;
    let ids: Vec<&str> = versions.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(ids, [restored.as_str(), v3.as_str(), v1.as_str()], "newest first");
    assert_eq!(versions.iter().filter(|v| v.2).count(), 1, "exactly one latest");
    assert!(versions[0].2);

    // A completed multipart upload is a version like any other write.
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let upload = s3.create_multipart_upload().bucket("ver").key("doc").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let part = s3.upload_part().bucket("ver").key("doc").upload_id(id).part_number(1);
    let etag = part.body(ByteStream::from_static(b"multipart")).send().await.unwrap().e_tag.unwrap();
    let done = CompletedMultipartUpload::builder().parts(CompletedPart::builder().part_number(1).e_tag(etag).build());
    let complete = s3.complete_multipart_upload().bucket("ver").key("doc").upload_id(id);
    let completed = complete.multipart_upload(done.build()).send().await.unwrap();
    let assembled = completed.version_id().expect("a versioned completion names its version").to_string();
    assert_eq!(get_version(&s3, "ver", "doc", &assembled).await, "multipart");
    assert_eq!(get_version(&s3, "ver", "doc", &restored).await, "first", "the version before it stays");

    let not_empty = s3.delete_bucket().bucket("ver").send().await;
    assert_eq!(code(not_empty), "BucketNotEmpty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_listings_page_without_gaps_or_repeats() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("pages").send().await.unwrap();
    enable_versioning(&s3, "pages", BucketVersioningStatus::Enabled).await;
    let (mut expected, mut markers) = (Vec::new(), Vec::new());
    for key in ["a", "b/x", "b/y", "c"] {
        let mut ids = Vec::new();
        for round in 0..7 {
            ids.push(put_text(&s3, "pages", key, &format!("{key} {round}")).await.unwrap());
        }
        ids.reverse();
        let deleted = key == "b/y";
        expected.extend(ids.into_iter().enumerate().map(|(i, id)| (key.to_string(), id, i == 0 && !deleted, false)));
        if deleted {
            let marker = s3.delete_object().bucket("pages").key(key).send().await.unwrap();
            markers.push((key.to_string(), marker.version_id().unwrap().to_string(), true, true));
        }
    }
    expected.extend(markers);
    let (whole, _) = all_versions(&s3, "pages", 1000).await;
    assert_eq!(whole, expected, "keys in order, each newest first; the marker on b/y is its latest version");
    for page in [1, 2, 3, 5, 8] {
        let (paged, requests) = all_versions(&s3, "pages", page).await;
        assert_eq!(paged, whole, "pages of {page}");
        assert!(requests >= whole.len() / page as usize);
    }

    // Delimiter: b/ rolls up into one common prefix.
    let grouped = s3.list_object_versions().bucket("pages").delimiter("/").send().await.unwrap();
    let prefixes: Vec<_> = grouped.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["b/"]);
    assert_eq!(grouped.versions().len(), 14);
    let bad = s3.list_object_versions().bucket("pages").version_id_marker("null").send().await;
    assert_eq!(code(bad), "InvalidArgument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unversioned_and_suspended_buckets_keep_one_null_version() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("plain").send().await.unwrap();
    assert_eq!(put_text(&s3, "plain", "k", "one").await, None, "no version id without versioning");
    put_text(&s3, "plain", "k", "two").await;
    let (versions, _) = all_versions(&s3, "plain", 1000).await;
    assert_eq!(
        versions,
        [("k".to_string(), "null".to_string(), true, false)],
        "the overwrite replaced the null version"
    );
    assert_eq!(get_version(&s3, "plain", "k", "null").await, "two");
    let deleted = s3.delete_object().bucket("plain").key("k").send().await.unwrap();
    assert_eq!((deleted.delete_marker(), deleted.version_id()), (None, None));
    assert!(all_versions(&s3, "plain", 1000).await.0.is_empty(), "an unversioned delete leaves nothing");
    s3.delete_bucket().bucket("plain").send().await.unwrap();

    // null → enabled versions → suspended: the new null replaces the old one only.
    s3.create_bucket().bucket("susp").send().await.unwrap();
    put_text(&s3, "susp", "k", "null one").await;
    enable_versioning(&s3, "susp", BucketVersioningStatus::Enabled).await;
    let kept = put_text(&s3, "susp", "k", "versioned").await.unwrap();
    enable_versioning(&s3, "susp", BucketVersioningStatus::Suspended).await;
    put_text(&s3, "susp", "k", "null two").await;
    let head = s3.head_object().bucket("susp").key("k").send().await.unwrap();
    assert_eq!(head.version_id(), Some("null"));
    let (versions, _) = all_versions(&s3, "susp", 1000).await;
    let ids: Vec<&str> = versions.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(ids, ["null", kept.as_str()]);
    assert_eq!(get_version(&s3, "susp", "k", "null").await, "null two");
    // A suspended DELETE puts a null marker in place of the null version.
    let deleted = s3.delete_object().bucket("susp").key("k").send().await.unwrap();
    assert_eq!((deleted.delete_marker(), deleted.version_id()), (Some(true), Some("null")));
    let (versions, _) = all_versions(&s3, "susp", 1000).await;
    let shape: Vec<(&str, bool, bool)> = versions.iter().map(|v| (v.1.as_str(), v.2, v.3)).collect();
    assert_eq!(shape, [(kept.as_str(), false, false), ("null", true, true)], "the null marker is the latest");
    assert_eq!(get_version(&s3, "susp", "k", &kept).await, "versioned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_deleted_and_abandoned_data_gives_its_space_back() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    let size = 3 << 20;
    s3.create_bucket().bucket("space").send().await.unwrap();
    let put = |key: &'static str, seed: u64| {
        let s3 = s3.clone();
        async move {
            let body = ByteStream::from(random_bytes(size, seed));
            s3.put_object().bucket("space").key(key).body(body).send().await.unwrap();
        }
    };

    // An overwrite in an unversioned bucket: the old bytes become garbage.
    put("doc", 1).await;
    let one_object = server.slice_bytes();
    assert!(one_object >= size as u64);
    put("doc", 2).await;
    assert!(server.slice_bytes() >= 2 * size as u64);
    let report = server.maintain(false).await;
    assert!(report.chunks_freed > 0, "{report:?}");
    let left = server.slice_bytes();
    assert!(left.abs_diff(one_object) < one_object / 100, "{left} bytes left: the store shrank back to one object");
    assert_eq!(get_bytes(&s3, "space", "doc").await, random_bytes(size, 2));

    // A copy shares the chunks: deleting the original frees nothing.
    s3.copy_object().bucket("space").key("copy").copy_source("space/doc").send().await.unwrap();
    s3.delete_object().bucket("space").key("doc").send().await.unwrap();
    assert_eq!(server.maintain(false).await.chunks_freed, 0);
    assert_eq!(get_bytes(&s3, "space", "copy").await, random_bytes(size, 2));
    s3.delete_object().bucket("space").key("copy").send().await.unwrap();
    server.maintain(false).await;
    assert_eq!(server.slice_bytes(), 0, "nothing references any chunk any more");
    let on_disk = server.store.slice_disk_usage().unwrap();
    assert!(on_disk < size as u64 / 4, "{on_disk} bytes of segment files still allocated");

    // A deleted version of a versioned key.
    enable_versioning(&s3, "space", BucketVersioningStatus::Enabled).await;
    put("doc", 3).await;
    let keep = server.slice_bytes();
    put("doc", 4).await;
    let versions = all_versions(&s3, "space", 1000).await.0;
    s3.delete_object().bucket("space").key("doc").version_id(&versions[0].1).send().await.unwrap();
    server.maintain(false).await;
    assert_eq!(server.slice_bytes(), keep);
    assert_eq!(get_bytes(&s3, "space", "doc").await, random_bytes(size, 3));

    // An aborted upload, and an abandoned one past its age.
    for abandon in [false, true] {
        let upload = s3.create_multipart_upload().bucket("space").key("big").send().await.unwrap();
        let id = upload.upload_id().unwrap();
        let part = ByteStream::from(random_bytes(5 << 20, 5));
        s3.upload_part().bucket("space").key("big").upload_id(id).part_number(1).body(part).send().await.unwrap();
        // A part uploaded again replaces the first: its bytes are garbage at once.
        let part = ByteStream::from(random_bytes(5 << 20, 6));
        s3.upload_part().bucket("space").key("big").upload_id(id).part_number(1).body(part).send().await.unwrap();
        let report = server.maintain(abandon).await;
        assert!(report.chunks_freed > 0 && report.uploads_expired == usize::from(abandon), "{report:?}");
        if !abandon {
            s3.abort_multipart_upload().bucket("space").key("big").upload_id(id).send().await.unwrap();
            server.maintain(false).await;
        }
        assert_eq!(server.slice_bytes(), keep, "abandon={abandon}");
        let uploads = s3.list_multipart_uploads().bucket("space").send().await.unwrap();
        assert!(uploads.uploads().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_part_copy_reuses_the_chunks_inside_its_range() // A
{
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("copies").send().await.unwrap();
    let source = random_bytes(12 << 20, 21);
    let body = ByteStream::from(source.clone());
    s3.put_object().bucket("copies").key("source").body(body).send().await.unwrap();
    let stored = server.slice_bytes();

    let upload = s3.create_multipart_upload().bucket("copies").key("joined").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let split = 5 << 20;
    let mut parts = Vec::new();
    for (number, range) in [(1, format!("bytes=0-{}", split - 1)), (2, format!("bytes={split}-{}", source.len() - 1))] {
        let copied = s3
            .upload_part_copy()
            .bucket("copies")
            .key("joined")
            .upload_id(id)
            .part_number(number)
            .copy_source("copies/source")
            .copy_source_range(range)
            .send()
            .await
            .unwrap();
        let etag = copied.copy_part_result().unwrap().e_tag().unwrap().to_string();
        let expected = if number == 1 { &source[..split] } else { &source[split..] };
        assert_eq!(etag.trim_matches('"'), md5_hex(expected), "a copied part's ETag is the MD5 of its bytes");
        parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
    }
    // Only the chunk cut by the split is stored again (chunks are 4 MiB at most).
    let added = server.slice_bytes() - stored;
    assert!(added <= 4 << 20, "{added} bytes stored again");
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    s3.complete_multipart_upload()
        .bucket("copies")
        .key("joined")
        .upload_id(id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    assert_eq!(get_bytes(&s3, "copies", "joined").await, source);

    // A whole-object copy as a part adds nothing; bad ranges and uploads are refused.
    let upload = s3.create_multipart_upload().bucket("copies").key("whole").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let before = server.slice_bytes();
    let copy = || s3.upload_part_copy().bucket("copies").key("whole").upload_id(id).part_number(1);
    copy().copy_source("copies/source").send().await.unwrap();
    assert_eq!(server.slice_bytes(), before);
    let beyond = copy().copy_source("copies/source").copy_source_range("bytes=0-99999999").send().await;
    assert_eq!(code(beyond), "InvalidRange");
    let malformed = copy().copy_source("copies/source").copy_source_range("bytes=a-b").send().await;
    assert_eq!(code(malformed), "InvalidArgument");
    let missing = copy().copy_source("copies/nothing").send().await;
    assert_eq!(code(missing), "NoSuchKey");
    let no_upload = s3
        .upload_part_copy()
        .bucket("copies")
        .key("whole")
        .upload_id("nope")
        .part_number(1)
        .copy_source("copies/source");
    assert_eq!(code(no_upload.send().await), "NoSuchUpload");
}

const CHILD_DATA_DIR: &str = "OUROBOROS_TEST_CHILD_DATA_DIR";

/// The server half of the kill -9 test: runs only as a child process, and
/// prints the address it listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of kill_9_mid_upload_then_complete_and_abort_leaks_nothing"]
async fn server_child() // A
{
    let Ok(dir) = std::env::var(CHILD_DATA_DIR) else { return };
    let config = Config {
        data_dir: dir.into(),
        listen: "127.0.0.1:0".into(),
        region: "us-east-1".into(),
        domains: vec![],
        durability: Durability::Sync,
        maintenance: Maintenance::default(),
        connections: ConnectionLimits::default(),
        cluster: Default::default(),
    };
    let server = Server::bind(&config).await.unwrap();
    println!("LISTENING {}", server.local_addr().unwrap());
    server.run().await.unwrap();
}

/// Start `server_child` on `dir`; the child and the address it serves.
fn spawn_server(dir: &std::path::Path) -> (std::process::Child, SocketAddr) // A
{
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "server_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DATA_DIR, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        // libtest's "test server_child ... " has no line end of its own.
        if let Some((_, addr)) = line.split_once("LISTENING ") {
            // Keep draining, so the child never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, addr.trim().parse().unwrap());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server child exited without listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_then_complete_and_abort_leaks_nothing() // A
{
    let dir = tempfile::tempdir().unwrap();
    let key = credentials::create_key(dir.path(), "test").unwrap();
    let client = |addr: SocketAddr| sdk_client(addr, &key.access_key_id, &key.secret_access_key);
    let part_one = random_bytes(6 << 20, 31);

    let (mut child, addr) = spawn_server(dir.path());
    let s3 = client(addr);
    s3.create_bucket().bucket("crash").send().await.unwrap();
    enable_versioning(&s3, "crash", BucketVersioningStatus::Enabled).await;
    let version = put_text(&s3, "crash", "versioned", "survives").await.unwrap();
    let kept = s3.create_multipart_upload().bucket("crash").key("kept").send().await.unwrap();
    let kept = kept.upload_id().unwrap().to_string();
    let dropped = s3.create_multipart_upload().bucket("crash").key("dropped").send().await.unwrap();
    let dropped = dropped.upload_id().unwrap().to_string();
    let part = |key: &'static str, id: String, number: i32, bytes: Vec<u8>| {
        let s3 = s3.clone();
        async move {
            let body = ByteStream::from(bytes);
            s3.upload_part().bucket("crash").key(key).upload_id(id).part_number(number).body(body).send().await
        }
    };
    let etag = part("kept", kept.clone(), 1, part_one.clone()).await.unwrap().e_tag.unwrap();
    part("dropped", dropped.clone(), 1, random_bytes(5 << 20, 32)).await.unwrap();
    // A large part is under way when the server is killed.
    let in_flight = tokio::spawn(part("kept", kept.clone(), 2, random_bytes(64 << 20, 33)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let second_acknowledged = in_flight.await.unwrap().is_ok();

    let (mut child, addr) = spawn_server(dir.path());
    let s3 = client(addr);
    let listed = s3.list_parts().bucket("crash").key("kept").upload_id(&kept).send().await.unwrap();
    let numbers: Vec<i32> = listed.parts().iter().filter_map(|p| p.part_number()).collect();
    assert_eq!(numbers.first(), Some(&1), "the acknowledged part survived");
    assert_eq!(listed.parts()[0].e_tag(), Some(etag.as_str()));
    if second_acknowledged {
        assert_eq!(numbers, [1, 2]);
    }
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let only_first =
        CompletedMultipartUpload::builder().parts(CompletedPart::builder().part_number(1).e_tag(&etag).build()).build();
    let complete = s3.complete_multipart_upload().bucket("crash").key("kept").upload_id(&kept);
    complete.multipart_upload(only_first).send().await.unwrap();
    s3.abort_multipart_upload().bucket("crash").key("dropped").upload_id(&dropped).send().await.unwrap();
    assert_eq!(get_bytes(&s3, "crash", "kept").await, part_one);
    let head = s3.head_object().bucket("crash").key("versioned").send().await.unwrap();
    assert_eq!(head.version_id(), Some(version.as_str()), "version ids survive a restart unchanged");
    assert_eq!(get_version(&s3, "crash", "versioned", &version).await, "survives");
    child.kill().unwrap();
    child.wait().unwrap();

    // Back in this process on the same directory: after garbage collection
    // only the completed object's bytes remain.
    let server = TestServer::start_in(dir).await;
    let report = server.maintain(false).await;
    assert!(report.chunks_freed > 0, "{report:?}");
    let left = server.slice_bytes();
    let expected = part_one.len() as u64;
    assert!(left >= expected && left < expected + expected / 50, "{left} bytes left for a {expected}-byte object");
    assert_eq!(get_bytes(&server.client(), "crash", "kept").await, part_one);
}

/// A clock an hour ahead of the server's.
#[derive(Debug)]
struct FastClock;

impl aws_smithy_async::time::TimeSource for FastClock {
    fn now(&self) -> std::time::SystemTime // A
    {
        std::time::SystemTime::now() + Duration::from_secs(3600)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_clocks_malformed_bodies_and_huge_headers_get_clear_errors() // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket("errors").send().await.unwrap();

    let skewed = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(format!("http://{}", server.addr))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            &server.key.access_key_id,
            &server.key.secret_access_key,
            None,
            None,
            "t",
        ))
        .force_path_style(true)
        .time_source(FastClock)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    let skewed = Client::from_conf(skewed);
    assert_eq!(code(skewed.list_buckets().send().await), "RequestTimeTooSkewed");

    // Signed requests whose bodies are not what S3 expects: the body is
    // swapped before the SDK signs it.
    for body in ["not xml at all", "<VersioningConfiguration><Status>Sometimes</Status></VersioningConfiguration>"] {
        let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        let sent = s3
            .put_bucket_versioning()
            .bucket("errors")
            .versioning_configuration(versioning)
            .customize()
            .mutate_request(move |request| {
                for name in ["content-md5", "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm"] {
                    request.headers_mut().remove(name);
                }
                request.headers_mut().insert("content-length", body.len().to_string());
                *request.body_mut() = aws_sdk_s3::primitives::SdkBody::from(body);
            })
            .send()
            .await;
        assert_eq!(code(sent), "MalformedXML", "{body}");
    }
    let state = s3.get_bucket_versioning().bucket("errors").send().await.unwrap();
    assert_eq!(state.status(), None, "a refused configuration changes nothing");

    // Headers past the server's limit are refused before any byte is stored.
    let presigned = s3
        .put_object()
        .bucket("errors")
        .key("huge-headers")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let uri: http_uri::Uri = presigned.uri().parse().unwrap();
    let request = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nx-amz-meta-big: {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        uri.path_and_query,
        uri.authority,
        "a".repeat(1 << 20)
    );
    let (status, text) = raw_http(server.addr, request.as_bytes());
    assert_eq!(status, 431, "{}", &text[..text.len().min(300)]);
    assert_eq!(code(s3.head_object().bucket("errors").key("huge-headers").send().await), "NotFound");
}
