//! The S3 front door as an attacker or a careless client meets it: every way
//! of signing a request is held to its time window, expiry cap, signed
//! headers and scope; parsed bodies have a size limit and their digests are
//! checked; slow and stalled connections are closed; a full disk answers
//! plainly and the server recovers. Each request here is signed correctly
//! by hand, and each refusal has a control that the same signer gets in.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use ouroboros_gateway::connection::ConnectionLimits;
use sha2::{Digest as _, Sha256};

use super::{code, credentials, get_bytes, md5_hex, random_bytes, raw_http, TestServer};

const REGION: &str = "us-east-1";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> // A
{
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String // A
{
    hex::encode(Sha256::digest(data))
}

fn amz_date(at: SystemTime) -> String // A
{
    let at = time::OffsetDateTime::from(at);
    at.format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap()
}

fn http_date(at: SystemTime) -> String // A
{
    let at = time::OffsetDateTime::from(at);
    at.format(time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    ))
    .unwrap()
}

/// What a hand-signed SigV4 request may vary.
struct V4 {
    method: &'static str,
    path: String,
    region: &'static str,
    at: SystemTime,
    /// Header names to sign, besides those sent.
    signed: Vec<&'static str>,
    payload: String,
    /// The Host header, when not the server's address (virtual-host style).
    host: Option<String>,
}

