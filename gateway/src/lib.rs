//! The S3 gateway and the `ouroboros` binary's pieces: configuration, access
//! keys, opening a node, the S3 operations (s3s) and the HTTP server (hyper).

mod checksums;
pub mod config;
pub mod connection;
pub mod credentials;
mod dag_headers;
pub mod front_door;
pub mod maintenance;
pub mod multipart;
pub mod node;
pub mod s3;
pub mod server;
pub mod status;
pub mod versioning;
