//! Our version-DAG extension headers (docs/VERSIONING.md), which standard
//! clients ignore: the parents a PUT names, and the version, heads and
//! children a read reports.

use hyper::HeaderMap;
use ouroboros_core::Hash;
use s3s::{s3_error, S3Result};

/// Our extension headers (docs/VERSIONING.md); standard clients ignore them.
pub(crate) const PARENTS_HEADER: &str = "x-ouroboros-parents";
pub(crate) const VERSION_HEADER: &str = "x-ouroboros-version";
pub(crate) const HEADS_HEADER: &str = "x-ouroboros-heads";
pub(crate) const CHILDREN_HEADER: &str = "x-ouroboros-children";

/// The parents a PUT names in `x-ouroboros-parents` (comma-separated
/// version hashes), if any.
pub(crate) fn named_parents(headers: &HeaderMap) -> S3Result<Option<Vec<Hash>>> // A
{
    let Some(value) = headers.get(PARENTS_HEADER) else { return Ok(None) };
    let text = value.to_str().map_err(|_| s3_error!(InvalidArgument, "{PARENTS_HEADER} must be ASCII"))?;
    let mut parents = Vec::new();
    for id in text.split(',').map(str::trim).filter(|id| !id.is_empty()) {
        let hash = id
            .parse::<Hash>()
            .map_err(|_| s3_error!(InvalidArgument, "{PARENTS_HEADER}: {id:?} is not a version hash"))?;
        parents.push(hash);
    }
    if parents.is_empty() {
        return Err(s3_error!(InvalidArgument, "{PARENTS_HEADER} names no version"));
    }
    parents.sort();
    parents.dedup();
    Ok(Some(parents))
}
