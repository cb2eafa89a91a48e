//! `cargo xtask vm-test`: boot Debian's stock kernel under QEMU (TCG) and run
//! the integration suite inside it, where BPF LSM programs load, so the LSM
//! path is exercised on a real kernel that allows it.
//!
//! Everything comes by package name: qemu-system-x86 and busybox-static from
//! apt, the kernel with `apt-get download`. Nothing is installed into /boot.
//! The guest is a tiny initramfs that mounts the host root read-only over 9p
//! and chroots into it, so the host-built test binaries run unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{output, run, workspace_root, Tally};

const VM_APT_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "xz-utils", "cpio"];
/// Modules the guest needs (the stock kernel builds them as modules): 9p over virtio,
/// and TCP sock_diag.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "fs/netfs/netfs",
    "fs/fscache/fscache",
    "net/9p/9pnet",
    "net/9p/9pnet_virtio",
    "fs/9p/9p",
    // sock_diag for TCP: SOCK_DESTROY aborts a tainted run's sockets (tests/fsrules.rs).
    "net/ipv4/inet_diag",
    "net/ipv4/tcp_diag",
];
const INIT: &str = include_str!("../vm/init.sh");
/// The integration test binaries the VM runs by default (see `integration_test_binaries`).
const VM_SUITE: &[&str] = &[
    "cli",
    "confinement",
    "lifecycle",
    "fsrules",
    "exec_integrity",
    "net_unix",
    "syscall_hooks",
    // The denial tracker's records from the syscall exits (fexit) instead of sys_exit.
    "audit_denials",
    // The private /proc: landlock's ptrace scope and hidepid on the distribution kernel.
    "procfs",
];
/// Tests of the VM suite whose outcome does not depend on the kernel (policy parsing,
/// exit-code plumbing): the host suite covers them, and under TCG each costs seconds.
const VM_SKIP: &[&str] = &[
    "policy_check_reports_a_bad_file_with_line_and_column",
    "a_path_under_proc_self_is_refused_by_check_and_run",
    "exit_codes_and_signals_propagate",
    "a_missing_command_exits_127",
    "an_audit_log_inside_a_writable_root_is_refused",
    // Tens of thousands of opens cost minutes under TCG; the program that dedupes them
    // is the one every fsrules test loads (the verifier's verdict is the kernel part).
    "audit_mode_records_a_repeated_file_access_once_and_loses_nothing_after_it",
    // The daemon's launch runs the standalone's child code; its start verifies every
    // program, minutes under TCG.
    "through_the_daemon_a_run_sees_only_its_own_processes_too",
    // Kernel-independent here: the same cgroup connect programs and the same seccomp
    // and capability code run on both paths. The VM keeps one test of each mechanism
    // (a taint source on the LSM hook, int 0x80 through the fexit tracker).
    "wildcard_names_in_net_after_taint_are_refused",
    "a_secret_read_then_connect_to_an_allowed_port_is_denied",
    "after_taint_holds_for_ipv6_and_ipv4_mapped_destinations",
    "after_taint_destinations_stay_reachable_and_the_rest_is_denied",
    "in_audit_mode_a_tainted_connect_is_a_would_deny",
    "an_x32_call_killed_by_seccomp_is_a_denied_record",
    "capabilities_are_gone_and_no_new_privs_is_set",
    "terminal_injection_ioctls_fail_with_eperm_normal_tty_use_works",
    "sigterm_to_agentd_is_forwarded_to_the_command",
];
/// Whole-VM time limit: boot (~10 s under TCG) plus the suite at 5-10x native cost.
/// One vCPU: with two, TCG mishandled the kernel's int3-based code patching when a
/// tracepoint was enabled (an "Oops: int3" in syscall_trace_enter, seen here).
const VM_TIMEOUT_SECS: u32 = 2700;

pub enum Outcome {
    /// The suite ran inside the VM and passed.
    Ran(Tally),
    /// The VM test cannot run here; the reason is printed as a loud skip.
    Skipped(String),
}

/// A kernel ready to boot: the image, its version and an initramfs for it.
struct Guest {
    vmlinuz: PathBuf,
    kver: String,
    initrd: PathBuf,
    work: PathBuf,
}

