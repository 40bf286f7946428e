//! The S3 operations on top of the core engine: buckets, objects, listings
//! and copies, mapped to the DAG of blobs. Errors become S3 error codes here.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hyper::header::HeaderValue;
use hyper::HeaderMap;
use ouroboros_core::cluster::{ClusterView, Transport};
use ouroboros_core::store::ListStart;
use ouroboros_core::{
    Blob, BlobContent, BlobKind, BodyKind, BodyTap, Engine, EngineError, FailureClass, ObjectSummary, PutRequest,
};
use ouroboros_core::{VersionStart, Versioning};
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, TrailingHeaders, S3};

use crate::checksums::{Algorithm, ALGORITHMS};
use crate::dag_headers::{named_parents, PARENTS_HEADER, VERSION_HEADER};
use crate::front_door::check_body_verdict;

/// An S3 operation's request and result, as s3s types them.
type In<T> = S3Request<T>;
type Out<T> = S3Result<S3Response<T>>;
type Completion = CompleteMultipartUploadOutput;

/// Largest body a single PUT takes, as S3.
pub const MAX_PUT_SIZE: i64 = 5 * 1024 * 1024 * 1024;
/// Longest object key, in bytes, as S3.
const MAX_KEY_LEN: usize = 1024;
/// Most keys one listing page returns, as S3.
pub(crate) const MAX_KEYS: i32 = 1000;

/// System metadata names kept in `Blob::system_metadata`.
const CONTENT_TYPE: &str = "content-type";
const CONTENT_ENCODING: &str = "content-encoding";
const CONTENT_DISPOSITION: &str = "content-disposition";
const CONTENT_LANGUAGE: &str = "content-language";
const CACHE_CONTROL: &str = "cache-control";
const EXPIRES: &str = "expires";
const WEBSITE_REDIRECT: &str = "x-amz-website-redirect-location";

pub struct Gateway<T, V> {
    engine: Engine<T, V>,
    region: String,
}

impl<T, V> Gateway<T, V> {
    pub fn new(engine: Engine<T, V>, region: String) -> Self // A
    {
        Gateway { engine, region }
    }

    pub(crate) fn engine(&self) -> &Engine<T, V> // A
    {
        &self.engine
    }
}

/// The S3 answer to an engine failure. The cause (paths, node ids, what
/// failed) goes to the log, under the request's id; the client hears only
/// what the failure means to it.
pub(crate) fn engine_failure(error: EngineError) -> S3Error // A
{
    tracing::error!(%error, "engine failure");
    match error.class() {
        FailureClass::StorageFull => {
            let mut answer = S3Error::with_message(
                S3ErrorCode::Custom("InsufficientStorage".into()),
                "The server has no space left to store this data.",
            );
            answer.set_status_code(hyper::StatusCode::INSUFFICIENT_STORAGE);
            answer
        }
        FailureClass::Unavailable => {
            let mut answer = s3_error!(ServiceUnavailable, "Too few storage nodes answered. Please try again.");
            // Long enough for the failure detector to settle which nodes are away.
            let mut headers = hyper::HeaderMap::new();
            headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("2"));
            answer.set_headers(headers);
            answer
        }
        FailureClass::Internal => internal_fault(),
    }
}

/// S3's answer to a fault of the server or its data, with nothing about
/// the cause: the caller logs that.
pub(crate) fn internal_fault() -> S3Error // A
{
    s3_error!(InternalError, "We encountered an internal error. Please try again.")
}

pub(crate) fn timestamp(nanos: u64) -> Timestamp // A
{
    Timestamp::from(UNIX_EPOCH + Duration::from_nanos(nanos))
}

fn system_time(at: &Timestamp) -> SystemTime // A
{
    SystemTime::from(time::OffsetDateTime::from(at.clone()))
}

fn format_http_date(at: &Timestamp) -> Option<String> // A
{
    let mut out = Vec::new();
    at.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

fn parse_http_date(value: &str) -> Option<Timestamp> // A
{
    Timestamp::parse(TimestampFormat::HttpDate, value).ok()
}

/// The standard headers a PUT or a REPLACE copy sets.
pub(crate) struct SystemHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<Timestamp>,
    pub website_redirect: Option<String>,
}

impl SystemHeaders {
    pub(crate) fn into_map(self) -> BTreeMap<String, String> // A
    {
        let mut map = BTreeMap::new();
        let expires = self.expires.as_ref().and_then(format_http_date);
        for (name, value) in [
            (CONTENT_TYPE, self.content_type),
            (CONTENT_ENCODING, self.content_encoding),
            (CONTENT_DISPOSITION, self.content_disposition),
            (CONTENT_LANGUAGE, self.content_language),
            (CACHE_CONTROL, self.cache_control),
            (EXPIRES, expires),
            (WEBSITE_REDIRECT, self.website_redirect),
        ] {
            if let Some(value) = value {
                map.insert(name.to_string(), value);
            }
        }
        map
    }
}

