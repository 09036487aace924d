//! Makes the web app's build output (`web/dist`, embedded by `http/web.rs`) exist, so a fresh
//! clone compiles before anyone has run `npm run build`: a placeholder `index.html` says how to
//! build the app. `cargo xtask run` and `cargo xtask test` build the real app first.
//!
//! Also tells rustc a fingerprint of `web/dist` (`MAESTRO_WEB_STAMP`, read by `http/web.rs`),
//! so rebuilding the app recompiles the server with the new files embedded.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::{env, fs};

const PLACEHOLDER: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Maestro</title></head>\
<body><h1>Maestro</h1><p>The web app was not built: run <code>cargo xtask run</code> (it builds \
<code>web/</code> with npm, then the server).</p><p>Agents: see <a href=\"/agents\">/agents</a>; \
the API: <a href=\"/api/docs\">/api/docs</a>.</p></body></html>\n";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = manifest.join("..").join("..").join("web").join("dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    if !dist.join("index.html").exists() {
        fs::create_dir_all(&dist).expect("create web/dist");
        fs::write(dist.join("index.html"), PLACEHOLDER).expect("write web/dist/index.html");
    }
    let mut hasher = DefaultHasher::new();
    stamp(&dist, &dist, &mut hasher);
    println!("cargo:rustc-env=MAESTRO_WEB_STAMP={:016x}", hasher.finish());
}

/// Hashes every file's path, size and modification time under `dir`, in a stable order.
fn stamp(root: &Path, dir: &Path, hasher: &mut DefaultHasher) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            stamp(root, &path, hasher);
        } else {
            path.strip_prefix(root).unwrap_or(&path).hash(hasher);
            meta.len().hash(hasher);
            meta.modified().ok().hash(hasher);
        }
    }
}