/// Fetches and unpacks the newest kernel of `series` and builds its initramfs; `Err(Ok)`
/// is a reason to skip (loudly), `Err(Err)` a failure.
fn prepare_guest(series: &str) -> Result<Guest, Result<String, String>> {
    if let Err(why) = crate::setup::apt_install(VM_APT_PACKAGES) {
        return Err(Ok(format!(
            "cannot install {}: {why}",
            VM_APT_PACKAGES.join(" ")
        )));
    }
    let work = workspace_root().join("target/vm");
    std::fs::create_dir_all(&work).map_err(|e| Err(format!("create {}: {e}", work.display())))?;
    let Some(pkg) = newest_kernel_package(series) else {
        return Err(Ok(format!(
            "no linux-image-{series}.*-amd64-unsigned package is known to apt"
        )));
    };
    let kdir = work.join("kernel").join(&pkg);
    if !kdir.join("boot").is_dir() {
        let deb = download(&work, &pkg).map_err(|e| Ok(format!("cannot download {pkg}: {e}")))?;
        std::fs::create_dir_all(&kdir)
            .map_err(|e| Err(format!("create {}: {e}", kdir.display())))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&kdir)).map_err(Err)?;
        let _ = std::fs::remove_file(&deb);
    }
    let (vmlinuz, kver) = find_vmlinuz(&kdir).map_err(Err)?;
    let initrd = work.join(format!("initramfs-{kver}.cpio.gz"));
    build_initramfs(&kdir, &kver, &initrd).map_err(Err)?;
    Ok(Guest {
        vmlinuz,
        kver,
        initrd,
        work,
    })
}

/// What one boot of the guest left behind.
struct Boot {
    /// What the guest's script printed.
    output: String,
    /// The script's exit code; `None`: the VM ended without one.
    rc: Option<i32>,
    status: std::process::ExitStatus,
    console: PathBuf,
}

