//! The one way Maestro writes a file it cares about, and the one way it makes a private
//! directory. Used by the server (`server-url`, `owner-token`, spawn manifests, modal pages,
//! the database file) and by the `maestro` CLI (hooks settings and their backups, tunnel
//! configs).
//!
//! Why one helper: these files hold tokens, a database, or a user's agent settings (which may
//! carry API keys). Writing them by hand invites three mistakes this module rules out:
//!
//! - **A window where the file is world-readable.** `fs::write` creates with 0666 minus the
//!   umask (usually 0644) and a later `chmod` comes too late. Here the temp file is created
//!   with mode 0600 in the `open(2)` call itself, and only then given its final mode.
//! - **A half-written file after a crash, or a reader seeing one.** The bytes go to a temp file
//!   in the same directory, are fsynced, renamed over the target (atomic on one file system),
//!   and the directory is fsynced so the rename itself survives a power cut.
//! - **Following a planted file.** The temp file has a random name and is opened with
//!   `O_CREAT | O_EXCL` (`create_new`), so an existing file or symlink of that name is never
//!   written through.
//!
//! Private directories ([`create_private_dir`]) are made 0700 at creation, every missing
//! parent included; an existing one is narrowed to 0700.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// The mode of every file Maestro writes for itself: owner read/write only.
pub const PRIVATE_FILE: u32 = 0o600;
/// The mode of every directory Maestro makes for itself: owner only.
pub const PRIVATE_DIR: u32 = 0o700;

/// How many random temp names to try before giving up (each is 64 random bits, so a second
/// attempt only happens when a crashed writer left one behind and the dice repeat).
const TEMP_ATTEMPTS: usize = 8;

/// Replaces `path` with `bytes` atomically, the file ending with permission bits `mode`
/// (use [`PRIVATE_FILE`] unless the file already had a mode worth keeping). The parent
/// directory must exist.
///
/// Readers see the old content or the new one, never a mix; at no moment is the temp file
/// readable by anyone but its owner. On error the temp file is removed and `path` is unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, tmp) = write_temp(path, bytes, mode)?;
    let result = std::fs::rename(&tmp, path).and_then(|()| sync_dir(&dir));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to a new private temp file next to `path`, gives it `mode` and fsyncs it;
/// returns the directory and the temp file's path. On error nothing is left behind.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy();
    let (tmp, mut file) = create_temp(dir, &name)?;
    let result = (|| {
        file.write_all(bytes)?;
        set_mode(&file, mode)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok((dir.to_path_buf(), tmp)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Creates `path` with `bytes` and mode `mode` unless it exists, atomically: the bytes are
/// written to a 0600 temp file and fsynced, then hard-linked to `path`, which fails when
/// another writer got there first. Returns whether this call created it; when it did not, the
/// file that won is left as it was. Nobody ever sees `path` empty or half written.
pub fn create_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let (dir, tmp) = write_temp(path, bytes, mode)?;
    let result = match std::fs::hard_link(&tmp, path) {
        Ok(()) => sync_dir(&dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    result
}

/// [`write_atomic`] off the async runtime's threads (it fsyncs twice).
pub async fn write_atomic_async(path: PathBuf, bytes: Vec<u8>, mode: u32) -> io::Result<()> {
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, mode))
        .await
        .map_err(io::Error::other)?
}

/// Makes `dir` (and any missing parent) with mode 0700; an existing `dir` is narrowed to 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(PRIVATE_DIR);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(dir)?;
        if meta.permissions().mode() & 0o7777 != PRIVATE_DIR {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR))?;
        }
    }
    Ok(())
}

/// Makes sure `path` exists as a file only its owner can read or write, without touching its
/// content: created 0600 when missing, narrowed to 0600 when it exists (a database file a
/// library is about to open, say).
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(PRIVATE_FILE);
    }
    let file = options.open(path)?;
    set_mode(&file, PRIVATE_FILE)
}

/// A new, empty file in `dir` with a random name derived from `name`, opened 0600.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(PRIVATE_FILE);
    }
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Sets the open file's permission bits exactly (`fchmod`: no umask, no path lookup).
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if file.metadata()?.permissions().mode() & 0o7777 != mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (file, mode);
    Ok(())
}

/// Makes a rename in `dir` durable. Windows cannot open a directory as a file; NTFS journals
/// the rename itself.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_file_is_private_and_holds_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_atomic(&path, b"token", PRIVATE_FILE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"token");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(entries(dir.path()), ["secret"], "no temp file is left");
    }

    #[test]
    fn create_new_never_replaces_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert!(create_new_atomic(&path, b"first", PRIVATE_FILE).unwrap());
        assert_eq!(mode_of(&path), 0o600);
        assert!(!create_new_atomic(&path, b"second", PRIVATE_FILE).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(entries(dir.path()), ["key"], "no temp file is left");
    }

    #[test]
    fn the_temp_file_is_private_from_its_creation() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, file) = create_temp(dir.path(), "secret").unwrap();
        assert_eq!(
            file.metadata().unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert!(
            tmp.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".secret.")
        );
    }

    #[test]
    fn a_replaced_file_gets_the_new_mode_and_bytes_whatever_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"old, and world-readable").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&path, b"new", PRIVATE_FILE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o600);
        // A mode worth keeping (a user's settings file) is given back exactly.
        write_atomic(&path, b"newer", 0o640).unwrap();
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(entries(dir.path()), ["secret"]);
    }

    #[test]
    fn the_rename_replaces_the_file_and_never_writes_through_it() {
        // A reader holding the old file keeps the old bytes (the inode is replaced, not
        // rewritten), and a hard link to the old file is left as it was.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let link = dir.path().join("link");
        std::fs::write(&path, b"before").unwrap();
        std::fs::hard_link(&path, &link).unwrap();
        let mut held = File::open(&path).unwrap();
        write_atomic(&path, b"after", PRIVATE_FILE).unwrap();
        let mut seen = String::new();
        io::Read::read_to_string(&mut held, &mut seen).unwrap();
        assert_eq!(seen, "before");
        assert_eq!(std::fs::read(&link).unwrap(), b"before");
        assert_eq!(std::fs::read(&path).unwrap(), b"after");
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temp is written.
        let target = dir.path().join("busy");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"kept").unwrap();
        write_atomic(&target, b"x", PRIVATE_FILE).unwrap_err();
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"kept");
        assert_eq!(entries(dir.path()), ["busy"], "the temp file was removed");
    }

    #[test]
    fn private_dirs_are_0700_created_or_found() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode_of(&nested), 0o700);
        assert_eq!(mode_of(&dir.path().join("a")), 0o700, "parents too");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&open).unwrap();
        assert_eq!(mode_of(&open), 0o700);
    }

    #[test]
    fn ensure_private_file_keeps_content_and_narrows_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        ensure_private_file(&fresh).unwrap();
        assert_eq!(mode_of(&fresh), 0o600);
        assert_eq!(std::fs::read(&fresh).unwrap(), b"");
        let old = dir.path().join("old");
        std::fs::write(&old, b"data").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&old).unwrap();
        assert_eq!(mode_of(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"data");
    }
}
