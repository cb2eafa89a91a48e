//! Tasks cargo alone can't do: install the toolchain, run the demo, run every
//! test, run the benchmarks. Each task runs `setup` first, so a fresh machine
//! needs nothing but this repository, rustup and apt.

mod bench;
mod bench_audit;
mod bench_budget;
mod bench_daemon;
mod bench_fsrules;
mod bench_net;
mod bench_plot;
mod bench_report;
mod bench_tools;
mod bench_workloads;
mod deb;
mod setup;
mod unit_check;
mod util;
mod vm;
mod vm_bench;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <setup|build|demo|test|bench|man|deb|vm-test|vm-bench>
  setup   install what is missing: apt packages, the pinned nightly with rust-src, bpf-linker
  build   setup, then build agentd (release) with its eBPF object
  demo    build, then run examples/agent.py confined by policies/demo.yaml
  test    build, then `bench --quick` on the debug build, then every unit and integration
          test (as root), then build and check the package
  man     build, then write the man pages to target/man
  deb     build, then the Debian package target/debian/agentd_*.deb (installs cargo-deb if missing), and check it
  bench   build, then compare agentd with bubblewrap and firejail (ratios to bare, one
          run) and write target/bench/results.{md,json}, ratios.png, launch.png;
          `bench --quick`: the same with small counts (under a minute; `--debug`: on the
          debug build, as `cargo xtask test` runs it);
          `bench audit|syscalls|fsrules|net`: one agentd-only part, to target/bench/PART.md
  vm-test boot Debian's stock 6.12 kernel under QEMU and run the integration suite inside it
  vm-bench boot the same kernel and compare bare with agentd inside it (the BPF LSM path);
          writes target/bench/vm.md";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The tasks run agents as root (the demo, the benchmarks): agentd refuses that
    // unless asked for explicitly.
    if std::env::var_os("AGENTD_USER").is_none() {
        std::env::set_var("AGENTD_USER", "root");
    }
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::setup(),
        Some("build") => setup::setup().and_then(|()| build()),
        Some("demo") => setup::setup().and_then(|()| build()).and_then(|()| demo()),
        Some("test") => setup::setup().and_then(|()| test(&args[1..])),
        Some("man") => setup::setup()
            .and_then(|()| build())
            .and_then(|()| deb::man())
            .map(|dir| println!("man pages: {}", dir.display())),
        Some("deb") => setup::setup()
            .and_then(|()| build())
            .and_then(|()| deb::deb())
            .and_then(|deb| deb::check(&deb)),
        Some("bench") => setup::setup()
            .and_then(|()| build())
            .and_then(|()| bench::bench(&args[1..])),
        Some("vm-test") => setup::setup().and_then(|()| vm_test_counted()).map(|t| {
            if let Some(t) = t {
                println!(
                    "\ntotal: {} passed, {} failed, {} skipped",
                    t.passed, t.failed, t.ignored
                );
            }
        }),
        Some("vm-bench") => setup::setup().and_then(|()| match vm::vm_bench(&vm_series())? {
            vm::Outcome::Ran(_) => Ok(()),
            vm::Outcome::Skipped(why) => Err(format!("vm-bench cannot run here: {why}")),
        }),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    util::cargo(&["build", "--release", "-p", "agentd"])
}

