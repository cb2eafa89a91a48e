//! `systemd-analyze verify` on the shipped unit: systemd is not PID 1 on our machines,
//! but its package installs the analyzer, which checks the unit's syntax, directives
//! and the executable. The check uses a copy whose ExecStart is the binary just built.

use std::path::Path;
use std::process::Command;

pub fn verify_unit(root: &Path, agentd: &Path) -> Result<(), String> {
    let unit = root.join("dist/agentd.service");
    let text = std::fs::read_to_string(&unit).map_err(|e| format!("{}: {e}", unit.display()))?;
    let dir = root.join("target/unit-check");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join("agentd.service");
    let text = text.replace(
        "ExecStart=/usr/bin/agentd",
        &format!("ExecStart={}", agentd.display()),
    );
    std::fs::write(&copy, text).map_err(|e| format!("{}: {e}", copy.display()))?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .map_err(|e| format!("systemd-analyze (apt package systemd): {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        return Err(format!(
            "systemd-analyze verify dist/agentd.service: {}\n{said}",
            out.status
        ));
    }
    println!("systemd-analyze verify dist/agentd.service: OK");
    Ok(())
}
