//! The fake `cloudflared` (this crate's `cloudflared` binary, see `src/bin/cloudflared.rs`) for
//! other crates' tests, which cannot name another package's binary with `CARGO_BIN_EXE_*`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fake's path in the target directory of the running test, built first when it is missing
/// or older than its source. `cargo xtask test` (nextest over the workspace) builds it anyway;
/// the build here covers `cargo nextest run -p maestro`.
pub fn fake_cloudflared() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join("cloudflared");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/cloudflared.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (modified(&bin), modified(&source)) {
        (Some(built), Some(written)) => built < written,
        (None, _) => true,
        (Some(_), None) => false,
    };
    if stale {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = profile_dir.parent().expect("a target directory");
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "maestro-testkit",
                "--bin",
                "cloudflared",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("running cargo build for the fake cloudflared");
        assert!(status.success(), "building the fake cloudflared failed");
    }
    assert!(bin.is_file(), "no fake cloudflared at {}", bin.display());
    bin
}

/// A `PATH` whose first directory (`dir`, created) holds `cloudflared`, a link to the fake.
pub fn path_with_fake_cloudflared(dir: &Path) -> OsString {
    std::fs::create_dir_all(dir).expect("creating the PATH directory");
    let link = dir.join("cloudflared");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(fake_cloudflared(), &link).expect("linking the fake cloudflared");
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("a valid PATH")
}
