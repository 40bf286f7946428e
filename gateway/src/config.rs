//! Configuration: command-line flags over environment variables over the
//! TOML file over defaults. A node needs none of it to start.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ouroboros_core::layout::Place;
use ouroboros_core::store::Durability;

use crate::connection::ConnectionLimits;
use serde::Deserialize;

pub const DEFAULT_DATA_DIR: &str = "./ouroboros-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_REGION: &str = "us-east-1";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{name}: {value:?} is not one of: {expected}")]
    Invalid { name: &'static str, value: String, expected: &'static str },
    #[error("{0}")]
    Conflict(&'static str),
}

/// The TOML file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub region: Option<String>,
    /// Base domains for virtual-host style requests (`bucket.DOMAIN`).
    pub domains: Option<Vec<String>>,
    /// `sync` (fsync before acknowledging, the default) or `flush`.
    pub durability: Option<String>,
    /// Seconds a chunk stays safe from garbage collection after a write
    /// stored or reused it (default one day).
    pub gc_grace_secs: Option<u64>,
    /// Seconds before an incomplete multipart upload is removed (default 7 days).
    pub upload_expiry_secs: Option<u64>,
    /// Seconds between background maintenance passes (default 600).
    pub maintenance_interval_secs: Option<u64>,
    /// Seconds between scrubs, which read back every slice stored and
    /// drop damaged ones for repair to rebuild (default 30 days; 0: only
    /// when asked, by `ouroboros repair scrub`).
    pub scrub_interval_secs: Option<u64>,
    /// Seconds a connection has to send a complete request head, from
    /// opening or from its previous response (default 30; also closes idle
    /// keep-alive connections).
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body or a response may go without a byte moving
    /// before its connection ends (default 60).
    pub stall_timeout_secs: Option<u64>,
    /// Client connections served at once (default 4096, fewer when the
    /// process may not open that many files).
    pub max_connections: Option<u64>,
    /// `ADDR:PORT` where the node takes gossip (UDP) and node requests
    /// (TCP). Unset: a single node that takes no cluster traffic.
    pub cluster_listen: Option<String>,
    /// `ADDR:PORT` other nodes dial (default: `cluster_listen`).
    pub cluster_advertise: Option<String>,
    /// Addresses (`HOST:PORT`) of live members to join through.
    pub join: Option<Vec<String>>,
    /// A file holding the cluster secret (64 hex digits).
    pub cluster_secret_file: Option<PathBuf>,
    /// A file holding the data private key (64 hex digits).
    pub data_key_file: Option<PathBuf>,
    /// Store and serve data for the cluster without the data private key,
    /// and answer no S3 request.
    pub storage_only: Option<bool>,
    /// Seconds between rounds in which replicas compare what they hold and
    /// bring each other up to date (default 30).
    pub sync_interval_secs: Option<u64>,
    /// Seconds a forgotten version's or deleted row's tombstone is kept
    /// (default 7 days): a node away for longer may bring back what was
    /// deleted meanwhile.
    pub tombstone_grace_secs: Option<u64>,
    /// Seconds a node may be seen down before any node marks it gone from
    /// the layout, and its data is rebuilt elsewhere (default 30 minutes).
    pub dead_after_secs: Option<u64>,
    /// Bytes per second a node moves slices at, at most, when the layout
    /// changes (default 64 MiB).
    pub repair_bytes_per_sec: Option<u64>,
    /// The zone this node is in (a rack, a room, a site): a chunk's slices
    /// and a partition's replicas spread over the cluster's zones (default
    /// `default`). Fixed once the node has joined.
    pub zone: Option<String>,
    /// The storage this node offers, in bytes or with a unit (`500G`,
    /// `4T`, `2TiB`): nodes take slices in proportion to it (default `1T`).
    /// Fixed once the node has joined.
    pub capacity: Option<Capacity>,
}

/// A capacity as the file gives it: a number of bytes, or a number with a
/// unit; anything else is kept to be named in the error (`Other`), instead
/// of serde's "did not match any variant".
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Capacity {
    Bytes(u64),
    Text(String),
    Other(toml::Value),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> // A
    {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }
}

