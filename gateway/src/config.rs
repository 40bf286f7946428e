//! Configuration: command-line flags over environment variables over the
//! TOML file over defaults. A node needs none of it to start.

use std::path::{Path, PathBuf};

use ouroboros_core::store::Durability;
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
}

/// Flags, already merged with their environment variables by clap.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub config: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> // A
{
    std::env::var(name).ok().filter(|v| !v.is_empty())
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
        Ok(Config {
            data_dir: overrides.data_dir.or(file.data_dir).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            listen: overrides.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into()),
            region: env("OUROBOROS_REGION").or(file.region).unwrap_or_else(|| DEFAULT_REGION.into()),
            domains,
            durability,
        })
    }
}
