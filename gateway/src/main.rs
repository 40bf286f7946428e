//! `ouroboros`: run a node (`serve`), show what a running node sees
//! (`status`), and manage access keys (`key`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ouroboros_gateway::config::{Config, Overrides, DEFAULT_DATA_DIR};
use ouroboros_gateway::credentials;
use ouroboros_gateway::server::Server;
use ouroboros_gateway::status;

#[derive(Parser)]
#[command(
    name = "ouroboros",
    version,
    about = "OuroborosDB: a content-addressed, versioned object store that speaks S3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node: S3 on 127.0.0.1:9000, data in ./ouroboros-data unless told otherwise.
    Serve {
        /// Where the node keeps its data.
        #[arg(long, env = "OUROBOROS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address and port for S3 requests.
        #[arg(long, env = "OUROBOROS_LISTEN")]
        listen: Option<String>,
        /// TOML file with further settings (region, domains, durability).
        #[arg(long, env = "OUROBOROS_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Show the members a running node sees: id, cluster address, state, role.
    Status {
        /// The node's S3 endpoint.
        #[arg(long, env = "OUROBOROS_ENDPOINT", default_value = "http://127.0.0.1:9000")]
        endpoint: String,
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a node's health check; exit 0 when it answers 200 (for container
    /// health checks: the image has no other HTTP client).
    Health {
        /// The node's S3 endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9000")]
        endpoint: String,
    },
    /// Change the layout: drain a node (its data moves to the others, then
    /// it leaves) or remove one at once (its data is rebuilt elsewhere).
    Node {
        #[command(subcommand)]
        action: NodeAction,
        /// The S3 endpoint of any running node of the cluster.
        #[arg(long, env = "OUROBOROS_ENDPOINT", default_value = "http://127.0.0.1:9000", global = true)]
        endpoint: String,
    },
    /// Repair actions: `scrub` reads back every slice on every node and
    /// drops damaged ones, which repair then rebuilds from the others.
    Repair {
        #[command(subcommand)]
        action: RepairAction,
        /// The S3 endpoint of any running node of the cluster.
        #[arg(long, env = "OUROBOROS_ENDPOINT", default_value = "http://127.0.0.1:9000", global = true)]
        endpoint: String,
    },
    /// Manage S3 access keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
        /// The node's data directory.
        #[arg(long, env = "OUROBOROS_DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
        data_dir: PathBuf,
    },
}

/// How `serve` joins a cluster; with none of these the node runs alone.
#[derive(clap::Args)]
struct ClusterFlags {
    /// ADDR:PORT for cluster traffic: gossip on UDP and node requests on TCP.
    #[arg(long, env = "OUROBOROS_CLUSTER_LISTEN")]
    cluster_listen: Option<String>,
    /// ADDR:PORT other nodes reach this one at (containers, NAT); defaults to --cluster-listen.
    #[arg(long, env = "OUROBOROS_CLUSTER_ADVERTISE")]
    cluster_advertise: Option<String>,
    /// HOST:PORT of any live member to join through (repeatable).
    #[arg(long = "join", env = "OUROBOROS_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// File with the cluster secret (64 hex digits); or set OUROBOROS_CLUSTER_SECRET.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// File with the data private key (64 hex digits); or set OUROBOROS_DATA_KEY.
    #[arg(long)]
    data_key_file: Option<PathBuf>,
    /// Store data for the cluster without the data private key; answer no S3 request.
    #[arg(long, env = "OUROBOROS_STORAGE_ONLY")]
    storage_only: bool,
}

#[derive(Subcommand)]
enum NodeAction {
    /// Stop placing new data on the node and move what it holds to the
    /// others; it leaves the layout once they hold it.
    Drain {
        /// The node's id, or a prefix of it that names one node (as `status` shows).
        id: String,
    },
    /// Take the node out of the layout now, as if it were lost: its data
    /// is rebuilt from the other nodes' copies and parity.
    Remove {
        /// The node's id, or a prefix of it that names one node.
        id: String,
    },
}

#[derive(Subcommand)]
enum RepairAction {
    /// Start a scrub now on every node in service (progress in `status`).
    Scrub,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a key and print its id and secret.
    Create { name: String },
    /// List key names and ids.
    List,
    /// Delete a key, by its name in this node's keys file or by its id:
    /// every node of the cluster refuses it from then on.
    Delete { name_or_id: String },
}

