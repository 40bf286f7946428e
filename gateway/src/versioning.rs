//! S3 versioning over the blob DAG: a bucket's versioning state, version ids
//! (a blob's hash, or "null" for a version written with versioning off),
//! reads and deletes of a given version, delete markers, and
//! ListObjectVersions.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, LAST_MODIFIED};
use hyper::HeaderMap;
use ouroboros_core::cluster::{ClusterView, Transport};
use ouroboros_core::{
    Blob, BlobKind, BodyKind, BucketRecord, Hash, ListStart, ObjectSummary, PutRequest, StoredBlob, VersionStart,
    Versioning, NULL_VERSION_ID,
};
use s3s::dto::*;
use s3s::header::{X_AMZ_DELETE_MARKER, X_AMZ_VERSION_ID};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

use crate::dag_headers::{CHILDREN_HEADER, HEADS_HEADER, PARENTS_HEADER, VERSION_HEADER};
use crate::s3::{engine_failure, owner, timestamp, url_encode, Gateway, MAX_KEYS};

/// A version a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionRef {
    Null,
    Id(Hash),
}

/// Parse a `versionId` parameter: "null" or a version hash.
pub(crate) fn parse_version_id(id: &str) -> S3Result<VersionRef> // A
{
    if id == NULL_VERSION_ID {
        return Ok(VersionRef::Null);
    }
    id.parse::<Hash>().map(VersionRef::Id).map_err(|_| s3_error!(InvalidArgument, "Invalid version id specified"))
}

/// The S3 version id of a stored blob.
pub(crate) fn version_id(hash: &Hash, blob: &Blob) -> String // A
{
    if blob.null_version {
        NULL_VERSION_ID.to_string()
    } else {
        hash.to_hex()
    }
}

/// The version a read resolved to, and the bucket's versioning state.
type ReadTarget = S3Result<(StoredBlob, Versioning)>;

