//! The local store's errors, shared by its fjall metadata (`store`) and its
//! slice segments (`slicelog`).

use std::io;
use std::path::{Path, PathBuf};

use crate::codec::DecodeError;
use crate::hash::Hash;
use crate::model::{RecordError, SliceDecodeError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local store I/O: {0}")]
    Io(#[from] fjall::Error),
    #[error("local store: {what} {path}: {source}")]
    File { what: &'static str, path: PathBuf, source: io::Error },
    #[error("local store: {0}")]
    Slice(#[from] SliceDecodeError),
    #[error("local store: {0}")]
    Record(#[from] RecordError),
    #[error("local store: chunk manifest {hash}: {source}")]
    Chunk { hash: Hash, source: DecodeError },
    #[error("local store: bucket record {name:?}: {source}")]
    Bucket { name: String, source: DecodeError },
    #[error("local store: index entry of {len} bytes in {index} is malformed")]
    BadIndexEntry { index: &'static str, len: usize },
    #[error("local store: chunk list {list} of blob {blob} is not held here")]
    MissingChunkList { list: Hash, blob: Hash },
    #[error("local store: a blocking task failed: {0}")]
    Task(String),
    #[error("local store: the stored cluster layout: {0}")]
    Layout(DecodeError),
    #[error("local store: chunk {chunk}: this sealing was freed, its slices are gone")]
    FreedSealing { chunk: Hash },
    #[error("local store: handed-off slice {slice} is not slice {index} of the {count} its chunk lists")]
    HandedOffSlice { slice: Hash, index: u32, count: usize },
    #[error("local store: index entry value in {index}: {source}")]
    BadIndexValue { index: &'static str, source: DecodeError },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Whether an error, or any error under it, is a disk out of space (or out
/// of quota): the one failure a client should hear about as such, and one
/// the store recovers from once space comes back.
pub fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool // A
{
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if matches!(io.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) {
                return true;
            }
        }
        next = error.source();
    }
    false
}

/// Maps an I/O error on `path` to a `StoreError` that names the file.
pub(crate) fn file_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError // A
{
    let path = path.to_path_buf();
    move |source| StoreError::File { what, path, source }
}
