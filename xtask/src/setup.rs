//! Idempotent set-up of everything agentd needs to build and test on a fresh
//! Debian machine with rustup: apt packages, a pinned nightly with rust-src
//! (the eBPF side), and bpf-linker built against that nightly's own libLLVM.

use std::path::PathBuf;
use std::process::Command;

use crate::util::{output, run};

/// The verified nightly line (rustc 1.97.0-nightly, LLVM 22).
pub const NIGHTLY: &str = "nightly-2026-05-20";
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages: libseccomp for the seccomp layer, the rest for building and testing.
const APT_PACKAGES: &[&str] = &[
    "libseccomp-dev",
    "pkg-config",
    "build-essential",
    "python3",
    "util-linux",
    "bubblewrap",
    // `ip link set lo up` in the test VM (loopback network tests).
    "iproute2",
    // `systemd-analyze verify` of dist/agentd.service (systemd need not be PID 1).
    "systemd",
    // `agentd attach --container` tests: podman with runc (crun refuses hybrid cgroups)
    // and a busybox rootfs imported as a local image (no registry).
    "podman",
    "runc",
    "busybox-static",
    // ... and a Docker engine the test starts itself (dockerd; the containerd it runs).
    "docker.io",
];

pub fn nightly() -> String {
    std::env::var("AGENTD_NIGHTLY").unwrap_or_else(|_| NIGHTLY.to_owned())
}

pub fn setup() -> Result<(), String> {
    apt()?;
    toolchain()?;
    bpf_linker()?;
    Ok(())
}

fn apt() -> Result<(), String> {
    apt_install(APT_PACKAGES)
}

/// Installs the packages of `packages` that are not installed yet.
pub fn apt_install(packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "--no-upgrade",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn toolchain() -> Result<(), String> {
    let nightly = nightly();
    let _ = output(Command::new("rustup").args(["set", "auto-self-update", "disable"]));
    let have =
        output(Command::new("rustup").args(["run", &nightly, "rustc", "--version"])).is_some();
    if !have {
        eprintln!("setup: installing {nightly} with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            &nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &nightly,
    ]))
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &nightly,
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<(), String> {
    let ok = output(Command::new("bpf-linker").arg("--version"))
        .or_else(|| output(Command::new(cargo_bin("bpf-linker")).arg("--version")))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if ok {
        return Ok(());
    }
    let nightly = nightly();
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against {nightly}'s libLLVM");
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{nightly}"))
            .args(["--print", "sysroot"]),
    )
    .ok_or("cannot find the nightly's sysroot")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let llvm_so = std::fs::read_dir(&lib)
        .map_err(|e| format!("read {}: {e}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM") && n.contains("-rust-") && n.ends_with(".so"))
        .ok_or_else(|| format!("no libLLVM-*-rust-*.so in {}", lib.display()))?;
    let llvm_name = llvm_so
        .trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_owned();
    let vv =
        output(Command::new("rustc").arg(format!("+{nightly}")).arg("-vV")).unwrap_or_default();
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .ok_or("cannot read the nightly's LLVM version")?
        .to_owned();
    let rustflags = format!(
        "-L {lib} -l dylib={llvm_name} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    run(Command::new("cargo")
        .arg(format!("+{nightly}"))
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major},no-llvm-linking"))
        .env("RUSTFLAGS", rustflags))
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin").join(name)
}