/// What a delete did, for the response headers.
#[derive(Debug, Default)]
pub(crate) struct Deleted {
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

/// An error that carries the delete-marker headers S3 sends with it.
fn delete_marker_error(code: S3ErrorCode, message: &'static str, marker: &StoredBlob) -> S3Error // A
{
    let mut error = S3Error::with_message(code, message);
    let mut headers = HeaderMap::new();
    // The headers replace the whole map of the error response.
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert(X_AMZ_DELETE_MARKER, HeaderValue::from_static("true"));
    if let Ok(id) = HeaderValue::from_str(&version_id(&marker.hash, &marker.blob)) {
        headers.insert(X_AMZ_VERSION_ID, id);
    }
    let mut date = Vec::new();
    if timestamp(marker.blob.created).format(TimestampFormat::HttpDate, &mut date).is_ok() {
        if let Ok(value) = HeaderValue::from_bytes(&date) {
            headers.insert(LAST_MODIFIED, value);
        }
    }
    error.set_headers(headers);
    error
}

/// One entry of a version listing page.
enum Listed {
    Version { summary: ObjectSummary, latest: bool },
    Prefix(String),
}

impl<T: Transport, V: ClusterView> Gateway<T, V> {
    /// A live bucket's record, or NoSuchBucket.
    pub(crate) async fn bucket_record(&self, bucket: &str) -> S3Result<BucketRecord> // A
    {
        self.engine()
            .bucket(bucket)
            .await
            .map_err(engine_failure)?
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist: {bucket}"))
    }

    /// A bucket's versioning state, or NoSuchBucket.
    pub(crate) async fn versioning(&self, bucket: &str) -> S3Result<Versioning> // A
    {
        Ok(self.bucket_record(bucket).await?.versioning)
    }

    /// The version id a write answers with: only versioned buckets name it.
    pub(crate) fn written_version_id(versioning: Versioning, stored: &StoredBlob) -> Option<String> // A
    {
        (versioning == Versioning::Enabled).then(|| stored.hash.to_hex())
    }

    /// The version id a read answers with: once versioning was ever set.
    pub(crate) fn read_version_id(versioning: Versioning, stored: &StoredBlob) -> Option<String> // A
    {
        (versioning != Versioning::Unversioned).then(|| version_id(&stored.hash, &stored.blob))
    }

    /// The version a GET, HEAD or copy reads: the current one, or the one
    /// named. Delete markers answer as S3 does: NoSuchKey when current,
    /// MethodNotAllowed when named, both with the marker's headers.
    pub(crate) async fn read_target(&self, bucket: &str, key: &str, version: Option<&str>) -> ReadTarget // A
    {
        let versioning = self.versioning(bucket).await?;
        let Some(version) = version else {
            return match self.engine().latest(bucket, key).await.map_err(engine_failure)? {
                Some(stored) if stored.blob.kind == BlobKind::DeleteMarker => {
                    Err(delete_marker_error(S3ErrorCode::NoSuchKey, "The specified key does not exist.", &stored))
                }
                Some(stored) => Ok((stored, versioning)),
                None => Err(s3_error!(NoSuchKey, "The specified key does not exist.")),
            };
        };
        let version = parse_version_id(version)?;
        match self.find_version(bucket, key, version).await? {
            Some(stored) if stored.blob.kind == BlobKind::DeleteMarker => Err(delete_marker_error(
                S3ErrorCode::MethodNotAllowed,
                "The specified method is not allowed against this resource.",
                &stored,
            )),
            Some(stored) => Ok((stored, versioning)),
            None => Err(s3_error!(NoSuchVersion, "The specified version does not exist.")),
        }
    }

    /// The version a copy reads (CopyObject, UploadPartCopy): as for a GET,
    /// except that naming a delete marker is an invalid request.
    pub(crate) async fn copy_source(&self, bucket: &str, key: &str, version: Option<&str>) -> ReadTarget // A
    {
        match self.read_target(bucket, key, version).await {
            Err(error) if version.is_some() && error.code() == &S3ErrorCode::MethodNotAllowed => Err(s3_error!(
                InvalidRequest,
                "The source of a copy request may not specifically refer to a delete marker by version id."
            )),
            other => other,
        }
    }

    /// A version of this key, if it exists.
    async fn find_version(&self, bucket: &str, key: &str, version: VersionRef) -> S3Result<Option<StoredBlob>> // A
    {
        let hash = match version {
            VersionRef::Id(hash) => hash,
            VersionRef::Null => {
                let versions = self.engine().key_versions(bucket, key).await.map_err(engine_failure)?;
                match versions.into_iter().find(|v| v.entry.null_version) {
                    Some(null) => null.version,
                    None => return Ok(None),
                }
            }
        };
        let blob = self.engine().get_blob(bucket, key, &hash).await.map_err(engine_failure)?;
        Ok(blob.filter(|b| b.bucket == bucket && b.key == key).map(|blob| StoredBlob { hash, blob }))
    }

    /// S3's DELETE of a key or of one of its versions.
    pub(crate) async fn delete_versioned(&self, bucket: &str, key: &str, version: Option<&str>) -> S3Result<Deleted> // A
    {
        let versioning = self.versioning(bucket).await?;
        if let Some(version) = version {
            let version = parse_version_id(version)?;
            let Some(target) = self.find_version(bucket, key, version).await? else {
                return Ok(Deleted { version_id: Some(version_string(version)), delete_marker: false });
            };
            self.engine().forget_version(bucket, key, &target.hash).await.map_err(engine_failure)?;
            return Ok(Deleted {
                version_id: Some(version_id(&target.hash, &target.blob)),
                delete_marker: target.blob.kind == BlobKind::DeleteMarker,
            });
        }
        match versioning {
            // Versioning off: the object goes, and nothing marks where it was.
            Versioning::Unversioned => {
                for version in self.engine().key_versions(bucket, key).await.map_err(engine_failure)? {
                    self.engine().forget_version(bucket, key, &version.version).await.map_err(engine_failure)?;
                }
                Ok(Deleted::default())
            }
            Versioning::Enabled | Versioning::Suspended => {
                let null_version = versioning == Versioning::Suspended;
                let marker = self.write_delete_marker(bucket, key, null_version).await?;
                Ok(Deleted { version_id: Some(version_id(&marker.hash, &marker.blob)), delete_marker: true })
            }
        }
    }

    async fn write_delete_marker(&self, bucket: &str, key: &str, null_version: bool) -> S3Result<StoredBlob> // A
    {
        let mut marker = PutRequest::new(bucket, key);
        marker.kind = BlobKind::DeleteMarker;
        marker.null_version = null_version;
        let nothing = futures::stream::empty::<std::io::Result<Bytes>>();
        let (empty, ()) = self.engine().write_body(nothing, BodyKind::Object, ()).await.map_err(engine_failure)?;
        self.engine().commit(marker, empty).await.map_err(engine_failure)
    }

    pub(crate) async fn put_versioning(&self, input: PutBucketVersioningInput) -> S3Result<PutBucketVersioningOutput> // A
    {
        let record = self.bucket_record(&input.bucket).await?;
        let status = input.versioning_configuration.status.as_ref().map(|s| s.as_str().to_string());
        let versioning = match status.as_deref() {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => return Err(s3_error!(MalformedXML, "Versioning status must be Enabled or Suspended")),
        };
        if input.versioning_configuration.mfa_delete.as_ref().is_some_and(|m| m.as_str() == MFADelete::ENABLED) {
            return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
        }
        if record.versioning != versioning {
            self.engine().set_versioning(record, versioning).await.map_err(engine_failure)?;
        }
        Ok(PutBucketVersioningOutput {})
    }

    pub(crate) async fn get_versioning(&self, bucket: &str) -> S3Result<GetBucketVersioningOutput> // A
    {
        let status = match self.versioning(bucket).await? {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED)),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED)),
        };
        Ok(GetBucketVersioningOutput { status, mfa_delete: None })
    }

    /// Where a version listing resumes, from the client's markers.
    async fn version_listing_start(&self, input: &ListObjectVersionsInput) -> S3Result<VersionStart> // A
    {
        let key_marker = input.key_marker.as_deref().filter(|k| !k.is_empty());
        let version_marker = input.version_id_marker.as_deref().filter(|v| !v.is_empty());
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        Ok(match (key_marker, version_marker) {
            (None, None) => VersionStart::Keys(ListStart::Beginning),
            (None, Some(_)) => {
                return Err(s3_error!(InvalidArgument, "A version-id marker cannot be specified without a key marker."))
            }
            (Some(key), None) => match delimiter {
                // A marker that is a common prefix already listed skips the whole group.
                Some(d) if key.ends_with(d) => VersionStart::Keys(ListStart::AfterPrefix(key.to_string())),
                _ => VersionStart::Keys(ListStart::After(key.to_string())),
            },
            (Some(key), Some(version)) => {
                let version = parse_version_id(version)?;
                match self.find_version(&input.bucket, key, version).await? {
                    Some(marker) => VersionStart::AfterVersion {
                        key: key.to_string(),
                        created: marker.blob.created,
                        version: marker.hash,
                    },
                    // The marker version is gone: carry on with the next key.
                    None => VersionStart::Keys(ListStart::After(key.to_string())),
                }
            }
        })
    }

    pub(crate) async fn list_versions(&self, input: ListObjectVersionsInput) -> S3Result<ListObjectVersionsOutput> // A
    {
        self.bucket_record(&input.bucket).await?;
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let mut start = self.version_listing_start(&input).await?;
        // Entries of the marker's key continue a key already begun.
        let mut last_key = match &start {
            VersionStart::AfterVersion { key, .. } => Some(key.clone()),
            VersionStart::Keys(_) => None,
        };
        let mut entries: Vec<Listed> = Vec::new();
        let mut truncated = false;
        'pages: while max_keys > 0 && entries.len() <= max_keys {
            let want = max_keys - entries.len() + 1;
            let (page, more) = self
                .engine()
                .list_versions(&input.bucket, &prefix, start.clone(), want)
                .await
                .map_err(engine_failure)?;
            let mut next = None;
            for summary in page {
                if entries.len() == max_keys {
                    truncated = true;
                    break 'pages;
                }
                let group = delimiter.as_deref().and_then(|d| {
                    let rest = summary.key.get(prefix.len()..)?;
                    rest.find(d).map(|at| summary.key[..prefix.len() + at + d.len()].to_string())
                });
                if let Some(group) = group {
                    entries.push(Listed::Prefix(group.clone()));
                    next = Some((VersionStart::Keys(ListStart::AfterPrefix(group)), true));
                    break;
                }
                let latest = last_key.as_deref() != Some(summary.key.as_str());
                last_key = Some(summary.key.clone());
                next = Some((
                    VersionStart::AfterVersion {
                        key: summary.key.clone(),
                        created: summary.entry.created,
                        version: summary.version,
                    },
                    false,
                ));
                entries.push(Listed::Version { summary, latest });
            }
            match next {
                Some((resume, cut)) if more || cut => start = resume,
                _ => break,
            }
        }

        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let encode = |value: &str| if url { url_encode(value) } else { value.to_string() };
        let (mut next_key_marker, mut next_version_id_marker) = (None, None);
        if truncated {
            match entries.last() {
                Some(Listed::Version { summary, .. }) => {
                    next_key_marker = Some(encode(&summary.key));
                    next_version_id_marker = Some(summary.version_id());
                }
                Some(Listed::Prefix(group)) => next_key_marker = Some(encode(group)),
                None => {}
            }
        }
        let mut versions = Vec::new();
        let mut delete_markers = Vec::new();
        let mut common_prefixes = Vec::new();
        for entry in entries {
            match entry {
                Listed::Prefix(group) => common_prefixes.push(CommonPrefix { prefix: Some(encode(&group)) }),
                Listed::Version { summary, latest } if summary.entry.kind == BlobKind::DeleteMarker => delete_markers
                    .push(DeleteMarkerEntry {
                        is_latest: Some(latest),
                        key: Some(encode(&summary.key)),
                        last_modified: Some(timestamp(summary.entry.created)),
                        owner: Some(owner()),
                        version_id: Some(summary.version_id()),
                    }),
                Listed::Version { summary, latest } => versions.push(ObjectVersion {
                    e_tag: Some(ETag::Strong(summary.entry.etag.clone())),
                    is_latest: Some(latest),
                    key: Some(encode(&summary.key)),
                    last_modified: Some(timestamp(summary.entry.created)),
                    owner: Some(owner()),
                    size: Some(summary.entry.size as i64),
                    storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                    version_id: Some(summary.version_id()),
                    ..Default::default()
                }),
            }
        }
        Ok(ListObjectVersionsOutput {
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            delete_markers: (!delete_markers.is_empty()).then_some(delete_markers),
            versions: (!versions.is_empty()).then_some(versions),
            delimiter: delimiter.map(|d| encode(&d)),
            encoding_type: input.encoding_type.clone(),
            is_truncated: Some(truncated),
            key_marker: Some(input.key_marker.as_deref().map(encode).unwrap_or_default()),
            version_id_marker: Some(input.version_id_marker.clone().unwrap_or_default()),
            max_keys: Some(max_keys as i32),
            name: Some(input.bucket.clone()),
            prefix: Some(encode(&prefix)),
            next_key_marker,
            next_version_id_marker,
            ..Default::default()
        })
    }
}