pub(crate) fn user_metadata(metadata: Option<Metadata>) -> BTreeMap<String, String> // A
{
    metadata.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

/// The `response-*` query parameters of a GET or HEAD.
struct ResponseOverrides {
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
}

/// What GET and HEAD ask of a version besides its key.
struct ReadRequest<'a> {
    conditions: Preconditions<'a>,
    range: Option<&'a Range>,
    part_number: Option<i32>,
    overrides: ResponseOverrides,
}

/// What GET and HEAD share: the preconditions, the bytes to send and the
/// headers to answer with.
fn prepare_read(blob: &Blob, read: ReadRequest<'_>) -> S3Result<(ByteRange, Option<String>, ObjectHeaders)> // A
{
    check_preconditions(blob, read.conditions, S3ErrorCode::NotModified)?;
    let (range, content_range) = byte_range(blob, read.range, read.part_number)?;
    let mut headers = ObjectHeaders::of(blob);
    headers.override_with(read.overrides);
    Ok((range, content_range, headers))
}

/// The `If-*` preconditions of a read or of a copy's source.
pub(crate) struct Preconditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// What GET and HEAD answer with, besides the body.
struct ObjectHeaders {
    e_tag: ETag,
    last_modified: Timestamp,
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    website_redirect: Option<String>,
    metadata: Option<Metadata>,
    checksums: BTreeMap<String, String>,
}

impl ObjectHeaders {
    fn of(blob: &Blob) -> Self // A
    {
        let system = |name: &str| blob.system_metadata.get(name).cloned();
        let metadata: Metadata = blob.user_metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        ObjectHeaders {
            e_tag: ETag::Strong(blob.etag.clone()),
            last_modified: timestamp(blob.created),
            content_type: system(CONTENT_TYPE).or_else(|| Some("binary/octet-stream".into())),
            content_encoding: system(CONTENT_ENCODING),
            content_disposition: system(CONTENT_DISPOSITION),
            content_language: system(CONTENT_LANGUAGE),
            cache_control: system(CACHE_CONTROL),
            expires: system(EXPIRES).as_deref().and_then(parse_http_date),
            website_redirect: system(WEBSITE_REDIRECT),
            metadata: (!metadata.is_empty()).then_some(metadata),
            checksums: blob.checksums.clone(),
        }
    }

    /// Apply the `response-*` query overrides of a GET or HEAD.
    fn override_with(&mut self, overrides: ResponseOverrides) // A
    {
        let ResponseOverrides {
            content_type,
            content_encoding,
            content_disposition,
            content_language,
            cache_control,
            expires,
        } = overrides;
        self.content_type = content_type.or(self.content_type.take());
        self.content_encoding = content_encoding.or(self.content_encoding.take());
        self.content_disposition = content_disposition.or(self.content_disposition.take());
        self.content_language = content_language.or(self.content_language.take());
        self.cache_control = cache_control.or(self.cache_control.take());
        self.expires = expires.or(self.expires.take());
    }

    fn checksum(&self, algorithm: &str) -> Option<String> // A
    {
        self.checksums.get(algorithm).cloned()
    }
}

/// The preconditions of GET, HEAD and the copy source, in S3's order:
/// If-Match beats If-Unmodified-Since, If-None-Match beats If-Modified-Since.
pub(crate) fn check_preconditions(blob: &Blob, when: Preconditions<'_>, not_modified: S3ErrorCode) -> S3Result<()> // A
{
    let Preconditions { if_match, if_none_match, if_modified_since, if_unmodified_since } = when;
    let etag = ETag::Strong(blob.etag.clone());
    // HTTP dates have second precision.
    let modified = UNIX_EPOCH + Duration::from_secs(blob.created / 1_000_000_000);
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(other) => etag.weak_cmp(other),
    };
    if let Some(condition) = if_match {
        if !matches(condition) {
            return Err(s3_error!(PreconditionFailed, "If-Match: the ETag is {}", blob.etag));
        }
    } else if let Some(since) = if_unmodified_since {
        if modified > system_time(since) {
            return Err(s3_error!(PreconditionFailed, "If-Unmodified-Since: modified since"));
        }
    }
    if let Some(condition) = if_none_match {
        if matches(condition) {
            return Err(S3Error::new(not_modified));
        }
    } else if let Some(since) = if_modified_since {
        if modified <= system_time(since) {
            return Err(S3Error::new(not_modified));
        }
    }
    Ok(())
}

/// The checksums a client sent with a body, and the algorithm it announced.
pub(crate) struct SentChecksums {
    pub algorithm: Option<ChecksumAlgorithm>,
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub crc64nvme: Option<String>,
}

/// What a request says about its body.
pub(crate) struct Received {
    pub content_length: Option<i64>,
    pub content_md5: Option<String>,
    pub sent: SentChecksums,
    pub kind: BodyKind,
}

pub(crate) type Trailers = Option<TrailingHeaders>;

/// A stored body and the checksums verified on it.
pub(crate) type Stored = S3Result<(ouroboros_core::WrittenBody, BTreeMap<String, String>)>;

/// The checksums a client sent for a PUT, computed on the write path.
struct Checksums(ChecksumHasher);

impl BodyTap for Checksums {
    fn update(&mut self, data: &[u8]) // A
    {
        self.0.update(data);
    }
}

/// A GET body: a task reads and opens chunks ahead into a small channel, and
/// the response streams from it (s3s needs a `Sync` stream).
struct ResponseBody(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl ResponseBody {
    fn spawn(chunks: impl futures::Stream<Item = Result<Bytes, EngineError>> + Send + 'static) -> Self // A
    {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let task = async move {
            let mut chunks = std::pin::pin!(chunks);
            while let Some(piece) = chunks.next().await {
                let piece = piece.map_err(|error| {
                    tracing::error!(%error, "read failed mid-stream");
                    std::io::Error::other(error.to_string())
                });
                let failed = piece.is_err();
                // A closed channel: the client went away.
                if tx.send(piece).await.is_err() || failed {
                    break;
                }
            }
        };
        // The read's log lines keep the request's id.
        tokio::spawn(tracing::Instrument::in_current_span(task));
        ResponseBody(rx)
    }
}

impl futures::Stream for ResponseBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> // A
    {
        self.0.poll_recv(cx)
    }
}

/// S3's URL encoding for `encoding-type=url` listings: everything but
/// unreserved characters and `/` is percent-encoded.
pub(crate) fn url_encode(value: &str) -> String // A
{
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Opaque continuation tokens: the last key listed, or the last common prefix.
fn encode_token(start: &ListStart) -> String // A
{
    match start {
        ListStart::Beginning => String::new(),
        ListStart::After(key) => format!("k{}", hex::encode(key)),
        ListStart::AfterPrefix(prefix) => format!("p{}", hex::encode(prefix)),
    }
}

pub fn decode_continuation_token(token: &str) -> S3Result<ListStart> // A
{
    let invalid = || s3_error!(InvalidArgument, "The continuation token provided is incorrect");
    let (kind, body) = token.split_at_checked(1).ok_or_else(invalid)?;
    let value = String::from_utf8(hex::decode(body).map_err(|_| invalid())?).map_err(|_| invalid())?;
    match kind {
        "k" => Ok(ListStart::After(value)),
        "p" => Ok(ListStart::AfterPrefix(value)),
        _ => Err(invalid()),
    }
}

/// What a listing asks for.
struct ListQuery<'a> {
    bucket: &'a str,
    prefix: &'a str,
    delimiter: Option<&'a str>,
    start: ListStart,
    max_keys: usize,
}

/// One page of a listing, with common prefixes folded.
struct Listing {
    objects: Vec<ObjectSummary>,
    prefixes: Vec<String>,
    /// Where the next page starts, when truncated.
    next: Option<ListStart>,
}

type ByteRange = std::ops::Range<u64>;

/// The bytes a GET or HEAD asks for: a `Range`, one part of a multipart
/// object (`partNumber`), or everything; and the `Content-Range` to answer.
fn byte_range(blob: &Blob, range: Option<&Range>, part: Option<i32>) -> S3Result<(ByteRange, Option<String>)> // A
{
    let content_range = |r: &ByteRange| format!("bytes {}-{}/{}", r.start, r.end.max(1) - 1, blob.size);
    match (range, part) {
        (Some(_), Some(_)) => Err(s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber")),
        (None, Some(number)) => {
            let sizes: &[u64] = if blob.part_sizes.is_empty() { &[blob.size] } else { &blob.part_sizes };
            let index = usize::try_from(number).ok().filter(|n| (1..=sizes.len()).contains(n)).ok_or_else(|| {
                let message = format!("The object has {} part(s); part {number} does not exist", sizes.len());
                let mut error = S3Error::with_message(S3ErrorCode::Custom("InvalidPartNumber".into()), message);
                error.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
                error
            })?;
            let start: u64 = sizes[..index - 1].iter().sum();
            let part = start..start + sizes[index - 1];
            let header = (!blob.part_sizes.is_empty()).then(|| content_range(&part));
            Ok((part, header))
        }
        (Some(range), None) => {
            // No range of an empty object is satisfiable (RFC 9110 14.1.2):
            // `bytes=-1` would otherwise name byte 0 of nothing.
            let range = range.check(blob.size).ok().filter(|r| !r.is_empty()).ok_or_else(|| {
                let mut error =
                    s3_error!(InvalidRange, "The requested range is not satisfiable (object is {} bytes)", blob.size);
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", blob.size)) {
                    headers.insert(hyper::header::CONTENT_RANGE, value);
                }
                error.set_headers(headers);
                error
            })?;
            let header = content_range(&range);
            Ok((range, Some(header)))
        }
        (None, None) => Ok((0..blob.size, None)),
    }
}

pub(crate) fn check_key(key: &str) -> S3Result<()> // A
{
    if key.len() > MAX_KEY_LEN {
        return Err(s3_error!(KeyTooLongError, "Your key is {} bytes; the limit is {MAX_KEY_LEN}", key.len()));
    }
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "An object key must not be empty"));
    }
    Ok(())
}

