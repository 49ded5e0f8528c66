//! Puts the commit the binary was built from into `strangler --version` (`STRANGLER_COMMIT`):
//! the value of `STRANGLER_COMMIT` when the build sets it (a container build without `.git`),
//! else `git rev-parse --short=12 HEAD` of the checkout, else `unknown` (a source tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STRANGLER_COMMIT");
    let commit = std::env::var("STRANGLER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STRANGLER_COMMIT={commit}");
}

fn git() -> Option<String> {
    let run = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // Built again when HEAD moves: a new commit, a checkout, a branch's ref updated.
    for dir in [
        run(&["rev-parse", "--git-dir"])?,
        run(&["rev-parse", "--git-common-dir"])?,
    ] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for file in ["HEAD", "packed-refs"] {
            println!("cargo:rerun-if-changed={}", dir.join(file).display());
        }
        if let Some(r) = run(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(r).display());
        }
    }
    run(&["rev-parse", "--short=12", "HEAD"])
}