/// Boots `guest` with `script` as its run.sh (and `files` beside it in the share) and
/// waits for it to power off.
fn boot(guest: &Guest, script: &str, files: &[(&str, String)]) -> Result<Boot, String> {
    let share = guest.work.join("share");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(&share).map_err(|e| format!("create {}: {e}", share.display()))?;
    std::fs::write(share.join("run.sh"), script).map_err(|e| format!("write run.sh: {e}"))?;
    for (name, text) in files {
        std::fs::write(share.join(name), text).map_err(|e| format!("write {name}: {e}"))?;
    }
    let console = guest.work.join("console.log");
    let console_file = std::fs::File::create(&console)
        .map_err(|e| format!("create {}: {e}", console.display()))?;
    let status = Command::new("timeout")
        .arg(VM_TIMEOUT_SECS.to_string())
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "2048", "-smp", "1", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&guest.vmlinuz)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=share,security_model=none,id=share",
            share.display()
        ))
        .stdin(std::process::Stdio::null())
        .stdout(console_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(console_file)
        .status()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    let output = std::fs::read_to_string(share.join("output.log")).unwrap_or_default();
    let rc = std::fs::read_to_string(share.join("exitcode"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    Ok(Boot {
        output,
        rc,
        status,
        console,
    })
}

impl Boot {
    fn no_result(&self) -> String {
        format!(
            "the VM ended ({}) without a result; console log: {}\n{}",
            self.status,
            self.console.display(),
            tail(
                &std::fs::read_to_string(&self.console).unwrap_or_default(),
                30
            )
        )
    }
}

pub fn vm_test(series: &str) -> Result<Outcome, String> {
    let guest = match prepare_guest(series) {
        Ok(g) => g,
        Err(Ok(why)) => return Ok(Outcome::Skipped(why)),
        Err(Err(e)) => return Err(e),
    };
    // The suite runs from the host's build: the integration test binaries and the release
    // agentd (what users install; its start costs about a third of the debug build's,
    // 0.07 s against 0.24 s on the host, and under TCG each test starts agentd a few
    // times).
    crate::util::cargo(&["build", "-p", "agentd", "-p", "integration", "--bins"])?;
    crate::util::cargo(&["build", "--release", "-p", "agentd"])?;
    let tests = integration_test_binaries()?;
    println!(
        "vm-test: booting {} under QEMU (TCG) with {} test binaries",
        guest.kver,
        tests.len()
    );
    let b = boot(&guest, &run_script(&workspace_root(), &tests), &[])?;
    println!("{}", b.output);
    let mut tally = Tally::default();
    for line in b.output.lines() {
        tally.add_line(line);
    }
    match b.rc {
        Some(0) if tally.passed > 0 => Ok(Outcome::Ran(tally)),
        Some(0) => Err("the VM ran no test".into()),
        Some(rc) => Err(format!(
            "the suite failed inside the VM (exit {rc}); console: {}",
            b.console.display()
        )),
        None => Err(b.no_result()),
    }
}

/// `cargo xtask vm-bench`: the syscall and launch workloads, bare and under agentd, in one
/// boot of the guest, where the LSM path loads (results in target/bench/vm.md).
pub fn vm_bench(series: &str) -> Result<Outcome, String> {
    let guest = match prepare_guest(series) {
        Ok(g) => g,
        Err(Ok(why)) => return Ok(Outcome::Skipped(why)),
        Err(Err(e)) => return Err(e),
    };
    crate::util::cargo(&[
        "build",
        "--release",
        "-p",
        "agentd",
        "-p",
        "integration",
        "--bins",
    ])?;
    let root = workspace_root();
    println!("vm-bench: booting {} under QEMU (TCG)", guest.kver);
    let b = boot(
        &guest,
        &crate::vm_bench::script(&root),
        &[("policy.yaml", crate::vm_bench::policy(&root))],
    )?;
    match b.rc {
        Some(0) => {}
        Some(rc) => {
            return Err(format!(
                "the bench failed inside the VM (exit {rc}):\n{}",
                tail(&b.output, 30)
            ))
        }
        None => return Err(b.no_result()),
    }
    let out = root.join("target/bench/vm.md");
    crate::vm_bench::report(&b.output, &guest.kver, &out)?;
    println!("vm-bench: written to {}", out.display());
    Ok(Outcome::Ran(Tally::default()))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The newest `linux-image-SERIES.N+debX-amd64-unsigned` apt knows.
fn newest_kernel_package(series: &str) -> Option<String> {
    let pattern = format!(
        "^linux-image-{}\\.[0-9]+\\+deb[0-9]+-amd64-unsigned$",
        series.replace('.', "\\.")
    );
    let search = || output(Command::new("apt-cache").args(["search", "--names-only", &pattern]));
    let mut found = search().unwrap_or_default();
    if found.trim().is_empty() {
        let _ = run(Command::new("apt-get").args(["update", "-qq"]));
        found = search().unwrap_or_default();
    }
    found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .max_by_key(|name| {
            // linux-image-6.12.115+deb12-... → 115
            name.trim_start_matches(&format!("linux-image-{series}."))
                .split('+')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        })
}

fn download(work: &Path, pkg: &str) -> Result<PathBuf, String> {
    let dl = work.join("download");
    std::fs::create_dir_all(&dl).map_err(|e| format!("create {}: {e}", dl.display()))?;
    run(Command::new("apt-get")
        .args(["download", "-q", pkg])
        .current_dir(&dl))?;
    let deb = std::fs::read_dir(&dl)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
        })
        .ok_or("apt-get download left no .deb")?;
    Ok(deb)
}

fn find_vmlinuz(kdir: &Path) -> Result<(PathBuf, String), String> {
    let boot = kdir.join("boot");
    for e in std::fs::read_dir(&boot).map_err(|e| format!("{}: {e}", boot.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        if let Some(v) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
        {
            return Ok((p.clone(), v.to_owned()));
        }
    }
    Err(format!("no vmlinuz in {}", boot.display()))
}

fn build_initramfs(kdir: &Path, kver: &str, out: &Path) -> Result<(), String> {
    let stage = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "sbin", "proc", "sys", "dev", "tmp", "newroot"] {
        std::fs::create_dir_all(stage.join(d)).map_err(|e| e.to_string())?;
    }
    let busybox = stage.join("bin/busybox");
    std::fs::copy("/bin/busybox", &busybox).map_err(|e| format!("copy /bin/busybox: {e}"))?;
    let applets =
        output(Command::new("/bin/busybox").arg("--list")).ok_or("busybox --list failed")?;
    for a in applets.lines().filter(|a| *a != "busybox" && !a.is_empty()) {
        let _ = std::os::unix::fs::symlink("busybox", stage.join("bin").join(a));
    }
    let moddir = stage.join("lib/modules").join(kver);
    std::fs::create_dir_all(&moddir).map_err(|e| e.to_string())?;
    let src = kdir.join("lib/modules").join(kver).join("kernel");
    for m in MODULES {
        let name = Path::new(m)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ko = src.join(format!("{m}.ko"));
        let xz = src.join(format!("{m}.ko.xz"));
        let dest = moddir.join(format!("{name}.ko"));
        if ko.exists() {
            std::fs::copy(&ko, &dest).map_err(|e| format!("copy {}: {e}", ko.display()))?;
        } else if xz.exists() {
            let data = Command::new("xz")
                .arg("-dc")
                .arg(&xz)
                .output()
                .map_err(|e| format!("xz: {e}"))?;
            std::fs::write(&dest, data.stdout).map_err(|e| e.to_string())?;
        }
        // Built in, or absent from this kernel: init.sh skips what it cannot find.
    }
    let init = stage.join("init");
    std::fs::write(&init, INIT).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let script = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        stage.display(),
        out.display()
    );
    run(Command::new("sh").args(["-c", &script]))?;
    let _ = std::fs::remove_dir_all(&stage);
    Ok(())
}

