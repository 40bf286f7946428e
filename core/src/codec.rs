//! The versioned binary envelope of every record on disk and on the wire:
//! `b'O'`, a record kind, a format version, then the body (postcard). A newer
//! build keeps a decoder for every older version of a record it ever wrote.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// First byte of every encoded record.
pub const MAGIC: u8 = b'O';

/// Which type a record holds; part of the envelope so a record of one kind is
/// never decoded as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Slice = 1,
    Chunk = 2,
    Blob = 3,
    Request = 4,
    Response = 5,
    Bucket = 6,
    Upload = 7,
    Part = 8,
    ChunkList = 9,
    AccessKey = 10,
    Row = 11,
    Layout = 12,
    Hint = 13,
}

/// Why bytes could not be decoded as a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record truncated: {len} bytes is shorter than the {needed}-byte envelope")]
    Truncated { len: usize, needed: usize },
    #[error("not an OuroborosDB record (first byte {found:#04x})")]
    BadMagic { found: u8 },
    #[error("expected a {expected:?} record, found kind {found}")]
    WrongKind { expected: RecordKind, found: u8 },
    #[error("{kind:?} record has format version {version}, this build reads up to {newest}")]
    UnknownVersion { kind: RecordKind, version: u8, newest: u8 },
    #[error("{kind:?} record body is malformed: {reason}")]
    Malformed { kind: RecordKind, reason: String },
}

/// A type stored or sent as a versioned record.
pub trait Record: Serialize + DeserializeOwned {
    const KIND: RecordKind;
    /// The version this build writes.
    const VERSION: u8 = 1;

    /// Decode a body written by an older build. Types that changed shape
    /// override this with a decoder per old version.
    fn decode_older(version: u8, _body: &[u8]) -> Result<Self, DecodeError> // PA
    {
        Err(DecodeError::UnknownVersion { kind: Self::KIND, version, newest: Self::VERSION })
    }
}

pub const ENVELOPE_LEN: usize = 3;

pub fn envelope(kind: RecordKind, version: u8) -> [u8; ENVELOPE_LEN] // PA
{
    [MAGIC, kind as u8, version]
}

/// Check the envelope and return (version, body).
pub fn open_envelope(kind: RecordKind, bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> // PA
{
    if bytes.len() < ENVELOPE_LEN {
        return Err(DecodeError::Truncated { len: bytes.len(), needed: ENVELOPE_LEN });
    }
    if bytes[0] != MAGIC {
        return Err(DecodeError::BadMagic { found: bytes[0] });
    }
    if bytes[1] != kind as u8 {
        return Err(DecodeError::WrongKind { expected: kind, found: bytes[1] });
    }
    Ok((bytes[2], &bytes[ENVELOPE_LEN..]))
}

pub fn encode<R: Record>(record: &R) -> Vec<u8> // PA
{
    let out = envelope(R::KIND, R::VERSION).to_vec();
    // Serialising our own in-memory types into a Vec cannot fail: postcard only
    // errors on unsupported serde features, which none of our records use.
    match postcard::to_extend(record, out) {
        Ok(done) => done,
        Err(error) => unreachable!("postcard cannot encode a {:?} record: {error}", R::KIND),
    }
}

pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, DecodeError> // PA
{
    let (version, body) = open_envelope(R::KIND, bytes)?;
    if version == R::VERSION {
        decode_body(R::KIND, body)
    } else if version < R::VERSION {
        R::decode_older(version, body)
    } else {
        Err(DecodeError::UnknownVersion { kind: R::KIND, version, newest: R::VERSION })
    }
}

/// Decode a postcard body that must be consumed exactly.
pub fn decode_body<T: DeserializeOwned>(kind: RecordKind, body: &[u8]) -> Result<T, DecodeError> // PA
{
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|error| DecodeError::Malformed { kind, reason: error.to_string() })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed { kind, reason: format!("{} trailing bytes", rest.len()) });
    }
    Ok(value)
}