fn version_string(version: VersionRef) -> String // A
{
    match version {
        VersionRef::Null => NULL_VERSION_ID.to_string(),
        VersionRef::Id(hash) => hash.to_hex(),
    }
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: String) // A
{
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

fn join_hashes(hashes: &[Hash]) -> String // A
{
    hashes.iter().map(Hash::to_hex).collect::<Vec<_>>().join(",")
}

impl<T: Transport, V: ClusterView> Gateway<T, V> {
    /// Headers telling where a version sits in the DAG: always its hash and
    /// parents; the key's current heads and the version's children when the
    /// request asks for them.
    pub(crate) async fn dag_headers(&self, request: &HeaderMap, stored: &StoredBlob) -> S3Result<HeaderMap> // A
    {
        let mut headers = HeaderMap::new();
        insert_header(&mut headers, VERSION_HEADER, stored.hash.to_hex());
        insert_header(&mut headers, PARENTS_HEADER, join_hashes(&stored.blob.parents));
        let (bucket, key) = (&stored.blob.bucket, &stored.blob.key);
        if request.contains_key(HEADS_HEADER) {
            let heads = self.engine().heads(bucket, key).await.map_err(engine_failure)?;
            let listed: Vec<String> = heads
                .iter()
                .map(|h| {
                    format!("{};created={};size={};writer={}", h.version, h.entry.created, h.entry.size, h.entry.writer)
                })
                .collect();
            insert_header(&mut headers, HEADS_HEADER, listed.join(","));
        }
        if request.contains_key(CHILDREN_HEADER) {
            let children = self.engine().children(bucket, key, &stored.hash).await.map_err(engine_failure)?;
            insert_header(&mut headers, CHILDREN_HEADER, join_hashes(&children));
        }
        Ok(headers)
    }
}
