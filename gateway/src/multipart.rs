//! Multipart uploads on the chunk model: each part's body is chunked and
//! stored as it arrives and recorded as a row; completing an upload stitches
//! the parts' chunk lists into one blob, so no byte is copied.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use ouroboros_core::cluster::{ClusterView, Transport};
use ouroboros_core::codec;
use ouroboros_core::world::World;
use ouroboros_core::{
    BodyKind, ChunkRef, Engine, Home, PartOf, PartRecord, PutRequest, TableRow, UploadRecord, Versioning,
};
use s3s::dto::*;
use s3s::{s3_error, S3ErrorCode, S3Result};

use crate::s3::{
    check_key, check_preconditions, engine_failure, internal_fault, timestamp, Gateway, Preconditions, Received,
    SentChecksums, SystemHeaders, Trailers,
};

type Created = S3Result<CreateMultipartUploadOutput>;
type Uploaded = S3Result<UploadPartOutput>;
type Completed = S3Result<CompleteMultipartUploadOutput>;
type CopiedPart = S3Result<UploadPartCopyOutput>;
type PartRows = S3Result<Vec<PartRecord>>;

/// Table ids of the multipart rows.
const UPLOADS: u8 = 1;
const PARTS: u8 = 2;

/// S3's limits.
pub const MAX_PART_NUMBER: i32 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_LISTED: i32 = 1000;

/// Upload rows sort by bucket, key, then upload id (which starts with the
/// initiation time), as ListMultipartUploads orders them.
fn upload_row_key(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> // PA
{
    [bucket.as_bytes(), &[0], key.as_bytes(), &[0], upload_id.as_bytes()].concat()
}

fn part_row_key(upload_id: &str, number: u16) -> Vec<u8> // PA
{
    [upload_id.as_bytes(), &[0], &number.to_be_bytes()].concat()
}

/// Upload ids sort by when they began; the random part keeps them unguessable.
fn new_upload_id(world: &World) -> String // PA
{
    format!("{:016x}{}", world.now_nanos(), hex::encode(world.random_bytes::<12>()))
}

/// Part rows of an upload, by part number, from the one after `after`.
async fn part_rows<T: Transport, V: ClusterView>(engine: &Engine<T, V>, id: &str, after: u16, max: usize) -> PartRows // A
{
    let prefix = [id.as_bytes(), &[0]].concat();
    let after = if after == 0 { Vec::new() } else { part_row_key(id, after) };
    let rows = engine.scan_rows(PARTS, &prefix, &after, max).await.map_err(engine_failure)?;
    rows.into_iter()
        .map(|(_, bytes)| {
            codec::decode(&bytes).map_err(|error| {
                tracing::error!(%error, upload_id = id, "damaged part record");
                internal_fault()
            })
        })
        .collect()
}

/// Cut the junctions between a part just stored and the parts beside it
/// again in the background, so completing the upload finds them done.
fn prepare_junctions<T: Transport, V: ClusterView>(engine: &Engine<T, V>, upload_id: &str, number: u16) // A
{
    let (engine, upload_id) = (engine.clone(), upload_id.to_owned());
    tokio::spawn(async move {
        let Ok(near) = part_rows(&engine, &upload_id, number.saturating_sub(2), 3).await else { return };
        for pair in near.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            if after.number == before.number + 1 && (before.number == number || after.number == number) {
                engine.prepare_junction(before, after).await;
            }
        }
    });
}

/// The byte range of `x-amz-copy-source-range` (`bytes=FIRST-LAST`,
/// inclusive), or the whole object.
fn copy_range(header: Option<&str>, size: u64) -> S3Result<std::ops::Range<u64>> // A
{
    let Some(header) = header else { return Ok(0..size) };
    let bad = || s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last");
    let (first, last) = header.strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidRange,
            "The x-amz-copy-source-range {header} is not satisfiable for an object of {size} bytes"
        ));
    }
    Ok(first..last + 1)
}

fn trim_etag(etag: &str) -> &str // A
{
    etag.trim_matches('"')
}

fn part_number(number: i32) -> S3Result<u16> // A
{
    if (1..=MAX_PART_NUMBER).contains(&number) {
        Ok(number as u16)
    } else {
        Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"))
    }
}

impl<T: Transport, V: ClusterView> Gateway<T, V> {
    async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<UploadRecord> // A
    {
        self.require_bucket(bucket).await?;
        let home = Home { bucket, key };
        let row = self
            .engine()
            .get_row(home, UPLOADS, upload_row_key(bucket, key, upload_id))
            .await
            .map_err(engine_failure)?;
        let Some(bytes) = row else {
            return Err(s3_error!(NoSuchUpload, "The specified multipart upload does not exist: {upload_id}"));
        };
        codec::decode(&bytes).map_err(|error| {
            tracing::error!(%error, upload_id, "damaged upload record");
            internal_fault()
        })
    }

