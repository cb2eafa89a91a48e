//! Building this crate has an undeclared dependency on the `bpf-linker` binary (the
//! `bpfel-unknown-none` target links with it). Re-run, and so relink, when that binary
//! changes. Mirrors aya-template, without the `which` dependency.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    let Some(path) = env::var_os("PATH") else {
        return;
    };
    let found = env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate: &PathBuf| candidate.is_file());
    if let Some(bpf_linker) = found {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