fn demo() -> Result<(), String> {
    let root = util::workspace_root();
    let agentd = root.join("target/release/agentd");
    let audit = root.join("target/demo/audit.jsonl");
    let _ = std::fs::remove_file(&audit);
    let workspace = root.join("target/demo/workspace");
    std::fs::create_dir_all(&workspace)
        .map_err(|e| format!("create {}: {e}", workspace.display()))?;
    let key = util::ensure_signing_key(&agentd, &root.join("target/demo/key"))?;
    println!("== agentd doctor");
    util::run(std::process::Command::new(&agentd).arg("doctor"))?;
    // The agent runs from its workspace: the policy lets it read nothing else of this repo.
    let script = workspace.join("agent.py");
    std::fs::copy(root.join("examples/agent.py"), &script)
        .map_err(|e| format!("copy the demo agent to {}: {e}", script.display()))?;
    println!("\n== agentd run --policy policies/demo.yaml -- /usr/bin/python3 agent.py");
    let status = std::process::Command::new(&agentd)
        .current_dir(&workspace)
        .env("AGENTD_SIGNING_KEY", &key)
        .args(["run", "--policy"])
        .arg(root.join("policies/demo.yaml"))
        .arg("--workspace")
        .arg(&workspace)
        .arg("--audit")
        .arg(&audit)
        .args(["--", "/usr/bin/python3", "agent.py"])
        .status()
        .map_err(|e| format!("run agentd: {e}"))?;
    println!("\nagentd exited with {status}");
    println!("audit log: {}", audit.display());
    let log =
        std::fs::read_to_string(&audit).map_err(|e| format!("read {}: {e}", audit.display()))?;
    println!("== audit records");
    for line in log.lines() {
        println!("{line}");
    }
    println!("\n== agentd audit verify");
    util::run(
        std::process::Command::new(&agentd)
            .args(["audit", "verify"])
            .arg(&audit)
            .arg("--key")
            .arg(key.with_extension("pub")),
    )?;
    if status.code() != Some(0) {
        return Err(format!("the demo agent exited with {status}"));
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<(), String> {
    let root = util::workspace_root();
    if !util::is_root() {
        return Err("the integration tests run the real binary as root: run as root".into());
    }
    // Build the binary the integration tests run (debug: faster to build, same kernel paths).
    util::cargo(&["build", "-p", "agentd", "-p", "integration", "--bins"])?;
    std::env::set_var("AGENTD_BIN", root.join("target/debug/agentd"));
    std::env::set_var("AGENTD_TESTPROG", root.join("target/debug/agentd-testprog"));
    unit_check::verify_unit(&root, &root.join("target/debug/agentd"))?;
    // The benchmark harness on the same build, with small counts: it must run and fill
    // every cell. Its ratios are not checked (debug build, tiny counts, shared machine).
    bench::quick_check(&bench::Bins::debug())?;
    util::cargo(&["fmt", "--all", "--", "--check"])?;
    util::cargo_env(&["clippy", "--all-targets", "--", "-D", "warnings"], &[])?;
    let mut args = vec!["test", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    let mut tally = util::cargo_test_counted(&args)?;
    // The bench check above counts as one test (it returned early had it failed).
    tally.passed += 1;
    // The package: release build, cargo deb, then unpacked into a scratch root and checked.
    build()?;
    let deb = deb::deb()?;
    match deb::check(&deb) {
        Ok(()) => tally.passed += 1,
        Err(e) => {
            eprintln!("{e}");
            tally.failed += 1;
        }
    }
    // The same suite on a kernel where BPF LSM loads (Debian's stock kernel under QEMU).
    if std::env::var_os("AGENTD_SKIP_VM").is_some() {
        eprintln!("SKIP: vm-test: AGENTD_SKIP_VM is set");
    } else {
        if let Some(t) = vm_test_counted()? {
            tally.add(t);
        }
    }
    // One plain closing line: cargo's own last line is often a 0-test doc-test run.
    println!(
        "\ntotal: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    if tally.failed > 0 {
        return Err(format!("{} failed", tally.failed));
    }
    Ok(())
}

/// Runs vm-test; `None` when it was skipped (loudly) because QEMU or the kernel is unavailable.
fn vm_test_counted() -> Result<Option<util::Tally>, String> {
    match vm::vm_test(&vm_series())? {
        vm::Outcome::Ran(t) => Ok(Some(t)),
        vm::Outcome::Skipped(why) if std::env::var_os("AGENTD_REQUIRE_VM").is_some() => Err(
            format!("vm-test cannot run and AGENTD_REQUIRE_VM is set: {why}"),
        ),
        vm::Outcome::Skipped(why) => {
            eprintln!("SKIP: vm-test: {why}");
            Ok(None)
        }
    }
}

fn vm_series() -> String {
    std::env::var("AGENTD_VM_KERNEL").unwrap_or_else(|_| "6.12".into())
}
