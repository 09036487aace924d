//! Reading a session's work tree with the `git` command: what changed against the branch the
//! work started from, and one file's diff.
//!
//! The same code runs on the server (sessions on its own machine) and in the `maestro` CLI
//! (the host of a session on another machine, which reports to the server), so both answer
//! alike. It is synchronous: callers in async code run it on a blocking thread.
//!
//! Safety: `git` is started directly with fixed arguments (never through a shell); a path that
//! comes from a request is checked ([`check_path`]: relative, no `..`, no symlinked directory on
//! the way) and must be one of the changed files before it is passed to git as a literal
//! pathspec after `--`. The repository's configuration cannot make a read run a program: no
//! external diff, no textconv, no fsmonitor. Reads take no locks (`--no-optional-locks`), so
//! they never get in the way of the agent's own git commands.
//!
//! Sizes (documented in `docs/review.md`): at most [`MAX_FILES`] files are listed; a diff is cut
//! at [`MAX_DIFF_LINES`] lines or [`MAX_DIFF_BYTES`] bytes; a file over [`MAX_FILE_BYTES`] and a
//! binary file are named, not diffed.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use maestro_protocol::{ChangedFile, FileStatus, RawDiff};

/// Most files a summary lists (the totals count every file).
pub const MAX_FILES: usize = 2_000;
/// Longest diff text sent for one file.
pub const MAX_DIFF_BYTES: usize = 512 * 1024;
/// Most diff lines sent for one file.
pub const MAX_DIFF_LINES: usize = 10_000;
/// A file larger than this is named, not counted or diffed.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Longest path accepted from a request.
pub const MAX_PATH_BYTES: usize = 4096;
/// Git's empty tree: what a repository without a commit is compared with.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
/// How much of a file is looked at to tell binary from text (as git does).
const SNIFF_BYTES: usize = 8000;

/// Why a work tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0} is not a directory on this machine")]
    NoDirectory(String),
    #[error("{0} is not inside a git work tree")]
    NotARepository(String),
    #[error("git could not be started: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The path is outside the work tree, or reaches it through a symbolic link.
    #[error("path '{0}' is outside the session's work tree")]
    Outside(String),
    /// The path is inside the work tree but did not change.
    #[error("path '{0}' has no changes")]
    Unchanged(String),
}

pub type Result<T> = std::result::Result<T, GitError>;

/// What the files are compared with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Base {
    /// The checked-out branch (none when detached).
    pub branch: Option<String>,
    /// `HEAD`'s commit (none before the first commit).
    pub head: Option<String>,
    pub base_branch: Option<String>,
    pub merge_base: Option<String>,
    pub ahead: u64,
    pub behind: u64,
}

impl Base {
    /// The tree-ish the work tree's files are diffed against.
    fn compare_with(&self) -> &str {
        self.merge_base
            .as_deref()
            .or(self.head.as_deref())
            .unwrap_or(EMPTY_TREE)
    }
}

/// A work tree's changes, as [`WorkTree::changes`] reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub base: Base,
    /// Sorted by path; at most [`MAX_FILES`].
    pub files: Vec<ChangedFile>,
    pub truncated: bool,
    pub total_files: u64,
    pub additions: u64,
    pub deletions: u64,
}

/// A git work tree (a repository's main one or a linked worktree).
#[derive(Debug, Clone)]
pub struct WorkTree {
    root: PathBuf,
}

