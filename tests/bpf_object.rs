//! The committed eBPF object (`bpf/dnsbgpd_filter.o`, embedded in the
//! crate so that a build needs no clang) is what `bpf/build.sh` makes from
//! `bpf/dnsbgpd_filter.c`: rebuilt here into a temp dir and compared byte
//! for byte. Needs clang, llvm-strip (Debian `clang`, `llvm`) and the libbpf
//! headers (`libbpf-dev`): skipped with a printed reason, a failure with
//! `CI=true`.

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// True when the tool chain is there; else skip (or panic under CI).
fn require_toolchain() -> bool {
    let mut missing = Vec::new();
    for (bin, pkg) in [("clang", "clang"), ("llvm-strip", "llvm"), ("gcc", "gcc")] {
        let found = Command::new(bin).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        if !found {
            missing.push(format!("`{bin}` (Debian package `{pkg}`)"));
        }
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        missing.push("/usr/include/bpf/bpf_helpers.h (Debian package `libbpf-dev`)".into());
    }
    if missing.is_empty() {
        return true;
    }
    common::skip(format_args!("missing {}; install them (apt-get install ...)", missing.join(", ")))
}

#[test]
fn committed_object_matches_the_source() -> Result<()> {
    if !require_toolchain() {
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("dnsbgpd_filter.o");
    let run = Command::new(root.join("bpf/build.sh")).arg(&out).output().context("running bpf/build.sh")?;
    if !run.status.success() {
        bail!("bpf/build.sh failed: {}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    }
    let built = std::fs::read(&out)?;
    let committed = std::fs::read(root.join("bpf/dnsbgpd_filter.o"))?;
    assert!(
        built == committed,
        "bpf/dnsbgpd_filter.o differs from what bpf/build.sh makes of bpf/dnsbgpd_filter.c \
         ({} bytes built, {} committed): run bpf/build.sh and commit the object",
        built.len(),
        committed.len()
    );
    // No path of the machine that built it (the build must not depend on
    // where the tree is).
    let text = String::from_utf8_lossy(&committed);
    assert!(!text.contains(root.to_string_lossy().as_ref()), "the object names the source directory");
    Ok(())
}
