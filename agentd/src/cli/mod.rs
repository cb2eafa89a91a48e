//! Command-line dispatch: one file per subcommand.

mod attach;
pub mod audit;
mod audit_opts;
pub mod client;
mod control;
mod docs;
mod doctor;
mod keygen;
pub(crate) mod policy;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agentd",
    version,
    about = "Confine AI-agent processes at the kernel level"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A scoped capability token (`agentd token create`; default: $AGENTD_TOKEN): act on
    /// its one run through the token socket, without membership of the daemon's group.
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command confined by a policy.
    Run(run::RunArgs),
    /// Probe what this kernel supports and print the matrix.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the Ed25519 key pair that signs audit checkpoints.
    Keygen(keygen::KeygenArgs),
    /// Verify, tail, summarize or replay an audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Run the service: one daemon confines many runs for the users of group `agentd`.
    Daemon {
        /// Config file (default: /etc/agentd/config.yaml; missing means the defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDRESS:PORT/metrics (overrides `metrics:`).
        #[arg(long, value_name = "ADDRESS:PORT")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// List the daemon's runs (yours; root: all).
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Daemon health: programs loaded, pins, ring-buffer drops, audit head, runs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// A run's audit records, from the chain.
    Logs {
        run: String,
        /// Keep printing new records until the run ends.
        #[arg(short, long)]
        follow: bool,
        /// Print the records as written.
        #[arg(long)]
        json: bool,
    },
    /// Freeze every process of a run (the daemon's runs).
    Pause { run: String },
    /// Thaw a run that a budget's freeze step (or `pause`) froze.
    Resume {
        /// The run id (the `run` field of its audit records).
        run: String,
    },
    /// Put a running container, cgroup or process tree under a policy (through the daemon).
    Attach(attach::AttachArgs),
    /// End an attached run: what attach added goes, the workload keeps running.
    Detach {
        /// The run id `attach` printed.
        run: String,
    },
    /// Kill every process of a run; it exits 137.
    Stop {
        /// The run id.
        run: String,
    },
    /// Scoped capability tokens: let a caller outside the group act on one run.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check or explain a policy file.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a shell completion script, e.g. `agentd completions bash > /etc/bash_completion.d/agentd`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (agentd.1, agentd-run.1, ...) into a directory.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Mint a token for one run (root, or the run's owner); prints it on stdout.
    Create {
        #[arg(long)]
        run: String,
        /// What it allows: status, stop, pause, resume, logs (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        allow: Vec<String>,
        /// How long it lives: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = crate::daemon::tokens::parse_ttl)]
        ttl: u64,
    },
    /// Revoke a token by its id (root, or whoever minted it).
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Parse and validate; print every error as FILE:LINE:COL: message (exit 1).
    Check {
        file: PathBuf,
        /// Directory that `{workspace}` stands for (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
    },
    /// Print what each layer will enforce for this policy on this kernel.
    Explain {
        file: PathBuf,
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema (draft 2020-12) of policy files, for editors.
    Schema,
    /// Suggest the policy that allows what learn-mode (or audit-mode) runs used.
    Suggest {
        /// The audit log the runs wrote.
        #[arg(long)]
        from: PathBuf,
        /// Only these runs (repeatable; default: every run in the log).
        #[arg(long = "run", value_name = "ID")]
        runs: Vec<String>,
        /// Add to this policy: only what it does not allow yet; prints what was added.
        #[arg(long)]
        base: Option<PathBuf>,
        /// Write the policy here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Directory that `{workspace}` stands for in --base (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    client::set_token(
        cli.token
            .clone()
            .or_else(|| std::env::var("AGENTD_TOKEN").ok()),
    );
    // The daemon sets up its own (journald-friendly) logging from its config.
    if !matches!(cli.command, Command::Daemon { .. }) {
        init_tracing();
    }
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Doctor { json } => doctor::doctor(json),
        Command::Keygen(args) => keygen::keygen(args),
        Command::Audit { command } => audit::audit(command),
        Command::Daemon { config, metrics } => crate::daemon::main(config, metrics),
        Command::Ps { json } => client::ps(json),
        Command::Status { json } => client::status(json),
        Command::Logs { run, follow, json } => client::logs(&run, follow, json),
        Command::Pause { run } => control::pause(&run),
        Command::Resume { run } => control::resume(&run),
        Command::Attach(args) => attach::attach(args),
        Command::Detach { run } => attach::detach(&run),
        Command::Stop { run } => control::stop(&run),
        Command::Token { command } => match command {
            TokenCommand::Create { run, allow, ttl } => client::token_create(&run, allow, ttl),
            TokenCommand::Revoke { id } => client::token_revoke(&id),
        },
        Command::Policy { command } => match command {
            PolicyCommand::Check { file, workspace } => policy::check(&file, workspace),
            PolicyCommand::Explain {
                file,
                workspace,
                json,
            } => policy::explain(&file, workspace, json),
            PolicyCommand::Schema => policy::schema(),
            PolicyCommand::Suggest {
                from,
                runs,
                base,
                out,
                workspace,
            } => policy::suggest(&from, &runs, base.as_deref(), out.as_deref(), workspace),
        },
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(&out),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Load options from the CLI: `{workspace}` is --workspace or the current directory.
pub fn load_options(workspace: Option<PathBuf>) -> Result<crate::policy::LoadOptions, String> {
    let workspace = match workspace {
        Some(w) => w,
        None => std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?,
    };
    let workspace = std::fs::canonicalize(&workspace)
        .map_err(|e| format!("workspace {}: {e}", workspace.display()))?;
    Ok(crate::policy::LoadOptions {
        workspace,
        home: invoking_home(),
    })
}

/// The invoking user's home: under sudo, SUDO_USER's home, else $HOME, else root's.
fn invoking_home() -> PathBuf {
    if let Ok(user) = std::env::var("SUDO_USER") {
        if let Ok(Some(u)) = nix::unistd::User::from_name(&user) {
            return u.dir;
        }
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h);
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_else(|| PathBuf::from("/"))
}
