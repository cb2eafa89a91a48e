//! Builds the eBPF object (`agentd-ebpf`) with aya-build and a nightly toolchain, into
//! `$OUT_DIR/agentd-ebpf`, where `layers::bpf` embeds it with `include_bytes_aligned!`.
//!
//! Environment:
//! - `AGENTD_NIGHTLY`: rustup toolchain for the eBPF build (default `nightly-2026-05-20`;
//!   needs the `rust-src` component and `bpf-linker` on PATH).
//! - `AYA_BUILD_SKIP=1` (or `true`): do not build the eBPF object; write an empty file
//!   instead, so `cargo clippy` / `cargo doc` work on stable without nightly. Such a binary
//!   refuses to load BPF with "agentd was built without its eBPF object (AYA_BUILD_SKIP=1)".

use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

const NIGHTLY_ENV: &str = "AGENTD_NIGHTLY";
const DEFAULT_NIGHTLY: &str = "nightly-2026-05-20";
const SKIP_ENV: &str = "AYA_BUILD_SKIP";
const EBPF_PACKAGE: &str = "agentd-ebpf";
/// Name of the `[[bin]]` in agentd-ebpf; aya-build copies it to `$OUT_DIR/<name>`.
const EBPF_OBJECT: &str = "agentd-ebpf";

/// Release-profile settings for the nested eBPF build. Cargo ignores `[profile]` in member
/// manifests and the workspace's release profile is tuned for userspace, so they are passed
/// as `CARGO_PROFILE_RELEASE_*` to the nested `cargo build` (which inherits this process's
/// environment). Debug info must survive for bpf-linker to emit BTF.
const EBPF_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_DEBUG", "2"),
    ("CARGO_PROFILE_RELEASE_STRIP", "false"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
    ("CARGO_PROFILE_RELEASE_PANIC", "abort"),
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3"),
];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={NIGHTLY_ENV}");
    println!("cargo:rerun-if-env-changed={SKIP_ENV}");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join(EBPF_OBJECT);

    if skip_requested() {
        // An empty object is the loader's marker for "built without eBPF".
        fs::write(&object, b"").with_context(|| format!("write {}", object.display()))?;
        println!("cargo:warning={SKIP_ENV} set: agentd is built without its eBPF object");
        return Ok(());
    }

    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let workspace_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", manifest_dir.display()))?;
    let ebpf_dir = workspace_dir.join(EBPF_PACKAGE);
    let common_dir = workspace_dir.join("agentd-common");
    // aya-build emits rerun-if-changed for the eBPF crate; the kernel ABI crate it depends
    // on is not a dependency of this build script, so name it here, and the workspace
    // manifest, which pins the eBPF crate's dependencies.
    for path in [common_dir.as_path(), &workspace_dir.join("Cargo.toml")] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;

    let nightly = env::var(NIGHTLY_ENV).unwrap_or_else(|_| DEFAULT_NIGHTLY.to_owned());
    for (key, value) in EBPF_PROFILE {
        // Only the nested eBPF cargo reads these; this build script is single-threaded.
        env::set_var(key, value);
    }

    let package = aya_build::Package {
        name: EBPF_PACKAGE,
        root_dir: ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&nightly)).with_context(
        || {
            format!(
                "build {EBPF_PACKAGE} with toolchain {nightly} (needs rust-src and bpf-linker; \
             set {SKIP_ENV}=1 to build without eBPF)"
            )
        },
    )?;

    let len = fs::metadata(&object)
        .with_context(|| format!("eBPF object missing at {}", object.display()))?
        .len();
    if len == 0 {
        return Err(anyhow!("eBPF object {} is empty", object.display()));
    }
    Ok(())
}

fn skip_requested() -> bool {
    env::var_os(SKIP_ENV).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}
