//! `meridian`: the command-line tool. Admin commands, produce and consume, and `meridian up`,
//! which starts a local deployment.
//!
//! Every command takes `--broker HOST:PORT` (or `MERIDIAN_BROKER`); without either it uses
//! the endpoint `meridian up` recorded, then `127.0.0.1:7070`. Tables by default, JSON with
//! `--json`; failures exit non-zero with a one-line reason.

mod consume;
mod endpoint;
mod log_group;
mod produce;
mod region;
mod topic;
mod up;

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
    /// Control plane to talk to (HOST:PORT), for region commands.
    #[arg(long, global = true, env = "MERIDIAN_CONTROL", default_value = region::DEFAULT_CONTROL)]
    control: String,
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
    /// Send messages: from arguments, or one per line of standard input.
    Produce(produce::Args),
    /// Read messages and print one value per line.
    Consume(consume::Args),
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let broker = endpoint::resolve(cli.broker.as_deref());
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Topic(cmd) => topic::run(cmd, &broker, cli.json).await,
            Command::LogGroup(cmd) => log_group::run(cmd, &broker, cli.json).await,
            Command::Region(cmd) => region::run(cmd, &cli.control, cli.json).await,
            Command::Produce(args) => produce::run(args, &broker, cli.json).await,
            Command::Consume(args) => consume::run(args, &broker, cli.json).await,
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