/// The one owner. Without DisplayName, which AWS stopped returning in 2025:
/// in a listing of 1000 keys it was 30 KB that every client had to parse.
pub(crate) fn owner() -> Owner // A
{
    Owner { display_name: None, id: Some("ouroboros".into()) }
}

impl<T: Transport, V: ClusterView> Gateway<T, V> {
    pub(crate) async fn require_bucket(&self, bucket: &str) -> S3Result<()> // A
    {
        match self.engine.bucket(bucket).await.map_err(engine_failure)? {
            Some(_) => Ok(()),
            None => Err(s3_error!(NoSuchBucket, "The specified bucket does not exist: {bucket}")),
        }
    }

    async fn list(&self, query: ListQuery<'_>) -> S3Result<Listing> // A
    {
        let ListQuery { bucket, prefix, delimiter, start, max_keys } = query;
        self.require_bucket(bucket).await?;
        let mut listing = Listing { objects: Vec::new(), prefixes: Vec::new(), next: None };
        let mut start = start;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        while listing.objects.len() + listing.prefixes.len() < max_keys {
            let room = max_keys - listing.objects.len() - listing.prefixes.len();
            let (page, more) =
                self.engine.list_objects(bucket, prefix, start.clone(), room).await.map_err(engine_failure)?;
            let mut regrouped = false;
            for object in page {
                let rest = &object.key[prefix.len()..];
                if let Some(at) = delimiter.and_then(|d| rest.find(d).map(|at| at + d.len())) {
                    let common = object.key[..prefix.len() + at].to_string();
                    start = ListStart::AfterPrefix(common.clone());
                    listing.prefixes.push(common);
                    // The rest of this page may sit under the same prefix.
                    regrouped = true;
                    break;
                }
                start = ListStart::After(object.key.clone());
                listing.objects.push(object);
            }
            if !regrouped && !more {
                return Ok(listing);
            }
        }
        // Full page: truncated only if anything follows.
        let (after, _) = self.engine.list_objects(bucket, prefix, start.clone(), 1).await.map_err(engine_failure)?;
        if !after.is_empty() {
            listing.next = Some(start);
        }
        Ok(listing)
    }

    fn object_entry(&self, summary: &ObjectSummary, fetch_owner: bool, url: bool) -> Object // A
    {
        Object {
            key: Some(if url { url_encode(&summary.key) } else { summary.key.clone() }),
            e_tag: Some(ETag::Strong(summary.entry.etag.clone())),
            last_modified: Some(timestamp(summary.entry.created)),
            size: Some(summary.entry.size as i64),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            owner: fetch_owner.then(owner),
            ..Default::default()
        }
    }

    /// Store a request body (unreferenced until committed) and verify its
    /// length, Content-MD5 and the checksums sent in headers or trailers.
    pub(crate) async fn receive_body(&self, body: StreamingBlob, received: Received, trailers: Trailers) -> Stored // A
    {
        let Received { content_length, content_md5, sent, kind } = received;
        let mut hasher = ChecksumHasher::default();
        let SentChecksums { algorithm, crc32, crc32c, sha1, sha256, crc64nvme } = sent;
        let announced = algorithm.as_ref().map(|a| a.as_str().to_ascii_uppercase());
        let mut wanted: Vec<(&Algorithm, Option<String>)> = Vec::new();
        for (algorithm, sent) in ALGORITHMS.iter().zip([crc32, crc32c, sha1, sha256, crc64nvme]) {
            if sent.is_some() || announced.as_deref() == Some(algorithm.name) {
                algorithm.enable(&mut hasher);
                wanted.push((algorithm, sent));
            }
        }
        if let Some(announced) = &announced {
            if !wanted.iter().any(|(algorithm, _)| algorithm.name == announced) {
                return Err(s3_error!(InvalidRequest, "Unsupported checksum algorithm {announced}"));
            }
        }

        let body = body.map_err(|error| std::io::Error::other(error.to_string()));
        let (written, Checksums(hasher)) =
            self.engine.write_body(body, kind, Checksums(hasher)).await.map_err(|error| match error {
                EngineError::Body(cause) => s3_error!(IncompleteBody, "The request body ended early: {cause}"),
                other => engine_failure(other),
            })?;
        if content_length.is_some_and(|len| len != written.size as i64) {
            return Err(s3_error!(IncompleteBody, "The body is {} bytes, Content-Length said otherwise", written.size));
        }
        if let Some(content_md5) = &content_md5 {
            use base64::Engine as _;
            let sent = base64::engine::general_purpose::STANDARD
                .decode(content_md5)
                .map_err(|_| s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid base64"))?;
            if sent != written.md5 {
                return Err(s3_error!(BadDigest, "The Content-MD5 you specified did not match what we received"));
            }
        }

        // Trailing checksums (aws-chunked with trailer) arrive after the body.
        let trailers = trailers.and_then(|t| t.take());
        let computed = hasher.finalize();
        let mut checksums = BTreeMap::new();
        for (algorithm, sent) in wanted {
            let sent = sent.or_else(|| {
                let trailer = trailers.as_ref().and_then(|t| t.get(algorithm.header));
                trailer.and_then(|v| v.to_str().ok()).map(str::to_string)
            });
            let Some(computed) = algorithm.sum(&computed).cloned() else { continue };
            if let Some(sent) = sent {
                if sent != computed {
                    let name = algorithm.name;
                    return Err(s3_error!(BadDigest, "The {name} you specified did not match the calculated checksum"));
                }
            }
            checksums.insert(algorithm.key(), computed);
        }
        Ok((written, checksums))
    }
}

#[async_trait::async_trait]
impl<T: Transport, V: ClusterView> S3 for Gateway<T, V> {
    async fn list_buckets(&self, _req: In<ListBucketsInput>) -> Out<ListBucketsOutput> // A
    {
        let buckets = self.engine.list_buckets().await.map_err(engine_failure)?;
        let buckets = buckets
            .into_iter()
            .map(|b| Bucket { name: Some(b.name), creation_date: Some(timestamp(b.created)), bucket_region: None })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), owner: Some(owner()), ..Default::default() }))
    }

    async fn create_bucket(&self, req: In<CreateBucketInput>) -> Out<CreateBucketOutput> // A
    {
        check_body_verdict(&req.extensions)?;
        let bucket = req.input.bucket;
        if !self.engine.create_bucket(&bucket).await.map_err(engine_failure)? {
            return Err(s3_error!(BucketAlreadyOwnedByYou, "You already own bucket {bucket}"));
        }
        tracing::info!(%bucket, "bucket created");
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn head_bucket(&self, req: In<HeadBucketInput>) -> Out<HeadBucketOutput> // A
    {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() }))
    }

    async fn get_bucket_location(&self, req: In<GetBucketLocationInput>) -> Out<GetBucketLocationOutput> // A
    {
        self.require_bucket(&req.input.bucket).await?;
        // us-east-1 is spelled as no constraint at all.
        let location_constraint =
            (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    async fn delete_bucket(&self, req: In<DeleteBucketInput>) -> Out<DeleteBucketOutput> // A
    {
        let bucket = req.input.bucket;
        let Some(record) = self.engine.bucket(&bucket).await.map_err(engine_failure)? else {
            return Err(s3_error!(NoSuchBucket, "The specified bucket does not exist: {bucket}"));
        };
        let anything = VersionStart::Keys(ListStart::Beginning);
        let (versions, _) = self.engine.list_versions(&bucket, "", anything, 1).await.map_err(engine_failure)?;
        if !versions.is_empty() {
            return Err(s3_error!(BucketNotEmpty, "The bucket you tried to delete is not empty"));
        }
        self.engine.delete_bucket(record).await.map_err(engine_failure)?;
        tracing::info!(%bucket, "bucket deleted");
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_object(&self, req: In<PutObjectInput>) -> Out<PutObjectOutput> // A
    {
        // A browser form (POST policy) reaches here signed with a scope the
        // front door could not see: its region is checked now.
        if let Some(region) = req.region.as_ref().filter(|r| r.as_str() != self.region) {
            return Err(s3_error!(
                AuthorizationHeaderMalformed,
                "The authorization is malformed; the region '{}' is wrong; expecting '{}'",
                region.as_str(),
                self.region
            ));
        }
        let input = req.input;
        let parents = named_parents(&req.headers)?;
        check_key(&input.key)?;
        let versioning = self.versioning(&input.bucket).await?;
        if input.content_length.is_some_and(|len| len > MAX_PUT_SIZE) {
            return Err(s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed size (5 GiB)"));
        }
        let Some(body) = input.body else { return Err(s3_error!(IncompleteBody)) };

        if input.if_none_match.is_some() || input.if_match.is_some() {
            let current = self.engine.latest(&input.bucket, &input.key).await.map_err(engine_failure)?;
            let current = current.filter(|c| c.blob.kind != BlobKind::DeleteMarker);
            if input.if_none_match.as_ref().is_some_and(ETagCondition::is_any) && current.is_some() {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
            if let Some(condition) = &input.if_match {
                let holds = match (&current, condition) {
                    (None, _) => false,
                    (Some(_), ETagCondition::Any) => true,
                    (Some(c), ETagCondition::ETag(etag)) => ETag::Strong(c.blob.etag.clone()).strong_cmp(etag),
                };
                if !holds {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "At least one of the pre-conditions you specified did not hold"
                    ));
                }
            }
        }

        let sent = SentChecksums {
            algorithm: input.checksum_algorithm,
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            crc64nvme: input.checksum_crc64nvme,
        };
        let received = Received {
            content_length: input.content_length,
            content_md5: input.content_md5,
            sent,
            kind: BodyKind::Object,
        };
        let (written, checksums) = self.receive_body(body, received, req.trailing_headers).await?;

        let system = SystemHeaders {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            expires: input.expires,
            website_redirect: input.website_redirect_location,
        };
        let mut request = PutRequest::new(input.bucket, input.key);
        request.system_metadata = system.into_map();
        request.user_metadata = user_metadata(input.metadata);
        request.checksums = checksums;
        request.null_version = versioning != Versioning::Enabled;
        if let Some(parents) = parents {
            // Naming two or more heads merges them; naming an older version
            // writes a sibling beside the current heads instead of over them.
            if parents.len() > 1 {
                request.kind = BlobKind::Merge;
            }
            request.parents = Some(parents);
        }
        let stored = match self.engine.commit(request, written).await {
            Err(EngineError::NoSuchVersion { version }) => {
                return Err(s3_error!(InvalidArgument, "{PARENTS_HEADER}: version {version} does not exist"))
            }
            other => other.map_err(engine_failure)?,
        };
        let checksum = |name: &str| stored.blob.checksums.get(name).cloned();
        let mut dag = HeaderMap::new();
        if let Ok(version) = HeaderValue::from_str(&stored.hash.to_hex()) {
            dag.insert(VERSION_HEADER, version);
        }
        let mut response = S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(stored.blob.etag.clone())),
            version_id: Self::written_version_id(versioning, &stored),
            checksum_crc32: checksum("crc32"),
            checksum_crc32c: checksum("crc32c"),
            checksum_sha1: checksum("sha1"),
            checksum_sha256: checksum("sha256"),
            checksum_crc64nvme: checksum("crc64nvme"),
            ..Default::default()
        });
        response.headers = dag;
        Ok(response)
    }

    async fn get_object(&self, req: In<GetObjectInput>) -> Out<GetObjectOutput> // A
    {
        let input = req.input;
        let (stored, versioning) = self.read_target(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        let version_id = Self::read_version_id(versioning, &stored);
        let dag = self.dag_headers(&req.headers, &stored).await?;
        let blob = stored.blob;
        let read = ReadRequest {
            conditions: Preconditions {
                if_match: input.if_match.as_ref(),
                if_none_match: input.if_none_match.as_ref(),
                if_modified_since: input.if_modified_since.as_ref(),
                if_unmodified_since: input.if_unmodified_since.as_ref(),
            },
            range: input.range.as_ref(),
            part_number: input.part_number,
            overrides: ResponseOverrides {
                content_type: input.response_content_type,
                content_encoding: input.response_content_encoding,
                content_disposition: input.response_content_disposition,
                content_language: input.response_content_language,
                cache_control: input.response_cache_control,
                expires: input.response_expires,
            },
        };
        let (range, content_range, headers) = prepare_read(&blob, read)?;
        let length = range.end - range.start;
        let whole_object = content_range.is_none();
        let body = ResponseBody::spawn(self.engine.read(&blob, range));
        let mut response = S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(length as i64),
            content_range,
            parts_count: (!blob.part_sizes.is_empty()).then_some(blob.part_sizes.len() as i32),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(headers.e_tag.clone()),
            last_modified: Some(headers.last_modified.clone()),
            checksum_crc32: whole_object.then(|| headers.checksum("crc32")).flatten(),
            checksum_crc32c: whole_object.then(|| headers.checksum("crc32c")).flatten(),
            checksum_sha1: whole_object.then(|| headers.checksum("sha1")).flatten(),
            checksum_sha256: whole_object.then(|| headers.checksum("sha256")).flatten(),
            checksum_crc64nvme: whole_object.then(|| headers.checksum("crc64nvme")).flatten(),
            content_type: headers.content_type,
            content_encoding: headers.content_encoding,
            content_disposition: headers.content_disposition,
            content_language: headers.content_language,
            cache_control: headers.cache_control,
            expires: headers.expires,
            website_redirect_location: headers.website_redirect,
            metadata: headers.metadata,
            version_id,
            ..Default::default()
        });
        response.headers = dag;
        Ok(response)
    }

    async fn head_object(&self, req: In<HeadObjectInput>) -> Out<HeadObjectOutput> // A
    {
        let input = req.input;
        let (stored, versioning) = self.read_target(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        let version_id = Self::read_version_id(versioning, &stored);
        let dag = self.dag_headers(&req.headers, &stored).await?;
        let blob = stored.blob;
        let read = ReadRequest {
            conditions: Preconditions {
                if_match: input.if_match.as_ref(),
                if_none_match: input.if_none_match.as_ref(),
                if_modified_since: input.if_modified_since.as_ref(),
                if_unmodified_since: input.if_unmodified_since.as_ref(),
            },
            range: input.range.as_ref(),
            part_number: input.part_number,
            overrides: ResponseOverrides {
                content_type: input.response_content_type,
                content_encoding: input.response_content_encoding,
                content_disposition: input.response_content_disposition,
                content_language: input.response_content_language,
                cache_control: input.response_cache_control,
                expires: input.response_expires,
            },
        };
        let (range, content_range, headers) = prepare_read(&blob, read)?;
        let length = range.end - range.start;
        let mut response = S3Response::new(HeadObjectOutput {
            content_length: Some(length as i64),
            content_range,
            parts_count: (!blob.part_sizes.is_empty()).then_some(blob.part_sizes.len() as i32),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(headers.e_tag.clone()),
            last_modified: Some(headers.last_modified.clone()),
            checksum_crc32: headers.checksum("crc32"),
            checksum_crc32c: headers.checksum("crc32c"),
            checksum_sha1: headers.checksum("sha1"),
            checksum_sha256: headers.checksum("sha256"),
            checksum_crc64nvme: headers.checksum("crc64nvme"),
            content_type: headers.content_type,
            content_encoding: headers.content_encoding,
            content_disposition: headers.content_disposition,
            content_language: headers.content_language,
            cache_control: headers.cache_control,
            expires: headers.expires,
            website_redirect_location: headers.website_redirect,
            metadata: headers.metadata,
            version_id,
            ..Default::default()
        });
        response.headers = dag;
        Ok(response)
    }

    async fn delete_object(&self, req: In<DeleteObjectInput>) -> Out<DeleteObjectOutput> // A
    {
        let input = req.input;
        let deleted = self.delete_versioned(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: deleted.delete_marker.then_some(true),
            version_id: deleted.version_id,
            ..Default::default()
        }))
    }

    async fn delete_objects(&self, req: In<DeleteObjectsInput>) -> Out<DeleteObjectsOutput> // A
    {
        check_body_verdict(&req.extensions)?;
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "A delete request names at most 1000 keys"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            let named = object.version_id.clone();
            match self.delete_versioned(&input.bucket, &object.key, named.as_deref()).await {
                Ok(_) if quiet => {}
                Ok(done) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    delete_marker: done.delete_marker.then_some(true),
                    // A new marker is named as the marker; a removed version as the version.
                    delete_marker_version_id: done.delete_marker.then(|| done.version_id.clone()).flatten(),
                    version_id: named.and(done.version_id),
                }),
                Err(error) => errors.push(Error {
                    code: Some(error.code().as_str().to_string()),
                    message: error.message().map(str::to_string),
                    key: Some(object.key),
                    version_id: named,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: In<CopyObjectInput>) -> Out<CopyObjectOutput> // A
    {
        let input = req.input;
        let CopySource::Bucket { bucket: source_bucket, key: source_key, version_id: source_version } =
            &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "Copy sources other than bucket/key are not supported"));
        };
        check_key(&input.key)?;
        let (source, source_versioning) =
            self.copy_source(source_bucket, source_key, source_version.as_deref()).await?;
        let versioning = self.versioning(&input.bucket).await?;
        let conditions = Preconditions {
            if_match: input.copy_source_if_match.as_ref(),
            if_none_match: input.copy_source_if_none_match.as_ref(),
            if_modified_since: input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        };
        check_preconditions(&source.blob, conditions, S3ErrorCode::PreconditionFailed)?;
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && **source_bucket == *input.bucket && **source_key == *input.key && source_version.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let (system_metadata, user_metadata) = if replace {
            let system = SystemHeaders {
                content_type: input.content_type,
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: input.expires,
                website_redirect: input.website_redirect_location,
            };
            (system.into_map(), user_metadata(input.metadata))
        } else {
            (source.blob.system_metadata.clone(), source.blob.user_metadata.clone())
        };
        // The copy shares the source's chunks: no byte is read or stored again.
        let mut request = PutRequest::new(input.bucket.clone(), input.key.clone());
        request.system_metadata = system_metadata;
        request.user_metadata = user_metadata;
        request.checksums = source.blob.checksums.clone();
        request.null_version = versioning != Versioning::Enabled;
        let copy_source_version_id = Self::read_version_id(source_versioning, &source);
        let content = BlobContent {
            size: source.blob.size,
            etag: source.blob.etag.clone(),
            chunks: self.engine.chunks_in(&source.blob, 0, source.blob.size).await.map_err(engine_failure)?,
            part_sizes: source.blob.part_sizes.clone(),
        };
        let stored = self.engine.commit_content(request, content).await.map_err(engine_failure)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(stored.blob.etag.clone())),
                last_modified: Some(timestamp(stored.blob.created)),
                ..Default::default()
            }),
            copy_source_version_id,
            version_id: Self::written_version_id(versioning, &stored),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(&self, req: In<CreateMultipartUploadInput>) -> Out<CreateMultipartUploadOutput> // A
    {
        Ok(S3Response::new(self.create_upload(req.input).await?))
    }

    async fn upload_part_copy(&self, req: In<UploadPartCopyInput>) -> Out<UploadPartCopyOutput> // A
    {
        Ok(S3Response::new(self.upload_part_copy(req.input).await?))
    }

    async fn upload_part(&self, req: In<UploadPartInput>) -> Out<UploadPartOutput> // A
    {
        Ok(S3Response::new(self.upload_part_body(req.input, req.trailing_headers).await?))
    }

    async fn complete_multipart_upload(&self, req: In<CompleteMultipartUploadInput>) -> Out<Completion> // A
    {
        check_body_verdict(&req.extensions)?;
        Ok(S3Response::new(self.complete_upload(req.input).await?))
    }

    async fn abort_multipart_upload(&self, req: In<AbortMultipartUploadInput>) -> Out<AbortMultipartUploadOutput> // A
    {
        Ok(S3Response::new(self.abort_upload(req.input).await?))
    }

    async fn list_parts(&self, req: In<ListPartsInput>) -> Out<ListPartsOutput> // A
    {
        Ok(S3Response::new(self.list_upload_parts(req.input).await?))
    }

    async fn list_multipart_uploads(&self, req: In<ListMultipartUploadsInput>) -> Out<ListMultipartUploadsOutput> // A
    {
        Ok(S3Response::new(self.list_uploads(req.input).await?))
    }

    async fn put_bucket_versioning(&self, req: In<PutBucketVersioningInput>) -> Out<PutBucketVersioningOutput> // A
    {
        check_body_verdict(&req.extensions)?;
        Ok(S3Response::new(self.put_versioning(req.input).await?))
    }

    async fn get_bucket_versioning(&self, req: In<GetBucketVersioningInput>) -> Out<GetBucketVersioningOutput> // A
    {
        Ok(S3Response::new(self.get_versioning(&req.input.bucket).await?))
    }

    async fn list_object_versions(&self, req: In<ListObjectVersionsInput>) -> Out<ListObjectVersionsOutput> // A
    {
        Ok(S3Response::new(self.list_versions(req.input).await?))
    }

    async fn list_objects_v2(&self, req: In<ListObjectsV2Input>) -> Out<ListObjectsV2Output> // A
    {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let start = match (&input.continuation_token, &input.start_after) {
            (Some(token), _) => decode_continuation_token(token)?,
            (None, Some(after)) if !after.is_empty() => ListStart::After(after.clone()),
            _ => ListStart::Beginning,
        };
        let query = ListQuery {
            bucket: &input.bucket,
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            start,
            max_keys: max_keys.min(MAX_KEYS) as usize,
        };
        let listing = self.list(query).await?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let encode = |value: String| if url { url_encode(&value) } else { value };
        let fetch_owner = input.fetch_owner.unwrap_or(false);
        let contents: Vec<Object> = listing.objects.iter().map(|o| self.object_entry(o, fetch_owner, url)).collect();
        let common_prefixes: Vec<CommonPrefix> =
            listing.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(encode(p)) }).collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode(prefix)),
            delimiter: input.delimiter.map(encode),
            max_keys: Some(max_keys),
            key_count: Some((contents.len() + common_prefixes.len()) as i32),
            is_truncated: Some(listing.next.is_some()),
            next_continuation_token: listing.next.as_ref().map(encode_token),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(encode),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: In<ListObjectsInput>) -> Out<ListObjectsOutput> // A
    {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        // A marker that is a common prefix (it ends with the delimiter)
        // resumes after every key under it.
        let start = match (&input.marker, input.delimiter.as_deref()) {
            (Some(marker), Some(d)) if !d.is_empty() && marker.ends_with(d) => ListStart::AfterPrefix(marker.clone()),
            (Some(marker), _) if !marker.is_empty() => ListStart::After(marker.clone()),
            _ => ListStart::Beginning,
        };
        let query = ListQuery {
            bucket: &input.bucket,
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            start,
            max_keys: max_keys.min(MAX_KEYS) as usize,
        };
        let listing = self.list(query).await?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let encode = |value: String| if url { url_encode(&value) } else { value };
        // V1's NextMarker (sent only with a delimiter) is the last key or
        // common prefix returned.
        let next_marker = listing.next.as_ref().map(|next| match next {
            ListStart::After(key) | ListStart::AfterPrefix(key) => key.clone(),
            ListStart::Beginning => String::new(),
        });
        let has_delimiter = input.delimiter.is_some();
        // V1 entries carry no Owner, as in Garage (AWS and MinIO send one).
        // Ours would be the same constant in every entry (one owner, and no
        // DisplayName since AWS dropped it), and decoding it cost rclone,
        // which lists with v1, 15% of every listing. ListObjectsV2 still
        // sends it when asked (fetch-owner).
        let contents: Vec<Object> = listing.objects.iter().map(|o| self.object_entry(o, false, url)).collect();
        let common_prefixes: Vec<CommonPrefix> =
            listing.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(encode(p)) }).collect();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode(prefix)),
            delimiter: input.delimiter.map(encode),
            marker: input.marker.map(encode),
            max_keys: Some(max_keys),
            is_truncated: Some(listing.next.is_some()),
            next_marker: next_marker.filter(|_| has_delimiter).map(encode),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            ..Default::default()
        }))
    }
}
