//! `meridian`: the command-line tool. Admin commands, produce and consume, and `meridian up`,
//! which starts a local deployment.
//!
//! Endpoints: `--control HOST:PORT` (or `MERIDIAN_CONTROL`) for the control plane,
//! `--broker HOST:PORT` (or `MERIDIAN_BROKER`) for a broker; without either, the current
//! profile's (`meridian profile`), else what `meridian up` recorded. Credentials: the token
//! in `MERIDIAN_TOKEN`, else the current profile's, on every call; over TLS trusting
//! `MERIDIAN_CA`, else the profile's CA, when there is one. Topic commands go to the control plane when one is known; produce and
//! consume are routed by it to `--region` (or the nearest healthy region) unless a broker is
//! named. Tables by default, JSON with `--json`; failures exit non-zero with a one-line
//! reason.

mod acl;
mod broker;
mod certs;
mod cluster;
mod consume;
mod control;
mod endpoint;
mod format;
mod group;
mod log_group;
mod mirror;
mod produce;
mod profile;
mod region;
mod token;
mod topic;
mod txn;
mod up;
mod user;
mod version;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: multi-region active-active messaging"
)]
struct Cli {
    /// Broker to talk to (HOST:PORT).
    #[arg(long, global = true, env = "MERIDIAN_BROKER")]
    broker: Option<String>,
    /// Control plane to talk to (HOST:PORT[,HOST:PORT...]).
    #[arg(long, global = true, env = "MERIDIAN_CONTROL")]
    control: Option<String>,
    /// Region to use (produce and consume are routed there; default: the nearest healthy).
    #[arg(long, global = true, env = "MERIDIAN_REGION")]
    region: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local deployment and keep it running until Ctrl-C.
    Up(up::Args),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::Command),
    /// Log groups' replication state; fail a master-slave group over.
    #[command(subcommand, name = "log-group")]
    LogGroup(log_group::Command),
    /// List and create regions (through the control plane).
    #[command(subcommand)]
    Region(region::Command),
    /// Brokers registered with the control plane.
    #[command(subcommand)]
    Broker(broker::Command),
    /// The whole platform at once.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Mirror links between regions: up, stalled (with why) or down, rate, lag.
    #[command(subcommand)]
    Mirror(mirror::Command),
    /// Issue the TLS certificates mirrors authenticate each other with.
    Certs(certs::Args),
    /// Send messages: from arguments, or one per line of standard input.
    Produce(produce::Args),
    /// Read messages and print one value per line.
    Consume(consume::Args),
    /// Transactions: list, describe, commit or roll back by id, send half messages, answer
    /// check-backs.
    #[command(subcommand)]
    Txn(txn::Command),
    /// Consumer groups: list, describe (members, offsets, lag), reset offsets.
    #[command(subcommand)]
    Group(group::Command),
    /// Users and their SASL credentials (Kafka SCRAM and PLAIN): set, list, delete.
    #[command(subcommand)]
    User(user::Command),
    /// The region's ACLs (`acl add`, `delete`, `list`).
    #[command(subcommand)]
    Acl(acl::Command),
    /// Named endpoints and credentials (`profile create`, `use`, `list`, `delete`).
    #[command(subcommand)]
    Profile(profile::Command),
    /// API tokens in a tokens file the daemons read.
    #[command(subcommand)]
    Token(token::Command),
    /// This CLI's version and the versions the control plane and live brokers run.
    Version,
    /// Print a completion script for a shell, e.g. `meridian completions bash >
    /// /etc/bash_completion.d/meridian` or `source <(meridian completions zsh)`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// One screen of what is wrong — regions failed over, brokers not live, log groups
    /// without a leader, disks nearly full, consumer groups behind, links stalled — each
    /// with what to do; exits non-zero when anything is.
    Health(cluster::Args),
}

