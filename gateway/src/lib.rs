//! The S3 gateway: s3s on hyper over the core engine. Not built yet: see docs/ARCHITECTURE.md.