impl WorkTree {
    /// The work tree that contains `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(GitError::NoDirectory(dir.display().to_string()));
        }
        let out = git_in(dir)
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::NotARepository(dir.display().to_string()));
        }
        let top = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
        let root = std::fs::canonicalize(&top).map_err(|source| GitError::Io {
            path: top.clone(),
            source,
        })?;
        Ok(Self { root })
    }

    /// The work tree's root (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn git(&self) -> Command {
        git_in(&self.root)
    }

    /// Runs git; its stdout when it succeeds.
    fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.git().args(args).output().map_err(GitError::Spawn)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(GitError::Failed {
                command: args.first().copied().unwrap_or_default().to_owned(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(500)
                    .collect(),
            })
        }
    }

    /// Runs a git lookup; its trimmed stdout, or `None` when git says no.
    fn lookup(&self, args: &[&str]) -> Result<Option<String>> {
        let out = self.git().args(args).output().map_err(GitError::Spawn)?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty()))
    }

    /// The branch, `HEAD`, the base branch (`wanted` when it names a commit, else the
    /// repository's default branch), their merge base and how far apart they are.
    pub fn base(&self, wanted: Option<&str>) -> Result<Base> {
        let branch = self.lookup(&["symbolic-ref", "-q", "--short", "HEAD"])?;
        let head = self.lookup(&["rev-parse", "-q", "--verify", "HEAD^{commit}"])?;
        let mut base = Base {
            branch,
            head,
            ..Base::default()
        };
        let Some(head) = base.head.clone() else {
            return Ok(base);
        };
        let mut candidates: Vec<String> = wanted
            .filter(|w| is_plain_ref(w))
            .map(str::to_owned)
            .into_iter()
            .collect();
        candidates.extend(["main".to_owned(), "master".to_owned()]);
        if let Some(origin) =
            self.lookup(&["symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"])?
        {
            candidates.push(origin);
        }
        for candidate in candidates {
            let spec = format!("{candidate}^{{commit}}");
            if self
                .lookup(&["rev-parse", "-q", "--verify", "--end-of-options", &spec])?
                .is_none()
            {
                continue;
            }
            base.merge_base = self.lookup(&["merge-base", &head, &candidate])?;
            if let Some(counts) = self.lookup(&[
                "rev-list",
                "--left-right",
                "--count",
                &format!("{candidate}...{head}"),
            ])? {
                let mut it = counts.split_whitespace().map(|n| n.parse().unwrap_or(0));
                base.behind = it.next().unwrap_or(0);
                base.ahead = it.next().unwrap_or(0);
            }
            base.base_branch = Some(candidate);
            break;
        }
        Ok(base)
    }

    /// Every file that differs from the merge base: committed since, staged, unstaged and
    /// untracked (ignored files excepted).
    pub fn changes(&self, wanted_base: Option<&str>) -> Result<Snapshot> {
        let base = self.base(wanted_base)?;
        let out = self.run(&[
            "diff",
            "-z",
            "--raw",
            "--numstat",
            "-M",
            "--no-ext-diff",
            "--no-textconv",
            "--ignore-submodules=dirty",
            base.compare_with(),
            "--",
        ])?;
        let mut files = parse_raw_numstat(&out);
        let untracked = self.run(&["ls-files", "-z", "--others", "--exclude-standard"])?;
        for path in untracked.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            let path = String::from_utf8_lossy(path).into_owned();
            // A nested repository is listed as its directory: not a file to show.
            if path.ends_with('/') {
                continue;
            }
            let mut file = ChangedFile {
                path,
                old_path: None,
                status: FileStatus::Added,
                additions: 0,
                deletions: 0,
                binary: false,
                untracked: true,
                too_large: false,
            };
            // Counting lines reads the file; beyond the listed files nobody sees the count.
            if files.len() < MAX_FILES {
                match read_untracked(&self.root, &file.path)? {
                    Content::Text(text) => file.additions = count_lines(&text),
                    Content::Binary => file.binary = true,
                    Content::TooLarge => file.too_large = true,
                }
            }
            files.push(file);
        }
        for file in files.iter_mut().filter(|f| !f.untracked) {
            if file.status != FileStatus::Deleted
                && std::fs::symlink_metadata(self.root.join(&file.path))
                    .is_ok_and(|m| m.is_file() && m.len() > MAX_FILE_BYTES)
            {
                file.too_large = true;
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let total_files = files.len() as u64;
        let additions = files.iter().map(|f| f.additions).sum();
        let deletions = files.iter().map(|f| f.deletions).sum();
        let truncated = files.len() > MAX_FILES;
        files.truncate(MAX_FILES);
        Ok(Snapshot {
            base,
            files,
            truncated,
            total_files,
            additions,
            deletions,
        })
    }

    /// The changed file at `path` (checked: see [`check_path`]).
    pub fn find<'a>(&self, snapshot: &'a Snapshot, path: &str) -> Result<&'a ChangedFile> {
        check_path(&self.root, path)?;
        snapshot
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| GitError::Unchanged(path.to_owned()))
    }

    /// One changed file's diff against `base`, as git prints it from the first hunk, cut at
    /// [`MAX_DIFF_LINES`] / [`MAX_DIFF_BYTES`]; empty for a binary or too large file.
    pub fn raw_diff(&self, base: &Base, file: &ChangedFile) -> Result<RawDiff> {
        let mut raw = RawDiff {
            path: file.path.clone(),
            patch: String::new(),
            truncated: false,
        };
        if file.binary || file.too_large {
            return Ok(raw);
        }
        let text = if file.untracked {
            match read_untracked(&self.root, &file.path)? {
                Content::Text(text) => added_patch(&text),
                Content::Binary | Content::TooLarge => return Ok(raw),
            }
        } else {
            let mut cmd = self.git();
            cmd.args([
                "diff",
                "-M",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--ignore-submodules=dirty",
                base.compare_with(),
                "--",
            ]);
            if let Some(old) = &file.old_path {
                cmd.arg(old);
            }
            cmd.arg(&file.path);
            let bytes = run_limited(cmd, MAX_DIFF_BYTES + 1)?;
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let (patch, truncated) = cut(&text);
        raw.patch = patch;
        raw.truncated = truncated;
        Ok(raw)
    }
}