impl V4 {
    fn new(method: &'static str, path: &str) -> Self // A
    {
        V4 {
            method,
            path: path.into(),
            region: REGION,
            at: SystemTime::now(),
            signed: vec!["host", "x-amz-content-sha256", "x-amz-date"],
            payload: "UNSIGNED-PAYLOAD".into(),
            host: None,
        }
    }

    fn scope(&self) -> String // A
    {
        format!("{}/{}/s3/aws4_request", &amz_date(self.at)[..8], self.region)
    }

    fn signing_key(&self, secret: &str) -> Vec<u8> // A
    {
        let date = hmac_sha256(format!("AWS4{secret}").as_bytes(), &amz_date(self.at)[..8]);
        let region = hmac_sha256(&date, self.region);
        let service = hmac_sha256(&region, "s3");
        hmac_sha256(&service, "aws4_request")
    }

    fn sign(&self, secret: &str, canonical: &str) -> String // A
    {
        let to_sign =
            format!("AWS4-HMAC-SHA256\n{}\n{}\n{}", amz_date(self.at), self.scope(), sha256_hex(canonical.as_bytes()));
        hex::encode(hmac_sha256(&self.signing_key(secret), &to_sign))
    }

    /// A raw request signed in its Authorization header; `extra` headers
    /// are sent and signed when named in `signed`.
    fn header_request(&self, server: &TestServer, extra: &[(&str, String)], body: &[u8]) -> Vec<u8> // A
    {
        let key = &server.key;
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone().unwrap_or_else(|| server.addr.to_string())),
            ("x-amz-content-sha256".into(), self.payload.clone()),
            ("x-amz-date".into(), amz_date(self.at)),
        ];
        headers.extend(extra.iter().map(|(name, value)| (name.to_string(), value.clone())));
        headers.sort();
        let signed: Vec<&(String, String)> =
            headers.iter().filter(|(name, _)| self.signed.contains(&name.as_str())).collect();
        let canonical_headers: String = signed.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
        let signed_names = signed.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
        let canonical =
            format!("{}\n{}\n\n{canonical_headers}\n{signed_names}\n{}", self.method, self.path, self.payload);
        let signature = self.sign(&key.secret_access_key, &canonical);
        let mut request = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (name, value) in &headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!(
            "authorization: AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_names}, Signature={signature}\r\n",
            key.access_key_id,
            self.scope()
        ));
        request.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        request
    }

    /// A raw request presigned in its query, valid for `expires` seconds.
    fn presigned_request(&self, server: &TestServer, expires: u64) -> Vec<u8> // A
    {
        let key = &server.key;
        let signed = self.signed.join(";");
        let mut query = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_string()),
            ("X-Amz-Credential", format!("{}/{}", key.access_key_id, self.scope()).replace('/', "%2F")),
            ("X-Amz-Date", amz_date(self.at)),
            ("X-Amz-Expires", expires.to_string()),
            ("X-Amz-SignedHeaders", signed.replace(';', "%3B")),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
        let mut canonical_headers = String::new();
        let mut sent = String::new();
        for name in &self.signed {
            let value = match *name {
                "host" => server.addr.to_string(),
                "x-amz-content-sha256" => "UNSIGNED-PAYLOAD".into(),
                other => panic!("no value for {other}"),
            };
            canonical_headers.push_str(&format!("{name}:{value}\n"));
            sent.push_str(&format!("{name}: {value}\r\n"));
        }
        let canonical =
            format!("{}\n{}\n{query}\n{canonical_headers}\n{signed}\nUNSIGNED-PAYLOAD", self.method, self.path);
        query.push_str(&format!("&X-Amz-Signature={}", self.sign(&key.secret_access_key, &canonical)));
        if !self.signed.contains(&"host") {
            sent.push_str(&format!("host: {}\r\n", server.addr));
        }
        format!(
            "{} {}?{query} HTTP/1.1\r\n{sent}content-length: 0\r\nconnection: close\r\n\r\n",
            self.method, self.path
        )
        .into_bytes()
    }

    /// A raw PUT whose body is aws-chunked and signed chunk by chunk.
    fn streaming_put(&self, server: &TestServer, data: &[u8]) -> Vec<u8> // A
    {
        let v4 = V4 { payload: "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into(), ..V4::new("PUT", &self.path) };
        let v4 = V4 { region: self.region, at: self.at, signed: self.signed.clone(), ..v4 };
        let key = &server.key.secret_access_key;
        let mut previous = String::new();
        let mut body = Vec::new();
        let mut head = v4.header_request(
            server,
            &[("content-encoding", "aws-chunked".into()), ("x-amz-decoded-content-length", data.len().to_string())],
            &[],
        );
        // The seed signature is the Authorization header's.
        let text = String::from_utf8_lossy(&head).into_owned();
        let seed = text.split("Signature=").nth(1).unwrap().split("\r\n").next().unwrap().to_string();
        previous.push_str(&seed);
        for piece in data.chunks(64 * 1024).chain(std::iter::once(&[][..])) {
            let to_sign = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{previous}\n{}\n{}",
                amz_date(v4.at),
                v4.scope(),
                sha256_hex(b""),
                sha256_hex(piece)
            );
            let signature = hex::encode(hmac_sha256(&v4.signing_key(key), &to_sign));
            body.extend_from_slice(format!("{:x};chunk-signature={signature}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
            previous = signature;
        }
        // Swap the empty body's length for the framed body's.
        let end = head.len() - "content-length: 0\r\nconnection: close\r\n\r\n".len();
        head.truncate(end);
        head.extend_from_slice(format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
        head.extend_from_slice(&body);
        head
    }
}

fn hmac_sha1_base64(secret: &str, data: &str) -> String // A
{
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A raw SigV2 request signed in its Authorization header, dated `at`.
fn v2_header_request(server: &TestServer, method: &str, path: &str, at: SystemTime) -> Vec<u8> // A
{
    let date = http_date(at);
    let signature = hmac_sha1_base64(&server.key.secret_access_key, &format!("{method}\n\n\n{date}\n{path}"));
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\ndate: {date}\r\nauthorization: AWS {}:{signature}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        server.addr, server.key.access_key_id
    )
    .into_bytes()
}

/// A raw SigV2 presigned GET that expires at `expires`.
fn v2_presigned_get(server: &TestServer, path: &str, expires: SystemTime) -> Vec<u8> // A
{
    let expires = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let signature = hmac_sha1_base64(&server.key.secret_access_key, &format!("GET\n\n\n{expires}\n{path}"));
    let signature: String = urlencode(&signature);
    format!(
        "GET {path}?AWSAccessKeyId={}&Expires={expires}&Signature={signature} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        server.key.access_key_id, server.addr
    )
    .into_bytes()
}

fn urlencode(value: &str) -> String // A
{
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Status and S3 error code of a raw exchange.
fn send(server: &TestServer, request: &[u8]) -> (u16, String) // A
{
    let (status, text) = raw_http(server.addr, request);
    let code = text.split("<Code>").nth(1).and_then(|rest| rest.split("</Code>").next()).unwrap_or("").to_string();
    (status, code)
}

async fn server_with_object(bucket: &str, key: &str, body: &'static [u8]) -> TestServer // A
{
    let server = TestServer::start().await;
    let s3 = server.client();
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    s3.put_object().bucket(bucket).key(key).body(ByteStream::from_static(body)).send().await.unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_headers_need_host_and_date_signed_and_our_region() // A
{
    let server = server_with_object("sig-v4", "k", b"v4 body").await;
    let ok = V4::new("GET", "/sig-v4/k");
    assert_eq!(send(&server, &ok.header_request(&server, &[], b"")), (200, String::new()), "control");

    let no_host = V4 { signed: vec!["x-amz-content-sha256", "x-amz-date"], ..V4::new("GET", "/sig-v4/k") };
    assert_eq!(send(&server, &no_host.header_request(&server, &[], b"")), (400, "AuthorizationHeaderMalformed".into()));
    let no_date = V4 { signed: vec!["host", "x-amz-content-sha256"], ..V4::new("GET", "/sig-v4/k") };
    assert_eq!(send(&server, &no_date.header_request(&server, &[], b"")), (400, "AuthorizationHeaderMalformed".into()));
    let elsewhere = V4 { region: "eu-west-1", ..V4::new("GET", "/sig-v4/k") };
    assert_eq!(
        send(&server, &elsewhere.header_request(&server, &[], b"")),
        (400, "AuthorizationHeaderMalformed".into())
    );
    let stale = V4 { at: SystemTime::now() - Duration::from_secs(20 * 60), ..V4::new("GET", "/sig-v4/k") };
    assert_eq!(send(&server, &stale.header_request(&server, &[], b"")), (403, "RequestTimeTooSkewed".into()));

    // The same rules hold for a body signed chunk by chunk (aws-chunked).
    let data = random_bytes(150_000, 7);
    let put = V4::new("PUT", "/sig-v4/streamed");
    assert_eq!(send(&server, &put.streaming_put(&server, &data)).0, 200, "control");
    assert_eq!(get_bytes(&server.client(), "sig-v4", "streamed").await, data);
    let elsewhere = V4 { region: "eu-west-1", ..V4::new("PUT", "/sig-v4/streamed-elsewhere") };
    assert_eq!(send(&server, &elsewhere.streaming_put(&server, &data)), (400, "AuthorizationHeaderMalformed".into()));
    let no_host =
        V4 { signed: vec!["x-amz-content-sha256", "x-amz-date"], ..V4::new("PUT", "/sig-v4/streamed-no-host") };
    assert_eq!(send(&server, &no_host.streaming_put(&server, &data)).0, 400);
    let listed = server.client().list_objects_v2().bucket("sig-v4").send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["k", "streamed"], "refused uploads store nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_presigned_urls_last_at_most_a_week_and_name_our_region() // A
{
    let server = server_with_object("pre", "k", b"presigned body").await;
    let get = V4::new("GET", "/pre/k");
    let signed_host = vec!["host"];
    let get = V4 { signed: signed_host.clone(), ..get };
    assert_eq!(send(&server, &get.presigned_request(&server, 3600)).0, 200, "control");
    assert_eq!(send(&server, &get.presigned_request(&server, 604_800)).0, 200, "exactly a week");
    let ten_years = 10 * YEAR.as_secs();
    assert_eq!(
        send(&server, &get.presigned_request(&server, ten_years)),
        (400, "AuthorizationQueryParametersError".into())
    );
    let elsewhere = V4 { region: "eu-west-1", signed: signed_host.clone(), ..V4::new("GET", "/pre/k") };
    assert_eq!(
        send(&server, &elsewhere.presigned_request(&server, 3600)),
        (400, "AuthorizationQueryParametersError".into())
    );
    let no_host = V4 { signed: vec!["x-amz-content-sha256"], ..V4::new("GET", "/pre/k") };
    assert_eq!(
        send(&server, &no_host.presigned_request(&server, 3600)),
        (400, "AuthorizationQueryParametersError".into())
    );
    let expired =
        V4 { at: SystemTime::now() - Duration::from_secs(7200), signed: signed_host, ..V4::new("GET", "/pre/k") };
    assert_eq!(send(&server, &expired.presigned_request(&server, 3600)), (403, "AccessDenied".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv2_requests_have_a_time_window_and_presigned_ones_an_expiry() // A
{
    let server = server_with_object("sig-v2", "k", b"v2 body").await;
    let s3 = server.client();
    let now = SystemTime::now();
    assert_eq!(send(&server, &v2_header_request(&server, "GET", "/sig-v2/k", now)).0, 200, "control");

    // A DELETE captured a year ago and replayed now deletes nothing.
    let replayed = v2_header_request(&server, "DELETE", "/sig-v2/k", now - YEAR);
    assert_eq!(send(&server, &replayed), (403, "RequestTimeTooSkewed".into()));
    let ahead = v2_header_request(&server, "DELETE", "/sig-v2/k", now + Duration::from_secs(20 * 60));
    assert_eq!(send(&server, &ahead), (403, "RequestTimeTooSkewed".into()));
    assert_eq!(get_bytes(&s3, "sig-v2", "k").await, b"v2 body");

    assert_eq!(
        send(&server, &v2_presigned_get(&server, "/sig-v2/k", now + Duration::from_secs(300))).0,
        200,
        "control"
    );
    let expired = v2_presigned_get(&server, "/sig-v2/k", now - Duration::from_secs(1));
    assert_eq!(send(&server, &expired), (403, "AccessDenied".into()));
    let too_long = v2_presigned_get(&server, "/sig-v2/k", now + Duration::from_secs(8 * 24 * 3600));
    assert_eq!(send(&server, &too_long), (403, "AccessDenied".into()));

    assert_eq!(send(&server, &v2_header_request(&server, "DELETE", "/sig-v2/k", now)).0, 204, "a fresh DELETE works");
}

/// A browser-form upload (POST policy) signed for `region`.
fn post_policy_upload(server: &TestServer, bucket: &str, key: &str, region: &'static str, data: &[u8]) -> Vec<u8> // A
{
    let v4 = V4 { region, ..V4::new("POST", "/") };
    let credential = format!("{}/{}", server.key.access_key_id, v4.scope());
    let date = amz_date(v4.at);
    let expiration = time::OffsetDateTime::from(SystemTime::now() + Duration::from_secs(600))
        .format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].000Z"))
        .unwrap();
    let policy = format!(
        r#"{{"expiration":"{expiration}","conditions":[{{"bucket":"{bucket}"}},["eq","$key","{key}"],{{"x-amz-algorithm":"AWS4-HMAC-SHA256"}},{{"x-amz-credential":"{credential}"}},{{"x-amz-date":"{date}"}}]}}"#
    );
    let policy = base64::engine::general_purpose::STANDARD.encode(policy);
    let signature = hex::encode(hmac_sha256(&v4.signing_key(&server.key.secret_access_key), &policy));
    let boundary = "frontdoorboundary";
    let mut body = Vec::new();
    for (name, value) in [
        ("key", key.to_string()),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".into()),
        ("x-amz-credential", credential),
        ("x-amz-date", date),
        ("policy", policy),
        ("x-amz-signature", signature),
    ] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut request = format!(
        "POST /{bucket} HTTP/1.1\r\nhost: {}\r\ncontent-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        server.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_policy_uploads_name_our_region() // A
{
    let server = server_with_object("form", "k", b"x").await;
    let (status, _) = send(&server, &post_policy_upload(&server, "form", "uploaded", REGION, b"form body"));
    assert!((200..300).contains(&status), "control: {status}");
    assert_eq!(get_bytes(&server.client(), "form", "uploaded").await, b"form body");
    let refused = send(&server, &post_policy_upload(&server, "form", "elsewhere", "eu-west-1", b"form body"));
    assert_eq!(refused, (400, "AuthorizationHeaderMalformed".into()));
    assert_eq!(code(server.client().head_object().bucket("form").key("elsewhere").send().await), "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parsed_bodies_have_a_limit_and_delete_objects_checks_its_digest() // A
{
    let server = server_with_object("bodies", "keep", b"kept").await;
    let s3 = server.client();
    let delete = || {
        let keep = ObjectIdentifier::builder().key("keep").build().unwrap();
        s3.delete_objects().bucket("bodies").delete(Delete::builder().objects(keep).build().unwrap())
    };

    // A wrong digest, or none, deletes nothing.
    let wrong_md5 = delete()
        .customize()
        .mutate_request(|request| {
            for name in ["x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm"] {
                request.headers_mut().remove(name);
            }
            request.headers_mut().insert("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==");
        })
        .send()
        .await;
    assert_eq!(code(wrong_md5), "BadDigest");
    let wrong_crc = delete()
        .customize()
        .mutate_request(|request| {
            request.headers_mut().remove("content-md5");
            request.headers_mut().insert("x-amz-checksum-crc32", "AAAAAA==");
        })
        .send()
        .await;
    assert_eq!(code(wrong_crc), "BadDigest");
    let none = delete()
        .customize()
        .mutate_request(|request| {
            for name in ["content-md5", "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm"] {
                request.headers_mut().remove(name);
            }
        })
        .send()
        .await;
    assert_eq!(code(none), "InvalidRequest");
    assert_eq!(get_bytes(&s3, "bodies", "keep").await, b"kept", "nothing was deleted");

    // Over the limit: refused with a 4xx, not read into memory.
    let huge = format!("<Delete>{}</Delete>", " ".repeat(9 << 20));
    let too_big = delete()
        .customize()
        .mutate_request(move |request| {
            request.headers_mut().remove("x-amz-checksum-crc32");
            request.headers_mut().insert("content-length", huge.len().to_string());
            *request.body_mut() = SdkBody::from(huge.clone());
        })
        .send()
        .await;
    // The answer comes before the body is read, so a client still writing
    // may see the connection cut instead (as with S3's own early refusals).
    let refused = code(too_big);
    let cut = ["BrokenPipe", "ConnectionReset"].iter().any(|kind| refused.contains(kind));
    assert!(refused == "MaxMessageLengthExceeded" || cut, "{refused}");
    // A declared gigabyte is refused at once: the server does not wait for it.
    let started = Instant::now();
    let request = format!(
        "POST /bodies?delete HTTP/1.1\r\nhost: {}\r\ncontent-md5: 1B2M2Y8AsgTpgAmY7PhCfg==\r\ncontent-length: {}\r\n\r\n<Delete>",
        server.addr,
        1u64 << 30
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = [0u8; 512];
    let read = stream.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("MaxMessageLengthExceeded"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(get_bytes(&s3, "bodies", "keep").await, b"kept");

    // Object bodies stream past the limit, in either addressing style.
    let large = random_bytes(9 << 20, 3);
    s3.put_object().bucket("bodies").key("large-path").body(ByteStream::from(large.clone())).send().await.unwrap();
    let virtual_host =
        V4 { host: Some(format!("bodies.localhost:{}", server.addr.port())), ..V4::new("PUT", "/large-vhost") };
    assert_eq!(send(&server, &virtual_host.header_request(&server, &[], &large)).0, 200);
    for key in ["large-path", "large-vhost"] {
        assert_eq!(md5_hex(&get_bytes(&s3, "bodies", key).await), md5_hex(&large), "{key}");
    }

    // The SDK's own digest still deletes.
    delete().send().await.unwrap();
    assert_eq!(code(s3.head_object().bucket("bodies").key("keep").send().await), "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_range_of_an_empty_object_is_satisfiable() // A
{
    let server = server_with_object("empty", "nothing", b"").await;
    for range in ["bytes=-1", "bytes=0-0", "bytes=0-"] {
        let sent = server.client().get_object().bucket("empty").key("nothing").range(range).send().await;
        let error = sent.expect_err(range);
        let raw = error.raw_response().unwrap();
        assert_eq!(raw.status().as_u16(), 416, "{range}");
        assert_eq!(raw.headers().get("content-range"), Some("bytes */0"), "{range}");
    }
    let whole = server.client().get_object().bucket("empty").key("nothing").send().await.unwrap();
    assert!(whole.body.collect().await.unwrap().into_bytes().is_empty());
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool // A
{
    stream.set_read_timeout(Some(within)).unwrap();
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stalled_clients_are_cut_off_and_cannot_exhaust_connections() // A
{
    let dir = tempfile::tempdir().unwrap();
    credentials::create_key(dir.path(), "test").unwrap();
    let limits = ConnectionLimits {
        header_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(2),
        max_connections: 64,
    };
    let server = TestServer::start_limited(dir, limits).await;
    let s3 = server.client();
    s3.create_bucket().bucket("loris").send().await.unwrap();

    // Two hundred half-sent heads: the first 64 are served and cut off, the
    // rest wait in the backlog and are cut off in their turn.
    let mut lorises: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream.write_all(b"GET /loris/ HTTP/1.1\r\nHost: loc").unwrap();
            stream
        })
        .collect();
    // Meanwhile a real client is served once a slot frees.
    let listed = tokio::time::timeout(Duration::from_secs(30), s3.list_objects_v2().bucket("loris").send()).await;
    assert!(listed.expect("served despite the slow clients").is_ok());
    for (index, stream) in lorises.iter_mut().enumerate() {
        assert!(closed_within(stream, Duration::from_secs(30)), "half-sent head {index} still open");
    }

    // An idle keep-alive connection is closed after the header timeout.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET /_ouroboros/health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = [0u8; 256];
    let read = idle.read(&mut answer).unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(20)), "idle keep-alive connection still open");

    // A body that stops arriving ends its request; nothing is stored.
    let put = V4::new("PUT", "/loris/stalled");
    let mut request = put.header_request(&server, &[], &[]);
    let end = request.len() - "content-length: 0\r\nconnection: close\r\n\r\n".len();
    request.truncate(end);
    request.extend_from_slice(b"content-length: 1000000\r\n\r\npartial body");
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled.write_all(&request).unwrap();
    assert!(closed_within(&mut stalled, Duration::from_secs(20)), "stalled upload still open");
    assert_eq!(code(s3.head_object().bucket("loris").key("stalled").send().await), "NotFound");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root).
    fn mount(megabytes: u32) -> Option<Self> // A
    {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path // A
    {
        self.dir.path()
    }

    fn free_bytes(&self) -> u64 // A
    {
        let path = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills a struct we own from a valid C string.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) // A
    {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_plainly_and_the_server_recovers_when_space_returns() // A
{
    let Some(disk) = SmallDisk::mount(96) else {
        // SAFETY: geteuid has no preconditions.
        assert_ne!(unsafe { libc::geteuid() }, 0, "root could not mount a tmpfs");
        eprintln!("SKIPPED: mounting a small disk needs root");
        return;
    };
    let dir = tempfile::TempDir::new_in(disk.path()).unwrap();
    credentials::create_key(dir.path(), "test").unwrap();
    // A filler file holds space the test gives back later.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![1u8; 32 << 20]).unwrap();
    let server = TestServer::start_in(dir).await;
    let s3 = server.client();
    s3.create_bucket().bucket("full").send().await.unwrap();

    let mut stored = Vec::new();
    let mut refusal = None;
    for index in 0..64u64 {
        let body = random_bytes(2 << 20, index);
        let key = format!("object-{index}");
        match s3.put_object().bucket("full").key(&key).body(ByteStream::from(body.clone())).send().await {
            Ok(_) => stored.push((key, md5_hex(&body))),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk filled up");
    let raw = refusal.raw_response().unwrap();
    assert_eq!(raw.status().as_u16(), 507, "{refusal:?}");
    let body = String::from_utf8_lossy(raw.body().bytes().unwrap()).into_owned();
    assert!(body.contains("<Code>InsufficientStorage</Code>"), "{body}");
    assert!(!body.contains('/') || !body.contains(".seg"), "no path reaches the client: {body}");
    assert!(!body.contains(server.dir.path().to_str().unwrap()), "no path reaches the client: {body}");
    assert!(!stored.is_empty(), "some objects fit before the disk filled");

    // Everything acknowledged still reads back.
    for (key, md5) in &stored {
        assert_eq!(&md5_hex(&get_bytes(&s3, "full", key).await), md5, "{key}");
    }
    // Space comes back: writes succeed again, with no restart.
    std::fs::remove_file(&filler).unwrap();
    assert!(disk.free_bytes() > 16 << 20);
    let body = random_bytes(2 << 20, 1000);
    s3.put_object().bucket("full").key("after").body(ByteStream::from(body.clone())).send().await.unwrap();
    assert_eq!(get_bytes(&s3, "full", "after").await, body);
    for (key, md5) in &stored {
        assert_eq!(&md5_hex(&get_bytes(&s3, "full", key).await), md5, "{key}");
    }
}