/// The settings a server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    pub region: String,
    pub domains: Vec<String>,
    pub durability: Durability,
    pub maintenance: Maintenance,
    pub connections: ConnectionLimits,
    pub cluster: ClusterSettings,
}

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Unset: a single node with no cluster port.
    pub listen: Option<SocketAddr>,
    pub advertise: Option<SocketAddr>,
    pub join: Vec<String>,
    /// The cluster secret as given (from the environment or a file); a
    /// first node without one makes one.
    pub secret: Option<[u8; 32]>,
    /// The data private key as given; a first node without one makes one.
    pub data_key: Option<[u8; 32]>,
    /// Holds ciphertext only: no data key, no S3.
    pub storage_only: bool,
    /// How often replicas compare what they hold (and registers are
    /// brought up to date).
    pub sync_interval: Duration,
    /// How long a node may be seen down before it is marked gone.
    pub dead_after: Duration,
    /// How fast slices move when the layout changes.
    pub repair_bytes_per_sec: u64,
    /// Its zone and capacity, given to the layout when it joins.
    pub place: Place,
}

/// The default `sync_interval`.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);

impl Default for ClusterSettings {
    fn default() -> Self // A
    {
        ClusterSettings {
            listen: None,
            advertise: None,
            join: Vec::new(),
            secret: None,
            data_key: None,
            storage_only: false,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            repair_bytes_per_sec: DEFAULT_REPAIR_BYTES_PER_SEC,
            place: Place::default(),
        }
    }
}

/// The default `dead_after`.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(30 * 60);
/// The default `repair_bytes_per_sec`.
pub const DEFAULT_REPAIR_BYTES_PER_SEC: u64 = 64 << 20;

/// The background work a node does: expiring abandoned uploads, then
/// collecting garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    pub interval: Duration,
    pub gc_grace: Duration,
    pub upload_expiry: Duration,
    /// How long tombstones are kept.
    pub tombstone_grace: Duration,
    /// Time between scrubs; zero: only when asked.
    pub scrub_interval: Duration,
}

