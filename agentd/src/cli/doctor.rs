//! `agentd doctor`: the probe matrix, and what each layer is used for.

use std::process::ExitCode;

use crate::probe::{Feature, Probe};

pub fn doctor(json: bool) -> ExitCode {
    let p = Probe::detect();
    if json {
        match serde_json::to_string_pretty(&p) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("agentd: doctor: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    println!("kernel {}\n", p.kernel);
    let cg_detail = match &p.cgroups.error {
        Some(e) => e.clone(),
        None => format!(
            "mode {}; v2 at {} with controllers [{}]; v1 controllers [{}]",
            p.cgroups.mode,
            p.cgroups.v2_mount.as_deref().unwrap_or("(none)"),
            p.cgroups.v2_controllers.join(" "),
            p.cgroups.v1_controllers.join(" ")
        ),
    };
    let cg = Feature {
        available: p.cgroups.error.is_none() && p.cgroups.v2_mount.is_some(),
        detail: cg_detail,
    };
    let lsm_use = if p.bpf_lsm.available {
        "fs deny, secret taint, exec integrity (LSM path)"
    } else {
        "not used: tracepoint fallback instead"
    };
    let fexit_use = if p.fexit.available {
        "denial tracker, listen check (syscall exits)"
    } else {
        "not used: tp_btf/sys_exit instead"
    };
    let rows: [(&str, &Feature, &str); 11] = [
        ("bpf-lsm", &p.bpf_lsm, lsm_use),
        ("fexit", &p.fexit, fexit_use),
        ("tp_btf", &p.tp_btf, "exec/exit tracking per run"),
        (
            "cgroup-bpf",
            &p.cgroup_bpf,
            "network hooks per run (v2 cgroup)",
        ),
        (
            "cgroup-unix",
            &p.cgroup_unix,
            if p.bpf_lsm.available {
                "not used: the LSM path mediates unix sockets"
            } else {
                "pathname unix sockets (loaded through raw bpf)"
            },
        ),
        (
            "landlock",
            &p.landlock,
            "fs read/write/exec, TCP ports, scoping",
        ),
        (
            "seccomp",
            &p.seccomp_filter,
            "baseline syscall deny list, non-native ABI kill",
        ),
        ("seccomp-notify", &p.seccomp_user_notif, "not used yet"),
        (
            "sock-destroy",
            &p.sock_destroy,
            "abort tainted/over-budget runs' TCP sockets",
        ),
        (
            "private-proc",
            &p.private_proc,
            "a run's own /proc: processes outside it hidden",
        ),
        ("cgroups", &cg, "run identity (v2) and memory/pids limits"),
    ];
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    println!(
        "{:w$}  {:9}  {:48}  detail",
        "layer", "available", "used for"
    );
    for (name, f, used) in rows {
        println!(
            "{:w$}  {:9}  {:48}  {}",
            name,
            if f.available { "yes" } else { "no" },
            used,
            f.detail
        );
    }
    println!(
        "\ninode rules (fs.deny, fs.secret, taint): {}",
        if p.bpf_lsm.available {
            "lsm path (lsm/file_open denies with EACCES)"
        } else if p.tp_btf.available {
            "tracepoint fallback (tp_btf/sys_exit kills a denied open with SIGKILL)"
        } else {
            "unavailable (policies using them are refused)"
        }
    );
    println!(
        "pathname unix sockets: {}",
        crate::plan::describe_unix(crate::plan::unix_path(&p))
    );
    ExitCode::SUCCESS
}
