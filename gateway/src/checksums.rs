//! The S3 checksum algorithms in one table: each one's name, its header, how
//! to switch it on in s3s's hasher and where its sum comes back. The PUT path
//! and the front door's digest check both read it.

use s3s::checksum::ChecksumHasher;
use s3s::dto::Checksum;

/// One `x-amz-checksum-*` algorithm.
pub(crate) struct Algorithm {
    /// As `x-amz-checksum-algorithm` names it (upper case).
    pub name: &'static str,
    pub header: &'static str,
    enable: fn(&mut ChecksumHasher),
    sum: fn(&Checksum) -> &Option<String>,
}

impl Algorithm {
    /// Make `hasher` compute this algorithm too.
    pub fn enable(&self, hasher: &mut ChecksumHasher) // A
    {
        (self.enable)(hasher)
    }

    /// This algorithm's base64 sum, if the hasher computed it.
    pub fn sum<'a>(&self, sums: &'a Checksum) -> Option<&'a String> // A
    {
        (self.sum)(sums).as_ref()
    }

    /// The lower-case name objects record their checksums under.
    pub fn key(&self) -> String // A
    {
        self.name.to_ascii_lowercase()
    }
}

pub(crate) const ALGORITHMS: [Algorithm; 5] = [
    Algorithm {
        name: "CRC32",
        header: "x-amz-checksum-crc32",
        enable: |h| h.crc32 = Some(Default::default()),
        sum: |s| &s.checksum_crc32,
    },
    Algorithm {
        name: "CRC32C",
        header: "x-amz-checksum-crc32c",
        enable: |h| h.crc32c = Some(Default::default()),
        sum: |s| &s.checksum_crc32c,
    },
    Algorithm {
        name: "SHA1",
        header: "x-amz-checksum-sha1",
        enable: |h| h.sha1 = Some(Default::default()),
        sum: |s| &s.checksum_sha1,
    },
    Algorithm {
        name: "SHA256",
        header: "x-amz-checksum-sha256",
        enable: |h| h.sha256 = Some(Default::default()),
        sum: |s| &s.checksum_sha256,
    },
    Algorithm {
        name: "CRC64NVME",
        header: "x-amz-checksum-crc64nvme",
        enable: |h| h.crc64nvme = Some(Default::default()),
        sum: |s| &s.checksum_crc64nvme,
    },
];

/// One algorithm's sum of a whole body in memory.
pub(crate) fn checksum_of(algorithm: &Algorithm, body: &[u8]) -> Option<String> // PA
{
    let mut hasher = ChecksumHasher::default();
    algorithm.enable(&mut hasher);
    hasher.update(body);
    algorithm.sum(&hasher.finalize()).cloned()
}