fn init_logging() // A
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUROBOROS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s::ops=off"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// The first of these environment variables that is set.
fn first_env(names: &[&str]) -> Option<String> // A
{
    names.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// A signed admin request to `endpoint`, with the server's access-key
/// variables or the AWS ones; the answer's body, or the exit code after
/// saying what went wrong.
fn send_admin(endpoint: &str, request: &status::AdminRequest<'_>) -> Result<String, ExitCode> // A
{
    let access_key = first_env(&["OUROBOROS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]);
    let secret_key = first_env(&["OUROBOROS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"]);
    let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
        eprintln!("ouroboros: set OUROBOROS_ACCESS_KEY_ID and OUROBOROS_SECRET_ACCESS_KEY (or the AWS_ ones)");
        return Err(ExitCode::from(2));
    };
    let region =
        first_env(&["OUROBOROS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or_else(|| "us-east-1".into());
    let signer = status::Signer { access_key, secret_key, region };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ouroboros: cannot start the runtime: {error}");
            return Err(ExitCode::FAILURE);
        }
    };
    runtime.block_on(status::admin_request(endpoint, &signer, request)).map_err(|error| {
        eprintln!("ouroboros: {error}");
        ExitCode::FAILURE
    })
}

/// Send an admin request and print the answer.
fn print_admin(endpoint: &str, request: &status::AdminRequest<'_>) -> ExitCode // A
{
    match send_admin(endpoint, request) {
        Ok(answer) => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `ouroboros node drain|remove ID`.
fn change_node(endpoint: &str, action: NodeAction) -> ExitCode // A
{
    let request = match &action {
        NodeAction::Drain { id } => status::AdminRequest::node("drain", id),
        NodeAction::Remove { id } => status::AdminRequest::node("remove", id),
    };
    if !request.query.split('&').all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'-')) {
        eprintln!("ouroboros: a node id is hexadecimal digits");
        return ExitCode::from(2);
    }
    print_admin(endpoint, &request)
}

/// `ouroboros repair scrub`.
fn repair(endpoint: &str, action: RepairAction) -> ExitCode // A
{
    let request = match action {
        RepairAction::Scrub => status::AdminRequest::scrub(),
    };
    print_admin(endpoint, &request)
}

/// `ouroboros health`.
fn health(endpoint: &str) -> ExitCode // A
{
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ouroboros: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(status::fetch_health(endpoint)) {
        Ok(body) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ouroboros: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `ouroboros status`.
fn status(endpoint: &str, json: bool) -> ExitCode // A
{
    let answer = match send_admin(endpoint, &status::AdminRequest::status()) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if json {
        println!("{}", answer.trim_end());
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<status::StatusReport>(&answer) {
        Ok(report) => {
            print!("{}", status::status_table(&report));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ouroboros: {endpoint} answered a status this build cannot read: {error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode // A
{
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { data_dir, listen, config, cluster } => {
            init_logging();
            let overrides = Overrides {
                data_dir,
                listen,
                config,
                cluster_listen: cluster.cluster_listen,
                cluster_advertise: cluster.cluster_advertise,
                join: cluster.join,
                cluster_secret_file: cluster.cluster_secret_file,
                data_key_file: cluster.data_key_file,
                storage_only: cluster.storage_only,
            };
            let config = match Config::resolve(overrides) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("ouroboros: {error}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("ouroboros: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let server = Server::bind(&config).await?;
                server.run().await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("ouroboros: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { endpoint, json } => status(&endpoint, json),
        Command::Node { action, endpoint } => change_node(&endpoint, action),
        Command::Repair { action, endpoint } => repair(&endpoint, action),
        Command::Health { endpoint } => health(&endpoint),
        Command::Key { action, data_dir } => match action {
            KeyAction::Create { name } => match credentials::create_key(&data_dir, &name) {
                Ok(key) => {
                    println!("name:              {}", key.name);
                    println!("access key id:     {}", key.access_key_id);
                    println!("secret access key: {}", key.secret_access_key);
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("ouroboros: {error}");
                    ExitCode::FAILURE
                }
            },
            KeyAction::Delete { name_or_id } => match credentials::delete_key(&data_dir, &name_or_id) {
                Ok(id) => {
                    println!("access key {id} deleted; a running node refuses it within a second, the whole cluster within a minute");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("ouroboros: {error}");
                    ExitCode::FAILURE
                }
            },
            KeyAction::List => match credentials::load_keys(&data_dir) {
                Ok(keys) => {
                    println!("{:<20} {:<22} created", "name", "access key id");
                    for key in keys {
                        println!("{:<20} {:<22} {}", key.name, key.access_key_id, key.created);
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("ouroboros: {error}");
                    ExitCode::FAILURE
                }
            },
        },
    }
}