    /// Every part row of an upload, by part number.
    async fn parts(&self, upload_id: &str, after: u16, max: usize) -> S3Result<Vec<PartRecord>> // A
    {
        part_rows(self.engine(), upload_id, after, max).await
    }

    async fn forget_upload(&self, upload: &UploadRecord, parts: &[PartRecord]) -> S3Result<()> // A
    {
        let home = Home { bucket: &upload.bucket, key: &upload.key };
        for part in parts {
            self.engine()
                .delete_row(home, PARTS, part_row_key(&upload.upload_id, part.number))
                .await
                .map_err(engine_failure)?;
        }
        let row = upload_row_key(&upload.bucket, &upload.key, &upload.upload_id);
        self.engine().delete_row(home, UPLOADS, row).await.map_err(engine_failure)
    }

    pub(crate) async fn create_upload(&self, input: CreateMultipartUploadInput) -> Created // A
    {
        check_key(&input.key)?;
        self.require_bucket(&input.bucket).await?;
        let system = SystemHeaders {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            expires: input.expires,
            website_redirect: input.website_redirect_location,
        };
        let upload = UploadRecord {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            upload_id: new_upload_id(self.engine().world()),
            initiated: self.engine().world().now_nanos(),
            system_metadata: system.into_map(),
            user_metadata: crate::s3::user_metadata(input.metadata),
            checksum_algorithm: input.checksum_algorithm.as_ref().map(|a| a.as_str().to_ascii_lowercase()),
        };
        let home = Home { bucket: &upload.bucket, key: &upload.key };
        let row = upload_row_key(&upload.bucket, &upload.key, &upload.upload_id);
        let row = TableRow { table: UPLOADS, key: row, value: codec::encode(&upload), chunks: Vec::new() };
        self.engine().put_row(home, row).await.map_err(engine_failure)?;
        Ok(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.upload_id),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        })
    }

    pub(crate) async fn upload_part_body(&self, input: UploadPartInput, trailers: Trailers) -> Uploaded // A
    {
        let number = part_number(input.part_number)?;
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        if input.content_length.is_some_and(|len| len > crate::s3::MAX_PUT_SIZE) {
            return Err(s3_error!(EntityTooLarge, "A part is at most 5 GiB"));
        }
        let Some(body) = input.body else { return Err(s3_error!(IncompleteBody)) };
        let sent = SentChecksums {
            algorithm: input.checksum_algorithm,
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            crc64nvme: input.checksum_crc64nvme,
        };
        let kind = BodyKind::Part(PartOf { upload: upload.upload_id.clone(), number });
        let received = Received { content_length: input.content_length, content_md5: input.content_md5, sent, kind };
        let (written, checksums) = self.receive_body(body, received, trailers).await?;
        let part = written.into_part(number, self.engine().world().now_nanos(), checksums);
        self.store_part(&upload, &part).await?;
        let checksum = |name: &str| part.checksums.get(name).cloned();
        Ok(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag.clone())),
            checksum_crc32: checksum("crc32"),
            checksum_crc32c: checksum("crc32c"),
            checksum_sha1: checksum("sha1"),
            checksum_sha256: checksum("sha256"),
            checksum_crc64nvme: checksum("crc64nvme"),
            ..Default::default()
        })
    }

    /// UploadPartCopy: a part made of a range of another object. Chunks that
    /// lie wholly inside the range are reused as they are; only the partial
    /// chunks at its two ends are stored again. The range is read once, for
    /// the part's MD5 and for those ends.
    pub(crate) async fn upload_part_copy(&self, input: UploadPartCopyInput) -> CopiedPart // A
    {
        let number = part_number(input.part_number)?;
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let CopySource::Bucket { bucket: source_bucket, key: source_key, version_id } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "Copy sources other than bucket/key are not supported"));
        };
        let (source, versioning) = self.copy_source(source_bucket, source_key, version_id.as_deref()).await?;
        let conditions = Preconditions {
            if_match: input.copy_source_if_match.as_ref(),
            if_none_match: input.copy_source_if_none_match.as_ref(),
            if_modified_since: input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        };
        check_preconditions(&source.blob, conditions, S3ErrorCode::PreconditionFailed)?;
        let range = copy_range(input.copy_source_range.as_deref(), source.blob.size)?;
        if range.end - range.start > crate::s3::MAX_PUT_SIZE as u64 {
            return Err(s3_error!(InvalidRequest, "A copied part is at most 5 GiB"));
        }

        let blob = &source.blob;
        let overlapping = self.engine().chunks_in(blob, range.start, range.end).await.map_err(engine_failure)?;
        let mut pieces = std::pin::pin!(self.engine().read(blob, range.clone()));
        let mut md5 = Md5::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        for chunk in overlapping {
            let Some(piece) = pieces.next().await else {
                tracing::error!("the copy source ended before its last chunk");
                return Err(internal_fault());
            };
            let piece = piece.map_err(engine_failure)?;
            md5.update(&piece);
            let whole = chunk.offset >= range.start && chunk.offset + chunk.len as u64 <= range.end;
            if whole {
                chunks.push(ChunkRef { offset: size, ..chunk });
            } else {
                let one = futures::stream::iter([Ok::<Bytes, std::io::Error>(piece.clone())]);
                let (written, ()) =
                    self.engine().write_body(one, BodyKind::Object, ()).await.map_err(engine_failure)?;
                chunks.extend(written.chunks.into_iter().map(|c| ChunkRef { offset: size + c.offset, ..c }));
            }
            size += piece.len() as u64;
        }
        let part = PartRecord {
            number,
            etag: hex::encode(md5.finalize()),
            size,
            created: self.engine().world().now_nanos(),
            chunks,
            checksums: BTreeMap::new(),
            lead: None,
        };
        self.store_part(&upload, &part).await?;
        Ok(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag.clone())),
                last_modified: Some(timestamp(part.created)),
                ..Default::default()
            }),
            copy_source_version_id: Self::read_version_id(versioning, &source),
            ..Default::default()
        })
    }

    /// Record a part; a part uploaded again replaces the earlier one.
    async fn store_part(&self, upload: &UploadRecord, part: &PartRecord) -> S3Result<()> // A
    {
        let home = Home { bucket: &upload.bucket, key: &upload.key };
        let row = part_row_key(&upload.upload_id, part.number);
        let chunks = part.chunks.iter().map(|c| c.id).collect();
        let row = TableRow { table: PARTS, key: row, value: codec::encode(part), chunks };
        self.engine().put_row(home, row).await.map_err(engine_failure)?;
        prepare_junctions(self.engine(), &upload.upload_id, part.number);
        Ok(())
    }

    pub(crate) async fn complete_upload(&self, input: CompleteMultipartUploadInput) -> Completed // A
    {
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let requested = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "You must specify at least one part"));
        }
        let stored: BTreeMap<u16, PartRecord> = self
            .parts(&upload.upload_id, 0, MAX_PART_NUMBER as usize)
            .await?
            .into_iter()
            .map(|p| (p.number, p))
            .collect();
        let mut chosen = Vec::with_capacity(requested.len());
        let mut previous = 0;
        for part in &requested {
            let number = part_number(part.part_number.unwrap_or(0))?;
            if number <= previous {
                return Err(s3_error!(InvalidPartOrder, "The list of parts was not in ascending order"));
            }
            previous = number;
            let Some(record) = stored.get(&number) else {
                return Err(s3_error!(InvalidPart, "Part {number} has not been uploaded"));
            };
            let etag_matches = part.e_tag.as_ref().is_none_or(|etag| trim_etag(etag.value()) == record.etag);
            if !etag_matches {
                return Err(s3_error!(InvalidPart, "Part {number}'s ETag does not match the uploaded part"));
            }
            chosen.push(record.clone());
        }
        if let Some((_, all_but_last)) = chosen.split_last() {
            if let Some(small) = all_but_last.iter().find(|p| p.size < MIN_PART_SIZE) {
                return Err(s3_error!(
                    EntityTooSmall,
                    "Part {} is {} bytes; every part but the last must be at least 5 MiB",
                    small.number,
                    small.size
                ));
            }
        }
        let versioning = self.versioning(&upload.bucket).await?;
        let mut request = PutRequest::new(upload.bucket.clone(), upload.key.clone());
        request.system_metadata = upload.system_metadata.clone();
        request.user_metadata = upload.user_metadata.clone();
        request.null_version = versioning != Versioning::Enabled;
        let blob = self.engine().commit_parts(request, chosen).await.map_err(engine_failure)?;
        let all: Vec<PartRecord> = stored.into_values().collect();
        self.forget_upload(&upload, &all).await?;
        Ok(CompleteMultipartUploadOutput {
            bucket: Some(upload.bucket.clone()),
            key: Some(upload.key.clone()),
            location: Some(format!("/{}/{}", upload.bucket, upload.key)),
            e_tag: Some(ETag::Strong(blob.blob.etag.clone())),
            version_id: Self::written_version_id(versioning, &blob),
            ..Default::default()
        })
    }

    pub(crate) async fn abort_upload(&self, input: AbortMultipartUploadInput) -> S3Result<AbortMultipartUploadOutput> // A
    {
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let parts = self.parts(&upload.upload_id, 0, MAX_PART_NUMBER as usize).await?;
        self.forget_upload(&upload, &parts).await?;
        Ok(AbortMultipartUploadOutput::default())
    }

    pub(crate) async fn list_upload_parts(&self, input: ListPartsInput) -> S3Result<ListPartsOutput> // A
    {
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let max = input.max_parts.unwrap_or(MAX_LISTED).clamp(0, MAX_LISTED) as usize;
        let marker = input.part_number_marker.unwrap_or(0).clamp(0, MAX_PART_NUMBER) as u16;
        let mut parts = self.parts(&upload.upload_id, marker, max + 1).await?;
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().map(|p| p.number as i32);
        let listed = parts
            .iter()
            .map(|p| Part {
                part_number: Some(p.number as i32),
                e_tag: Some(ETag::Strong(p.etag.clone())),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.created)),
                checksum_crc32: p.checksums.get("crc32").cloned(),
                checksum_crc32c: p.checksums.get("crc32c").cloned(),
                checksum_sha1: p.checksums.get("sha1").cloned(),
                checksum_sha256: p.checksums.get("sha256").cloned(),
                checksum_crc64nvme: p.checksums.get("crc64nvme").cloned(),
            })
            .collect();
        Ok(ListPartsOutput {
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            upload_id: Some(upload.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next.filter(|_| truncated),
            is_truncated: Some(truncated),
            parts: Some(listed),
            owner: Some(crate::s3::owner()),
            ..Default::default()
        })
    }

    /// Remove every incomplete upload initiated before `initiated_before`
    /// (like S3's AbortIncompleteMultipartUpload lifecycle rule); returns
    /// how many were removed. Their parts' chunks become garbage.
    pub async fn expire_uploads(&self, initiated_before: u64) -> S3Result<usize> // A
    {
        let mut expired = 0;
        let mut after = Vec::new();
        loop {
            let rows =
                self.engine().scan_rows(UPLOADS, &[], &after, MAX_LISTED as usize).await.map_err(engine_failure)?;
            let Some((last, _)) = rows.last() else { break };
            after = last.clone();
            for (_, bytes) in rows {
                let upload: UploadRecord = match codec::decode(&bytes) {
                    Ok(upload) => upload,
                    Err(error) => {
                        tracing::warn!(%error, "unreadable upload record left in place");
                        continue;
                    }
                };
                if upload.initiated >= initiated_before {
                    continue;
                }
                let parts = self.parts(&upload.upload_id, 0, MAX_PART_NUMBER as usize).await?;
                self.forget_upload(&upload, &parts).await?;
                tracing::info!(bucket = %upload.bucket, key = %upload.key, upload = %upload.upload_id, "incomplete upload expired");
                expired += 1;
            }
        }
        Ok(expired)
    }

    pub(crate) async fn list_uploads(&self, input: ListMultipartUploadsInput) -> S3Result<ListMultipartUploadsOutput> // A
    {
        self.require_bucket(&input.bucket).await?;
        let max = input.max_uploads.unwrap_or(MAX_LISTED).clamp(0, MAX_LISTED) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let scope = [input.bucket.as_bytes(), &[0], prefix.as_bytes()].concat();
        // After the marker key's uploads (all of them, or those after the
        // upload-id marker).
        let after = match (&input.key_marker, &input.upload_id_marker) {
            (Some(key), Some(id)) if !id.is_empty() => upload_row_key(&input.bucket, key, id),
            (Some(key), _) if !key.is_empty() => [input.bucket.as_bytes(), &[0], key.as_bytes(), &[1]].concat(),
            _ => Vec::new(),
        };
        let rows = self.engine().scan_rows(UPLOADS, &scope, &after, max + 1).await.map_err(engine_failure)?;
        let mut uploads: Vec<UploadRecord> = rows
            .into_iter()
            .map(|(_, bytes)| {
                codec::decode(&bytes).map_err(|error| {
                    tracing::error!(%error, "damaged upload record");
                    internal_fault()
                })
            })
            .collect::<S3Result<_>>()?;
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        let last = uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
        let listed = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.initiated)),
                owner: Some(crate::s3::owner()),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        Ok(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().filter(|_| truncated).map(|(k, _)| k.clone()),
            next_upload_id_marker: last.filter(|_| truncated).map(|(_, id)| id),
            uploads: Some(listed),
            ..Default::default()
        })
    }
}
