//! Local-filesystem writes, done by hand (docs/decisions.md, 39): whole files through a hidden
//! staging name readers skip, fsynced with their directories.

use std::path::PathBuf;

use object_store::path::Path;

/// Staging names a crash mid-write can leave: ours (`.<name>.partial`) and
/// `object_store`'s (`<name>#<digits>`, from archives written by earlier versions).
pub(super) fn is_staging_name(name: &str) -> bool {
    let ours = name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX);
    let object_store = name.rsplit_once('#').is_some_and(|(stem, n)| {
        !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    });
    ours || object_store
}

/// Directories known to be durable (created and their ancestors fsynced), so a write into an
/// existing partition costs no extra fsync. Forgotten when large (then re-synced once each).
static DURABLE_DIRS: std::sync::Mutex<Option<std::collections::HashSet<PathBuf>>> =
    std::sync::Mutex::new(None);
const DURABLE_DIRS_MAX: usize = 100_000;

/// Creates `dir` and any missing parents under `root` and makes their entries durable: every
/// directory from `dir` up to `root`'s parent is fsynced, once per process, and remembered
/// only after that succeeded (a failed or interrupted attempt is redone by the next write).
/// The file's own directory is fsynced again after its rename.
pub(super) fn create_dirs_durably(
    root: &std::path::Path,
    dir: &std::path::Path,
) -> std::io::Result<()> {
    let known = |d: &std::path::Path| {
        DURABLE_DIRS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|set| set.contains(d))
    };
    if known(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let stop = root.parent().unwrap_or(root);
    let mut at = Some(dir);
    while let Some(d) = at {
        std::fs::File::open(d)?.sync_all()?;
        if d == stop || !d.starts_with(stop) {
            break;
        }
        at = d.parent();
    }
    let mut guard = DURABLE_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let set = guard.get_or_insert_with(Default::default);
    if set.len() >= DURABLE_DIRS_MAX {
        set.clear();
    }
    set.insert(dir.to_path_buf());
    Ok(())
}

/// The suffix of a local file being written.
const PARTIAL_SUFFIX: &str = ".partial";

/// Where `path` lives under a local store's root directory.
pub(super) fn local_path(root: &std::path::Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for part in path.parts() {
        out.push(part.as_ref());
    }
    out
}

/// Writes `bytes` to `target` whole or not at all: into a hidden staging file beside it
/// (`.<name>.<pid>-<attempt>.partial`: a leading dot, so pyarrow and DuckDB never read it even if a crash
/// leaves it), fsynced, renamed into place, and the directory fsynced. Written here rather
/// than through `object_store`'s local store, whose staging name (`<name>#<n>`) a pyarrow
/// directory read takes for data.
pub(super) fn write_local(
    root: &std::path::Path,
    target: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("a file needs a directory"))?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("a file needs a UTF-8 name"))?;
    create_dirs_durably(root, dir)?;
    // A name of its own per attempt: a timed-out attempt still running on its thread must
    // never share (and truncate, or rename away) a retry's staging file.
    static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let attempt = ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = dir.join(format!(
        ".{name}.{}-{attempt}{PARTIAL_SUFFIX}",
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&staging)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&staging, target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result
}