/// The integration test executables, as cargo built them.
fn integration_test_binaries() -> Result<Vec<PathBuf>, String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "-p",
            "integration",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo test --no-run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Only test targets (kind "test") with an executable.
        if line.contains("\"reason\":\"compiler-artifact\"") && line.contains("\"kind\":[\"test\"]")
        {
            if let Some(exe) = line
                .split("\"executable\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                bins.push(PathBuf::from(exe));
            }
        }
    }
    // Under TCG every test costs 5-10x: by default the VM runs the suites whose
    // outcome depends on the kernel's LSM, landlock, seccomp and cgroup paths.
    // AGENTD_VM_SUITE=all runs every integration test binary; AGENTD_VM_SUITE=a,b only
    // those.
    let chosen = std::env::var("AGENTD_VM_SUITE").ok();
    if chosen.as_deref() != Some("all") {
        let suite: Vec<String> = match chosen.as_deref() {
            Some(list) if !list.trim().is_empty() => {
                list.split(',').map(|s| s.trim().to_owned()).collect()
            }
            _ => VM_SUITE.iter().map(|s| (*s).to_owned()).collect(),
        };
        bins.retain(|b| {
            let name = b
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            suite
                .iter()
                .any(|s| name.rsplit_once('-').is_some_and(|(stem, _)| stem == s))
        });
    }
    if bins.is_empty() {
        return Err("found no integration test binaries".into());
    }
    Ok(bins)
}

/// The start of every guest script: the kernel, a work tree under /tmp bound back, and
/// the cgroup controllers delegated.
pub fn guest_prelude(root: &Path, what: &str) -> String {
    let mut s =
        format!("#!/bin/sh\n# Generated by cargo xtask {what}; runs inside the guest.\nset -u\n");
    s.push_str("echo \"kernel $(uname -r); LSMs $(cat /sys/kernel/security/lsm)\"\n");
    // A work tree under the host's /tmp is hidden by the guest's tmpfs: bind it back.
    if let Ok(rel) = root.strip_prefix("/tmp") {
        s.push_str(&format!(
            "mkdir -p '{root}' && mount --bind '/run/host-tmp/{rel}' '{root}' || exit 93\n",
            root = root.display(),
            rel = rel.display()
        ));
    }
    // A pure-v2 guest: delegate the controllers budgets use, as systemd would.
    s.push_str("echo '+cpu +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control || exit 90\n");
    s
}

fn run_script(root: &Path, tests: &[PathBuf]) -> String {
    let mut s = guest_prelude(root, "vm-test");
    s.push_str(&format!(
        "export AGENTD_BIN='{}/target/release/agentd'\nexport AGENTD_TESTPROG='{}/target/debug/agentd-testprog'\n",
        root.display(),
        root.display()
    ));
    // What this kernel must support: the LSM path loads here.
    s.push_str("export AGENTD_EXPECT_BPF_LSM=1 AGENTD_EXPECT_FEXIT=1 AGENTD_EXPECT_TP_BTF=1 AGENTD_EXPECT_CGROUP_BPF=1 AGENTD_EXPECT_CGROUP_MODE=v2 AGENTD_EXPECT_SOCK_DESTROY=1\n");
    s.push_str("\"$AGENTD_BIN\" doctor || exit 91\nrc=0\n");
    let skips: String = VM_SKIP
        .iter()
        .map(|name| format!(" --skip '{name}'"))
        .collect();
    for t in tests {
        // Each binary's start and end time: where the guest's time goes.
        s.push_str(&format!(
            "echo \"== {name} (start $(date +%s))\"\n'{path}' --test-threads=1 --exact{skips} || rc=1\necho \"== {name} (end $(date +%s))\"\n",
            name = t
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            path = t.display()
        ));
    }
    s.push_str("exit $rc\n");
    s
}