fn main() {
    // Writing to a closed pipe (`meridian consume ... | head`) ends the process quietly, as
    // it ends cat or grep, instead of failing the next write with EPIPE (a panic in
    // println!).
    // SAFETY: restoring a signal's default disposition at start, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "meridian",
            &mut std::io::stdout(),
        );
        return;
    }
    // The current profile fills in what the flags and the environment leave unset; the
    // token every call carries is MERIDIAN_TOKEN's, else the profile's.
    let profile = match profile::Profiles::load() {
        Ok(p) => p.current().cloned().unwrap_or_default(),
        Err(e) => fail(&e),
    };
    if cli.control.is_none() && cli.broker.is_none() {
        cli.control = profile.control.clone();
        cli.broker = profile.broker.clone();
    }
    if cli.region.is_none() {
        cli.region = profile.region.clone();
    }
    let token = std::env::var("MERIDIAN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or(profile.token);
    let ca = std::env::var("MERIDIAN_CA")
        .ok()
        .filter(|c| !c.is_empty())
        .or(profile.ca.clone());
    // A client certificate (MERIDIAN_CERT and MERIDIAN_KEY, else the profile's) is
    // presented to daemons that ask for one: it names the caller when no token does.
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let certificate = match (env("MERIDIAN_CERT"), env("MERIDIAN_KEY")) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => profile.cert.clone().zip(profile.key.clone()),
    };
    if let Some(ca) = ca.filter(|_| !matches!(cli.command, Command::Up(_))) {
        let read = |path: &str, what: &str| {
            std::fs::read(path).map_err(|e| format!("reading the {what} {path}: {e}"))
        };
        let set = read(&ca, "gRPC CA").and_then(|pem| match &certificate {
            None => meridian_proto::auth::set_ca(&pem, None),
            Some((cert, key)) => {
                let (cert, key) = (read(cert, "client certificate")?, read(key, "client key")?);
                meridian_proto::auth::set_ca(&pem, Some((&cert, &key)))
            }
        });
        if let Err(e) = set {
            fail(&anyhow::anyhow!(
                "the gRPC TLS settings (MERIDIAN_CA, MERIDIAN_CERT, MERIDIAN_KEY or the profile's): {e}"
            ));
        }
    }
    // `meridian up` calls with the admin token of the platform it starts.
    if let Some(token) = token.filter(|_| !matches!(cli.command, Command::Up(_)))
        && let Err(e) = meridian_proto::auth::set_token(&token)
    {
        fail(&anyhow::anyhow!(
            "the token (MERIDIAN_TOKEN or the profile's): {e}"
        ));
    }
    // The SDK's warnings (a consumer's membership lost, say) on stderr, beside the
    // command's own output; MERIDIAN_LOG sets the level (default warn).
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        // A broker named explicitly wins; otherwise the control plane, when one is known.
        let control = match (&cli.broker, &cli.control) {
            (_, Some(c)) => Some(c.clone()),
            (Some(_), None) => None,
            (None, None) => control::resolve(None),
        };
        let control_or_default = control
            .clone()
            .unwrap_or_else(|| control::DEFAULT_CONTROL.to_owned());
        let broker = endpoint::resolve(cli.broker.as_deref());
        let region = cli.region.as_deref();
        // Produce and consume: the named broker, else the routed region's brokers (the
        // client follows its region's failover while it runs).
        let data_client = |topic: String| {
            let control = control.clone();
            let explicit = cli.broker.clone();
            let region = cli.region.clone();
            async move {
                match (explicit, control) {
                    (Some(b), _) => Ok(meridian_client::Client::connect(&b).await?),
                    (None, Some(c)) => {
                        let (client, route) =
                            meridian_client::Client::connect_routed(&c, &topic, region.as_deref())
                                .await
                                .with_context(|| {
                                    format!(
                                        "routing topic {topic} through the control plane at {c}"
                                    )
                                })?;
                        report_moves(&client, route.region);
                        Ok(client)
                    }
                    (None, None) => {
                        Ok(meridian_client::Client::connect(&endpoint::resolve(None)).await?)
                    }
                }
            }
        };
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Certs(args) => certs::run(args),
            Command::Mirror(cmd) => mirror::run(cmd, cli.json).await,
            Command::Topic(cmd) => topic::run(cmd, &broker, control.as_deref(), cli.json).await,
            Command::LogGroup(cmd) => {
                log_group::run(cmd, &broker, control.as_deref(), region, cli.json).await
            }
            Command::Region(cmd) => region::run(cmd, &control_or_default, cli.json).await,
            Command::Broker(cmd) => broker::run(cmd, &control_or_default, region, cli.json).await,
            Command::Cluster(ClusterCommand::Health(args)) => {
                cluster::run(args, &control_or_default, cli.json).await
            }
            Command::Produce(args) => {
                let client: anyhow::Result<_> = data_client(args.topic.clone()).await;
                produce::run(args, client?, cli.json).await
            }
            Command::Consume(args) => {
                let client: anyhow::Result<_> = data_client(args.topic.clone()).await;
                consume::run(args, client?, cli.json).await
            }
            Command::Txn(cmd) => txn::run(cmd, &broker, control.as_deref(), region, cli.json).await,
            Command::Group(cmd) => {
                group::run(cmd, &broker, control.as_deref(), region, cli.json).await
            }
            Command::User(cmd) => {
                user::run(cmd, &broker, control.as_deref(), region, cli.json).await
            }
            Command::Acl(cmd) => acl::run(cmd, &broker, control.as_deref(), region, cli.json).await,
            Command::Profile(cmd) => profile::run(cmd, cli.json),
            Command::Token(cmd) => token::run(cmd, cli.json),
            Command::Version => version::run(&control_or_default, region, cli.json).await,
            Command::Completions { .. } => unreachable!("answered before connecting"),
        }
    });
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(e: &anyhow::Error) -> ! {
    let mut line = format!("error: {e}");
    for cause in e.chain().skip(1) {
        line.push_str(&format!(": {cause}"));
    }
    eprintln!("{line}");
    std::process::exit(1);
}

/// Says on standard error when a routed client moves to another region (its region failed
/// over, or the one asked for serves again).
fn report_moves(client: &meridian_client::Client, mut region: String) {
    let client = client.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            match client.region() {
                Some(now) if now != region => {
                    eprintln!("region {region} does not serve now: moved to region {now}");
                    region = now;
                }
                _ => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