/// A `git` command for `dir`, hardened: no repository setting may start a program, nothing
/// prompts, nothing takes a lock, paths are literal and printed unquoted.
fn git_in(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args([
            "--no-optional-locks",
            "--literal-pathspecs",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.quotepath=false",
            "-c",
            "diff.noprefix=false",
            "-c",
            "diff.mnemonicPrefix=false",
            "-c",
            "diff.relative=false",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_EXTERNAL_DIFF")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` and keeps at most `limit` bytes of its output (a huge diff is not read to the
/// end: the process is killed).
fn run_limited(mut cmd: Command, limit: usize) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GitError::Spawn)?;
    let mut out = Vec::new();
    let stdout = child.stdout.take().expect("piped");
    let read = stdout.take(limit as u64).read_to_end(&mut out);
    let full = out.len() >= limit;
    if full {
        let _ = child.kill();
    }
    let status = child.wait().map_err(GitError::Spawn)?;
    read.map_err(GitError::Spawn)?;
    if !full && !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(GitError::Failed {
            command: "diff".into(),
            stderr: err.trim().chars().take(500).collect(),
        });
    }
    Ok(out)
}

/// Whether `name` can only be read as a ref name (never as an option or a range).
fn is_plain_ref(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.-+".contains(c))
}

/// Refuses a path that could name something outside the work tree at `root`: absolute, with
/// `..` or `.`, or through a symbolically linked directory. The file itself may be a symbolic
/// link (git tracks the link, and it is read as a link, never followed).
pub fn check_path(root: &Path, path: &str) -> Result<()> {
    let outside = || GitError::Outside(path.to_owned());
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.contains('\0') || path.contains('\\')
    {
        return Err(outside());
    }
    let rel = Path::new(path);
    let parts: Vec<Component> = rel.components().collect();
    if parts.is_empty()
        || !parts.iter().all(|c| matches!(c, Component::Normal(_)))
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(outside());
    }
    let mut dir = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Err(outside()),
            _ => {}
        }
    }
    Ok(())
}

enum Content {
    Text(String),
    Binary,
    TooLarge,
}

/// An untracked file's content: a symbolic link reads as its target (never followed), like git.
fn read_untracked(root: &Path, path: &str) -> Result<Content> {
    check_path(root, path)?;
    let full = root.join(path);
    let io = |source| GitError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::symlink_metadata(&full).map_err(io)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&full).map_err(io)?;
        return Ok(Content::Text(target.to_string_lossy().into_owned()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Ok(Content::TooLarge);
    }
    // O_NOFOLLOW: a file swapped for a link since the check above is refused, not followed.
    let fd = rustix::fs::open(
        &full,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(Content::TooLarge);
    }
    if bytes[..bytes.len().min(SNIFF_BYTES)].contains(&0) {
        return Ok(Content::Binary);
    }
    Ok(Content::Text(String::from_utf8_lossy(&bytes).into_owned()))
}

fn count_lines(text: &str) -> u64 {
    let n = text.bytes().filter(|b| *b == b'\n').count() as u64;
    if text.is_empty() || text.ends_with('\n') {
        n
    } else {
        n + 1
    }
}

/// A new file's content as one hunk of added lines.
fn added_patch(text: &str) -> String {
    let n = count_lines(text);
    if n == 0 {
        return String::new();
    }
    let mut out = String::with_capacity(text.len() + n as usize + 32);
    out.push_str(&format!("@@ -0,0 +1,{n} @@\n"));
    for line in text.lines() {
        out.push('+');
        out.push_str(line);
        out.push('\n');
    }
    if !text.ends_with('\n') {
        out.push_str("\\ No newline at end of file\n");
    }
    out
}

/// Cuts diff text at [`MAX_DIFF_LINES`] lines or [`MAX_DIFF_BYTES`] bytes, at a line's end.
fn cut(text: &str) -> (String, bool) {
    let mut end = 0;
    for (lines, line) in text.split_inclusive('\n').enumerate() {
        if lines >= MAX_DIFF_LINES || end + line.len() > MAX_DIFF_BYTES {
            return (text[..end].to_owned(), true);
        }
        end += line.len();
    }
    (text.to_owned(), false)
}

