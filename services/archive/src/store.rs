//! Where the archive lives: a store URL (or a plain directory path) turned into an
//! `object_store::ObjectStore` and the key prefix files go under.
//!
//! This build has the local filesystem only. The cloud schemes (`s3://`, `gs://`, `az://`)
//! are recognised and refused with a clear error; supporting one is a matter of enabling the
//! matching `object_store` feature and filling in its arm of [`open`], nothing else.
//!
//! Local writes are fsynced (file and directory) before `put` returns, and land by rename
//! from a staging file (`<name>#<n>`), so a file is either complete or absent: that is what
//! lets the archiver acknowledge messages as soon as their file is written.

use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};
use url::Url;

/// Why the store cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {url}: {scheme}:// is not available in this build, which archives to the local filesystem only (file:///abs/dir or a plain path)"
    )]
    Unsupported { url: String, scheme: String },
    #[error("store {url}: not a valid store URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("store directory {dir}: {source}")]
    Directory {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("writing {path}: no answer within {secs} s")]
    Timeout { path: String, secs: u64 },
}

/// An opened store and the prefix under which the layout starts.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    store: Arc<dyn ObjectStore>,
    base: Path,
    /// The configured location, for logs.
    location: String,
}

impl ArchiveStore {
    /// The key prefix every file path starts with (may be empty).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Where the store is, for logs and `/health`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes one complete object. On the local filesystem it is durable (fsynced) when this
    /// returns `Ok`; a failed write leaves no object behind.
    ///
    /// # Errors
    /// When the store refuses or fails the write.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StoreError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|source| StoreError::Write {
                path: path.to_string(),
                source,
            })
    }

    /// Checks at start that the store takes writes: puts and deletes a small object named
    /// `_archive_probe` under the prefix (the leading underscore keeps pyarrow and DuckDB
    /// from ever reading it as data).
    ///
    /// # Errors
    /// When the store cannot be written.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let path = self.base.clone().join("_archive_probe");
        self.put(&path, Bytes::from_static(b"spreadagg archive probe\n"))
            .await?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Write {
                path: path.to_string(),
                source,
            }),
        }
    }
}

/// Opens `location` (a `file://` URL or a plain directory path, relative paths taken from the
/// working directory; the directory is created when missing) with key prefix `prefix`.
///
/// # Errors
/// On a cloud or unknown scheme, a malformed URL, or a directory that cannot be created.
pub fn open(location: &str, prefix: &str) -> Result<ArchiveStore, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: location.to_owned(),
        reason,
    };
    let prefix = Path::from(prefix);
    if !location.contains("://") {
        return open_local(location, std::path::Path::new(location), prefix);
    }
    let url = Url::parse(location).map_err(|e| invalid(e.to_string()))?;
    let unsupported = || StoreError::Unsupported {
        url: location.to_owned(),
        scheme: url.scheme().to_owned(),
    };
    let (scheme, _) = ObjectStoreScheme::parse(&url).map_err(|_| unsupported())?;
    match scheme {
        ObjectStoreScheme::Local => {
            let dir = url
                .to_file_path()
                .map_err(|()| invalid("a file URL needs an absolute path".into()))?;
            open_local(location, &dir, prefix)
        }
        // A cloud store goes here: build it from the URL (and the environment's credentials)
        // with `object_store::parse_url_opts`, and join the URL's path with `prefix`.
        _ => Err(unsupported()),
    }
}

fn open_local(
    location: &str,
    dir: &std::path::Path,
    base: Path,
) -> Result<ArchiveStore, StoreError> {
    let dir_err = |source| StoreError::Directory {
        dir: dir.display().to_string(),
        source,
    };
    let dir = std::path::absolute(dir).map_err(dir_err)?;
    std::fs::create_dir_all(&dir).map_err(dir_err)?;
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|source| StoreError::Open {
            url: location.to_owned(),
            source,
        })?
        .with_fsync(true);
    Ok(ArchiveStore {
        store: Arc::new(store),
        base,
        location: dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_schemes_are_refused_clearly() {
        for url in [
            "s3://bucket/archive",
            "gs://bucket/archive",
            "az://container/archive",
        ] {
            let err = open(url, "").expect_err("no cloud stores in this build");
            let text = err.to_string();
            assert!(matches!(err, StoreError::Unsupported { .. }), "{text}");
            assert!(text.contains("local filesystem"), "{text}");
        }
        assert!(matches!(
            open("gopher://x/y", ""),
            Err(StoreError::Unsupported { .. })
        ));
    }

    #[test]
    fn plain_paths_are_created_and_made_absolute() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        let store = open(dir.to_str().expect("utf8"), "pre/fix/").expect("opens");
        assert!(dir.is_dir());
        assert_eq!(store.base().as_ref(), "pre/fix");
        assert!(std::path::Path::new(store.location()).is_absolute());
    }

    #[test]
    fn file_urls_open_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = Url::from_directory_path(tmp.path().join("via-url")).expect("url");
        let store = open(url.as_str(), "").expect("opens");
        assert!(tmp.path().join("via-url").is_dir());
        assert_eq!(store.base().as_ref(), "");
    }

    #[tokio::test]
    async fn writes_land_complete_under_the_prefix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path().to_str().expect("utf8"), "p").expect("opens");
        store.probe().await.expect("writable");
        assert!(!tmp.path().join("p/_archive_probe").exists());
        let path = store
            .base()
            .clone()
            .join("ticks")
            .join("exchange=okx")
            .join("x.parquet");
        store
            .put(&path, Bytes::from_static(b"abc"))
            .await
            .expect("put");
        let on_disk = tmp.path().join("p/ticks/exchange=okx/x.parquet");
        assert_eq!(std::fs::read(on_disk).expect("file"), b"abc");
    }
}
