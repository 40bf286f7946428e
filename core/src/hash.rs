//! `Hash`: the one 32-byte BLAKE3 digest type used for chunk ids, slice hashes,
//! blob hashes (S3 version ids) and node ids. Printed as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Hash(pub [u8; 32]);

/// A hex string that is not a 64-digit lowercase or uppercase hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a 64-digit hex hash: {0:?}")]
pub struct ParseHashError(pub String);

impl Hash {
    pub const LEN: usize = 32;

    /// Plain BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self // A
    {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Plain BLAKE3 over several parts, as if they were concatenated.
    pub fn of_parts(parts: &[&[u8]]) -> Self // A
    {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part);
        }
        Hash(*hasher.finalize().as_bytes())
    }

    /// Keyed BLAKE3 (used for chunk ids, keyed with the cluster's dedup key).
    pub fn keyed(key: &[u8; 32], bytes: &[u8]) -> Self // PA
    {
        let mut hasher = blake3::Hasher::new_keyed(key);
        // Chunks are up to several MiB: the multi-threaded path is not worth it
        // on small machines, but the SIMD path of `update` already is.
        hasher.update(bytes);
        Hash(*hasher.finalize().as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] // A
    {
        &self.0
    }

    pub fn to_hex(&self) -> String // A
    {
        hex::encode(self.0)
    }

    /// The first 8 bytes as a big-endian integer (partition and placement weights).
    pub fn prefix_u64(&self) -> u64 // A
    {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(first)
    }

    /// Parse from a byte slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> // A
    {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }
}

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> // A
    {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseHashError(s.chars().take(80).collect()))?;
        Ok(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result // A
    {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result // A
    {
        // Twelve digits identify a hash in logs and test failures.
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_hex_is_refused() // A
    {
        let hash = Hash::of(b"ouroboros");
        let parsed: Hash = hash.to_hex().parse().unwrap();
        assert_eq!(parsed, hash);
        assert!("zz".parse::<Hash>().is_err());
        assert!(hash.to_hex()[..62].parse::<Hash>().is_err());
    }

    #[test]
    fn keyed_hash_differs_from_plain_and_by_key() // A
    {
        let data = b"same bytes";
        let a = Hash::keyed(&[1; 32], data);
        let b = Hash::keyed(&[2; 32], data);
        assert_ne!(a, b);
        assert_ne!(a, Hash::of(data));
    }
}