/// Parses `git diff -z --raw --numstat` output into files (unsorted).
fn parse_raw_numstat(out: &[u8]) -> Vec<ChangedFile> {
    let tokens: Vec<String> = out
        .split(|b| *b == 0)
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    let mut files: Vec<ChangedFile> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if token.is_empty() {
            i += 1;
            continue;
        }
        if let Some(raw) = token.strip_prefix(':') {
            let letter = raw
                .split_whitespace()
                .nth(4)
                .and_then(|s| s.chars().next())
                .unwrap_or('M');
            let (old_path, path, used) = if matches!(letter, 'R' | 'C') {
                (
                    tokens.get(i + 1).cloned(),
                    tokens.get(i + 2).cloned().unwrap_or_default(),
                    3,
                )
            } else {
                (None, tokens.get(i + 1).cloned().unwrap_or_default(), 2)
            };
            let status = match letter {
                'A' | 'C' => FileStatus::Added,
                'D' => FileStatus::Deleted,
                'R' => FileStatus::Renamed,
                _ => FileStatus::Modified,
            };
            index.insert(path.clone(), files.len());
            files.push(ChangedFile {
                path,
                old_path: old_path.filter(|_| letter == 'R'),
                status,
                additions: 0,
                deletions: 0,
                binary: false,
                untracked: false,
                too_large: false,
            });
            i += used;
            continue;
        }
        // numstat: `add\tdel\tpath`, or `add\tdel\t` then old and new path for a rename.
        let mut fields = token.splitn(3, '\t');
        let add = fields.next().unwrap_or_default();
        let del = fields.next().unwrap_or_default();
        let rest = fields.next().unwrap_or_default();
        let (path, used) = if rest.is_empty() {
            (tokens.get(i + 2).cloned().unwrap_or_default(), 3)
        } else {
            (rest.to_owned(), 1)
        };
        if let Some(&at) = index.get(&path) {
            let f = &mut files[at];
            if add == "-" && del == "-" {
                f.binary = true;
            } else {
                f.additions = add.parse().unwrap_or(0);
                f.deletions = del.parse().unwrap_or(0);
            }
        }
        i += used;
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_numstat_are_joined() {
        let out = b":100644 100644 1111111 0000000 M\0src/a.rs\0:000000 100644 0000000 2222222 A\0new file\0:100644 100644 3333333 4444444 R087\0old.txt\0moved.txt\0:100644 000000 5555555 0000000 D\0gone\0:100644 100644 6 7 M\0img.png\0\
3\t1\tsrc/a.rs\0\
2\t0\tnew file\0\
1\t1\t\0old.txt\0moved.txt\0\
0\t4\tgone\0\
-\t-\timg.png\0";
        let files = parse_raw_numstat(out);
        assert_eq!(files.len(), 5);
        assert_eq!(
            (files[0].status, files[0].additions, files[0].deletions),
            (FileStatus::Modified, 3, 1)
        );
        assert_eq!(files[1].path, "new file");
        assert_eq!(files[1].status, FileStatus::Added);
        assert_eq!(files[2].path, "moved.txt");
        assert_eq!(files[2].old_path.as_deref(), Some("old.txt"));
        assert_eq!(files[2].status, FileStatus::Renamed);
        assert_eq!((files[2].additions, files[2].deletions), (1, 1));
        assert_eq!(
            (files[3].status, files[3].deletions),
            (FileStatus::Deleted, 4)
        );
        assert!(files[4].binary);
    }

    #[test]
    fn paths_that_leave_the_tree_are_refused() {
        let root = Path::new("/nonexistent-root");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "./a",
            "a//b",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(
                matches!(check_path(root, bad), Err(GitError::Outside(_))),
                "{bad:?}"
            );
        }
        assert!(check_path(root, "src/main.rs").is_ok());
        assert!(check_path(root, "dir with space/ünïcode.txt").is_ok());
    }

    #[test]
    fn cutting_keeps_whole_lines() {
        let long: String = (0..MAX_DIFF_LINES + 5).map(|i| format!("+{i}\n")).collect();
        let (cut_text, truncated) = cut(&long);
        assert!(truncated);
        assert_eq!(cut_text.lines().count(), MAX_DIFF_LINES);
        assert!(cut_text.ends_with('\n'));
        let (same, truncated) = cut("+a\n+b\n");
        assert_eq!((same.as_str(), truncated), ("+a\n+b\n", false));
    }

    #[test]
    fn plain_refs_only() {
        assert!(is_plain_ref("main"));
        assert!(is_plain_ref("origin/feature-1.2"));
        for bad in [
            "",
            "-x",
            "--output=/tmp/x",
            "a..b",
            "a b",
            "a;b",
            "HEAD@{1}",
        ] {
            assert!(!is_plain_ref(bad), "{bad:?}");
        }
    }
}