impl Default for Maintenance {
    fn default() -> Self // A
    {
        Maintenance {
            interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(24 * 3600),
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
            tombstone_grace: Duration::from_secs(7 * 24 * 3600),
            scrub_interval: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Flags, already merged with their environment variables by clap.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub config: Option<PathBuf>,
    pub cluster_listen: Option<String>,
    pub cluster_advertise: Option<String>,
    /// Every `--join`, and `OUROBOROS_JOIN` split at commas.
    pub join: Vec<String>,
    pub cluster_secret_file: Option<PathBuf>,
    pub data_key_file: Option<PathBuf>,
    pub storage_only: bool,
}

fn env(name: &str) -> Option<String> // A
{
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A whole number from the environment, else the file, else the default.
fn number(name: &'static str, file: Option<u64>, default: u64) -> Result<u64, ConfigError> // A
{
    match env(name) {
        Some(text) => {
            text.parse::<u64>().map_err(|_| ConfigError::Invalid { name, value: text, expected: "a whole number" })
        }
        None => Ok(file.unwrap_or(default)),
    }
}

/// A number of seconds from the environment, else the file, else the default.
fn seconds(name: &'static str, file: Option<u64>, default: Duration) -> Result<Duration, ConfigError> // A
{
    number(name, file, default.as_secs()).map(Duration::from_secs)
}

fn socket_address(name: &'static str, value: Option<String>) -> Result<Option<SocketAddr>, ConfigError> // A
{
    match value {
        None => Ok(None),
        Some(text) => match text.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(addr)) => Ok(Some(addr)),
            _ => Err(ConfigError::Invalid { name, value: text, expected: "ADDR:PORT" }),
        },
    }
}

/// This node's zone (`OUROBOROS_ZONE`, else the file's `zone`) and
/// capacity (`OUROBOROS_CAPACITY`, else the file's `capacity`).
fn place(zone: Option<String>, capacity: Option<Capacity>) -> Result<Place, ConfigError> // PA
{
    let defaults = Place::default();
    let zone = env("OUROBOROS_ZONE").or(zone).unwrap_or(defaults.zone);
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if zone.is_empty() || zone.len() > 64 || !zone.chars().all(valid) {
        return Err(ConfigError::Invalid {
            name: "zone",
            value: zone,
            expected: "1 to 64 letters, digits, '-', '_' or '.'",
        });
    }
    let capacity = match (env("OUROBOROS_CAPACITY"), capacity) {
        (Some(text), _) | (None, Some(Capacity::Text(text))) => parse_capacity(&text).ok_or(ConfigError::Invalid {
            name: "capacity",
            value: text,
            expected: "bytes, or a number with a unit (500G, 4T, 2TiB)",
        })?,
        (None, Some(Capacity::Bytes(bytes))) => bytes,
        (None, Some(Capacity::Other(value))) => {
            return Err(ConfigError::Invalid {
                name: "capacity",
                value: value.to_string(),
                expected: "a whole number of bytes, or a number with a unit (500G, 4T, 2TiB)",
            })
        }
        (None, None) => defaults.capacity,
    };
    if capacity == 0 {
        return Err(ConfigError::Invalid { name: "capacity", value: "0".into(), expected: "at least 1 byte" });
    }
    Ok(Place { zone, capacity })
}

/// Bytes from `4T`, `500G`, `2TiB`, `1000000` (decimal units are powers of
/// 1000, binary ones of 1024; a trailing `B` is allowed).
pub fn parse_capacity(text: &str) -> Option<u64> // PA
{
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim().to_ascii_uppercase();
    let unit = unit.strip_suffix('B').unwrap_or(&unit);
    let (base, letter): (u64, &str) = match unit.strip_suffix('I') {
        Some(letter) => (1024, letter),
        None => (1000, unit),
    };
    let power = match letter {
        "" if base == 1000 => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        _ => return None,
    };
    number.checked_mul(base.checked_pow(power)?)
}

/// A 32-byte secret from the environment (hex) or else from a file (hex).
fn secret(name: &'static str, env_name: &str, file: Option<PathBuf>) -> Result<Option<[u8; 32]>, ConfigError> // PA
{
    let (text, from) = match (env(env_name), file) {
        (Some(text), _) => (text, env_name.to_string()),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            (text, path.display().to_string())
        }
        (None, None) => return Ok(None),
    };
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| ConfigError::Invalid {
        name,
        value: format!("(the value in {from}, not shown)"),
        expected: "64 hex digits",
    })?;
    Ok(Some(out))
}

impl Config {
    pub fn resolve(overrides: Overrides) -> Result<Self, ConfigError> // A
    {
        let file = match &overrides.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let durability = match env("OUROBOROS_DURABILITY").or(file.durability).as_deref() {
            None | Some("sync") => Durability::Sync,
            Some("flush") => Durability::Flush,
            Some(other) => {
                return Err(ConfigError::Invalid { name: "durability", value: other.into(), expected: "sync, flush" })
            }
        };
        let domains = match env("OUROBOROS_DOMAINS") {
            Some(list) => list.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect(),
            None => file.domains.unwrap_or_else(|| vec!["localhost".into()]),
        };
        let defaults = Maintenance::default();
        let maintenance = Maintenance {
            interval: seconds(
                "OUROBOROS_MAINTENANCE_INTERVAL_SECS",
                file.maintenance_interval_secs,
                defaults.interval,
            )?,
            gc_grace: seconds("OUROBOROS_GC_GRACE_SECS", file.gc_grace_secs, defaults.gc_grace)?,
            upload_expiry: seconds("OUROBOROS_UPLOAD_EXPIRY_SECS", file.upload_expiry_secs, defaults.upload_expiry)?,
            tombstone_grace: seconds(
                "OUROBOROS_TOMBSTONE_GRACE_SECS",
                file.tombstone_grace_secs,
                defaults.tombstone_grace,
            )?,
            scrub_interval: seconds(
                "OUROBOROS_SCRUB_INTERVAL_SECS",
                file.scrub_interval_secs,
                defaults.scrub_interval,
            )?,
        };
        let limits = ConnectionLimits::default();
        let connections = ConnectionLimits {
            header_timeout: seconds("OUROBOROS_HEADER_TIMEOUT_SECS", file.header_timeout_secs, limits.header_timeout)?,
            stall_timeout: seconds("OUROBOROS_STALL_TIMEOUT_SECS", file.stall_timeout_secs, limits.stall_timeout)?,
            max_connections: number("OUROBOROS_MAX_CONNECTIONS", file.max_connections, limits.max_connections as u64)?
                as usize,
        };
        for (name, zero) in [
            ("header_timeout_secs", connections.header_timeout.is_zero()),
            ("stall_timeout_secs", connections.stall_timeout.is_zero()),
            ("max_connections", connections.max_connections == 0),
        ] {
            if zero {
                return Err(ConfigError::Invalid { name, value: "0".into(), expected: "at least 1" });
            }
        }
        if maintenance.interval.is_zero() {
            return Err(ConfigError::Invalid {
                name: "maintenance_interval_secs",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let join = if !overrides.join.is_empty() { overrides.join } else { file.join.unwrap_or_default() };
        let cluster = ClusterSettings {
            listen: socket_address("cluster_listen", overrides.cluster_listen.or(file.cluster_listen))?,
            advertise: socket_address("cluster_advertise", overrides.cluster_advertise.or(file.cluster_advertise))?,
            join: join.into_iter().map(|j| j.trim().to_string()).filter(|j| !j.is_empty()).collect(),
            secret: secret(
                "cluster secret",
                "OUROBOROS_CLUSTER_SECRET",
                overrides.cluster_secret_file.or(file.cluster_secret_file),
            )?,
            data_key: secret("data key", "OUROBOROS_DATA_KEY", overrides.data_key_file.or(file.data_key_file))?,
            storage_only: overrides.storage_only || file.storage_only.unwrap_or(false),
            sync_interval: seconds("OUROBOROS_SYNC_INTERVAL_SECS", file.sync_interval_secs, DEFAULT_SYNC_INTERVAL)?,
            dead_after: seconds("OUROBOROS_DEAD_AFTER_SECS", file.dead_after_secs, DEFAULT_DEAD_AFTER)?,
            repair_bytes_per_sec: number(
                "OUROBOROS_REPAIR_BYTES_PER_SEC",
                file.repair_bytes_per_sec,
                DEFAULT_REPAIR_BYTES_PER_SEC,
            )?,
            place: place(file.zone, file.capacity)?,
        };
        for (name, zero) in [
            ("sync_interval_secs", cluster.sync_interval.is_zero()),
            ("dead_after_secs", cluster.dead_after.is_zero()),
            ("repair_bytes_per_sec", cluster.repair_bytes_per_sec == 0),
        ] {
            if zero {
                return Err(ConfigError::Invalid { name, value: "0".into(), expected: "at least 1" });
            }
        }
        if cluster.storage_only && (cluster.listen.is_none() || cluster.join.is_empty()) {
            return Err(ConfigError::Conflict(
                "--storage-only needs --cluster-listen and --join: a storage-only node serves an existing cluster",
            ));
        }
        if cluster.listen.is_none() && (!cluster.join.is_empty() || cluster.advertise.is_some()) {
            return Err(ConfigError::Conflict(
                "--join and --cluster-advertise need --cluster-listen ADDR:PORT, where this node takes cluster traffic",
            ));
        }
        Ok(Config {
            data_dir: overrides.data_dir.or(file.data_dir).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            listen: overrides.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into()),
            region: env("OUROBOROS_REGION").or(file.region).unwrap_or_else(|| DEFAULT_REGION.into()),
            domains,
            durability,
            maintenance,
            connections,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_read_with_decimal_and_binary_units() // A
    {
        assert_eq!(parse_capacity("1000"), Some(1000));
        assert_eq!(parse_capacity("500G"), Some(500_000_000_000));
        assert_eq!(parse_capacity("4T"), Some(4_000_000_000_000));
        assert_eq!(parse_capacity("4tb"), Some(4_000_000_000_000));
        assert_eq!(parse_capacity("2TiB"), Some(2 << 40));
        assert_eq!(parse_capacity(" 64 MiB "), Some(64 << 20));
        for wrong in ["", "T", "2.5T", "4X", "-1G", "99999999999P"] {
            assert_eq!(parse_capacity(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn a_zone_or_capacity_that_cannot_be_used_is_named() // A
    {
        let place = place(Some("rack-2".into()), Some(Capacity::Text("8T".into()))).expect("a valid place");
        assert_eq!(place, Place { zone: "rack-2".into(), capacity: 8_000_000_000_000 });
        assert_eq!(place_default(), Place::default());
        for zone in ["", "a zone", "ü"] {
            let error = super::place(Some(zone.into()), None).expect_err("an invalid zone");
            assert!(error.to_string().starts_with("zone:"), "{error}");
        }
        let error = super::place(None, Some(Capacity::Bytes(0))).expect_err("no capacity");
        assert!(error.to_string().starts_with("capacity:"), "{error}");
        let error = super::place(None, Some(Capacity::Text("lots".into()))).expect_err("no unit");
        assert!(error.to_string().contains("\"lots\""), "{error}");
        for (line, shown) in [("capacity = -5", "-5"), ("capacity = 2.5", "2.5"), ("capacity = true", "true")] {
            let file: FileConfig = toml::from_str(line).expect("the file reads");
            let error = super::place(None, file.capacity).expect_err("a capacity that is not one");
            let text = error.to_string();
            assert!(text.starts_with("capacity:") && text.contains(shown) && text.contains("whole number"), "{text}");
        }
    }

    fn place_default() -> Place // A
    {
        super::place(None, None).expect("the default place")
    }
}
