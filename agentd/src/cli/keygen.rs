//! `agentd keygen`: the Ed25519 key pair that signs audit checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::audit::keys;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Directory for audit.key (0600) and audit.pub (default: the host key directory).
    #[arg(long, env = keys::KEY_DIR_ENV, default_value = keys::DEFAULT_KEY_DIR)]
    out: PathBuf,
    /// Replace an existing key pair (the old key can no longer sign; rotate first).
    #[arg(long)]
    force: bool,
}

pub fn keygen(args: KeygenArgs) -> ExitCode {
    match keys::generate(&args.out, args.force) {
        Ok(vk) => {
            println!(
                "wrote {} (secret, 0600) and {}\npublic key: {}",
                args.out.join(keys::SECRET_FILE).display(),
                args.out.join(keys::PUBLIC_FILE).display(),
                keys::key_hex(&vk)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentd: keygen: {e}");
            ExitCode::from(1)
        }
    }
}
