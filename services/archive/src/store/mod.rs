//! Where the archive lives: a store URL (or a plain directory path) turned into an
//! `object_store::ObjectStore` and the key prefix files go under.
//!
//! Schemes: `file://` (or a plain path), `s3://bucket/prefix` (AWS and S3-compatible servers:
//! endpoint from `AWS_ENDPOINT_URL`, plain HTTP only with `AWS_ALLOW_HTTP=true`, credentials
//! and region from the usual `AWS_*` variables, path-style addressing unless virtual-hosted
//! style is asked for), `gs://bucket/prefix` (`GOOGLE_*` variables), `az://container/prefix`
//! (`AZURE_*` variables) and `memory://` (a process-local store for tests and trials).
//!
//! Every write is a whole object: a file is either complete or absent. Small files are one
//! `PUT`; files from [`MULTIPART_THRESHOLD`] up go as a multipart upload, which the store
//! makes visible only when it completes (a failed one is aborted). Local writes are fsynced
//! (file and directory) and land by rename from a hidden staging file
//! (`.<name>.<pid>-<attempt>.partial`)
//! that readers skip even when a crash leaves it; [`ArchiveStore::remove_local_staging`]
//! deletes those at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload,
    RetryConfig, WriteMultipart,
};
use url::Url;

mod local;
use local::{create_dirs_durably, is_staging_name, local_path, write_local};

/// Schemes `object_store` knows: a URL with one of these that fails to parse is malformed,
/// any other scheme is unsupported.
const KNOWN_SCHEMES: [&str; 10] = [
    "file", "memory", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss",
];

/// Files this large or larger go up as a multipart upload.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// The part size of a multipart upload (S3 needs at least 5 MiB for all but the last part).
const MULTIPART_CHUNK: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
const MULTIPART_CONCURRENCY: usize = 4;

/// Why the store cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {url}: the scheme {scheme}:// is not supported (use file://, s3://, gs://, az://, memory:// or a plain path)"
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
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("writing {path}: no answer within {secs} s")]
    Timeout { path: String, secs: u64 },
}

/// How a cloud store is reached, beyond what its URL and the environment say.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// S3 only: `https://bucket.host/key` instead of `https://host/bucket/key`. Off by default,
    /// which S3-compatible servers need; `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true` also turns it on.
    pub s3_virtual_hosted_style: bool,
    /// `object_store` configuration keys for the URL's scheme (`aws_endpoint`,
    /// `aws_allow_http`, `aws_region`, `google_service_account`, ...), applied over the
    /// environment. An unknown key is an error.
    pub config: Vec<(String, String)>,
}

/// An opened store and the prefix under which the layout starts.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    store: Arc<dyn ObjectStore>,
    base: Path,
    /// The configured location, for logs and `/health` (no credentials: those come from the
    /// environment, never from the URL).
    location: String,
    /// The directory behind a local store, for the staging-file sweep.
    local_root: Option<PathBuf>,
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

    /// Writes one complete object: a single `PUT` below [`MULTIPART_THRESHOLD`], a multipart
    /// upload from there (aborted on failure). When this returns `Ok` the object is complete
    /// and durable as far as the store promises (fsynced on the local filesystem); a failed
    /// write leaves nothing visible under `path`.
    ///
    /// # Errors
    /// When the store refuses or fails the write.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StoreError> {
        let write_err = |source| StoreError::Write {
            path: path.to_string(),
            source,
        };
        if let Some(root) = &self.local_root {
            let (root, target) = (root.clone(), local_path(root, path));
            return tokio::task::spawn_blocking(move || write_local(&root, &target, &bytes))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|e| {
                    write_err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })
                });
        }
        if bytes.len() < MULTIPART_THRESHOLD {
            return self
                .store
                .put(path, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(write_err);
        }
        let upload = self.store.put_multipart(path).await.map_err(write_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        for chunk in bytes.chunks(MULTIPART_CHUNK) {
            if let Err(source) = writer.wait_for_capacity(MULTIPART_CONCURRENCY).await {
                // The upload is unusable now; abort it so no parts linger (best effort).
                let _ = writer.abort().await;
                return Err(write_err(source));
            }
            writer.write(chunk);
        }
        metrics::counter!("spreadagg_archive_multipart_uploads_total").increment(1);
        writer.finish().await.map(|_| ()).map_err(write_err)
    }

    /// Reads one whole object.
    ///
    /// # Errors
    /// When it is missing or the store fails.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StoreError> {
        let read_err = |source| StoreError::Read {
            path: path.to_string(),
            source,
        };
        let got = self.store.get(path).await.map_err(read_err)?;
        got.bytes().await.map_err(read_err)
    }

    /// Bytes `range` of one object.
    ///
    /// # Errors
    /// When it is missing, shorter, or the store fails.
    pub async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        self.store
            .get_range(path, range)
            .await
            .map_err(|source| StoreError::Read {
                path: path.to_string(),
                source,
            })
    }

    /// Every object under `prefix` (recursively), in no particular order.
    ///
    /// # Errors
    /// When the store fails to list.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, StoreError> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|source| StoreError::Read {
                path: prefix.to_string(),
                source,
            })
    }

    /// The "directories" directly under `prefix` (common prefixes up to the next `/`).
    ///
    /// # Errors
    /// When the store fails to list.
    pub async fn list_dirs(&self, prefix: &Path) -> Result<Vec<Path>, StoreError> {
        self.store
            .list_with_delimiter(Some(prefix))
            .await
            .map(|listed| listed.common_prefixes)
            .map_err(|source| StoreError::Read {
                path: prefix.to_string(),
                source,
            })
    }

    /// Deletes one object; a missing one is not an error.
    ///
    /// # Errors
    /// When the store fails the delete.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Write {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Checks that the store takes writes and serves reads: puts, reads back and deletes a
    /// small object named `_archive_probe-<pid>-<time>-<n>` under the prefix (the leading underscore keeps
    /// pyarrow and DuckDB from ever reading it as data). Run at start and, while the
    /// archiver runs, often enough that readiness follows the store's state.
    ///
    /// # Errors
    /// When the store cannot be written or read.
    pub async fn probe(&self) -> Result<(), StoreError> {
        const BODY: &[u8] = b"spreadagg archive probe\n";
        // A name of its own per probe: replicas (and the probes of one process) sharing a
        // store must never write, read or delete each other's probe.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nonce = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self.base.clone().join(format!(
            "_archive_probe-{}-{started:x}-{nonce}",
            std::process::id()
        ));
        self.put(&path, Bytes::from_static(BODY)).await?;
        let back = self.get(&path).await?;
        if back.as_ref() != BODY {
            return Err(StoreError::Read {
                path: path.to_string(),
                source: object_store::Error::Generic {
                    store: "probe",
                    source: "the probe object read back differs from what was written".into(),
                },
            });
        }
        self.delete(&path).await
    }

    /// Deletes the staging files (`<name>#<n>`) a crash mid-write leaves in a local store's
    /// directories under the prefix; returns how many. Nothing to do on other stores (their
    /// uploads are invisible until complete). Called once at start, before any write.
    ///
    /// # Errors
    /// When the directory cannot be walked or a file removed.
    pub fn remove_local_staging(&self) -> Result<usize, StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let mut start = root.clone();
        for part in self.base.parts() {
            start.push(part.as_ref());
        }
        let mut removed = 0;
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let dir_err = |source| StoreError::Directory {
                dir: dir.display().to_string(),
                source,
            };
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(dir_err(e)),
            };
            for entry in entries {
                let entry = entry.map_err(dir_err)?;
                let kind = entry.file_type().map_err(dir_err)?;
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if is_staging_name(&entry.file_name().to_string_lossy()) {
                    std::fs::remove_file(entry.path()).map_err(dir_err)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Retries inside one request stay short: the archiver's own loop retries a failed write
/// (with the same name and bytes) for as long as it takes, and reports the store as failing
/// meanwhile, which a long silent retry inside the client would hide.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
    }
}

/// Whether `location` names a local directory (a plain path or `file://`).
pub fn is_local(location: &str) -> bool {
    !location.contains("://") || location.starts_with("file://")
}

/// Opens `location` (a store URL or a plain directory path, relative paths taken from the
/// working directory; a local directory is created when missing) with key prefix `prefix`
/// after the URL's own path. Builds the client only; [`ArchiveStore::probe`] checks it.
///
/// # Errors
/// On an unknown scheme, a malformed URL, a cloud store's incomplete configuration, or a
/// directory that cannot be created.
pub fn open(
    location: &str,
    prefix: &str,
    options: StoreOptions,
) -> Result<ArchiveStore, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: location.to_owned(),
        reason,
    };
    if !location.contains("://") {
        no_options(location, &options)?;
        return open_local(location, std::path::Path::new(location), Path::from(prefix));
    }
    let url = Url::parse(location).map_err(|e| invalid(e.to_string()))?;
    let unsupported = || StoreError::Unsupported {
        url: location.to_owned(),
        scheme: url.scheme().to_owned(),
    };
    let (scheme, url_path) = ObjectStoreScheme::parse(&url).map_err(|e| {
        if KNOWN_SCHEMES.contains(&url.scheme()) {
            invalid(e.to_string())
        } else {
            unsupported()
        }
    })?;
    if matches!(
        scheme,
        ObjectStoreScheme::AmazonS3
            | ObjectStoreScheme::GoogleCloudStorage
            | ObjectStoreScheme::MicrosoftAzure
    ) {
        // The HTTP client's TLS needs a process-wide crypto provider; the binary installs
        // ring at start, and a library caller that did not gets the same rather than a panic.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let base = join(
        &Path::parse(url_path).map_err(|e| invalid(e.to_string()))?,
        &Path::from(prefix),
    );
    let opened = |store: Result<Arc<dyn ObjectStore>, object_store::Error>| {
        store
            .map(|store| ArchiveStore {
                store,
                base: base.clone(),
                location: redacted(&url),
                local_root: None,
            })
            .map_err(|source| StoreError::Open {
                url: redacted(&url),
                source,
            })
    };
    match scheme {
        ObjectStoreScheme::Local => {
            no_options(location, &options)?;
            let dir = url
                .to_file_path()
                .map_err(|()| invalid("a file URL needs an absolute path".into()))?;
            open_local(location, &dir, Path::from(prefix))
        }
        ObjectStoreScheme::Memory => {
            no_options(location, &options)?;
            opened(Ok(Arc::new(InMemory::new())))
        }
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retry());
            for (key, value) in &options.config {
                builder = builder.with_config(key_of(location, key)?, value);
            }
            if options.s3_virtual_hosted_style {
                builder = builder.with_virtual_hosted_style_request(true);
            }
            opened(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry());
            for (key, value) in &options.config {
                builder = builder.with_config(key_of(location, key)?, value);
            }
            opened(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry());
            for (key, value) in &options.config {
                builder = builder.with_config(key_of(location, key)?, value);
            }
            opened(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))
        }
        _ => Err(unsupported()),
    }
}

/// One `object_store` configuration key for the scheme's builder, or an error naming it.
fn key_of<K: std::str::FromStr>(location: &str, key: &str) -> Result<K, StoreError> {
    key.parse().map_err(|_| StoreError::InvalidUrl {
        url: location.to_owned(),
        reason: format!("store_options: {key:?} is not a configuration key of this store"),
    })
}

fn no_options(location: &str, options: &StoreOptions) -> Result<(), StoreError> {
    match options.config.first() {
        None => Ok(()),
        Some((key, _)) => Err(StoreError::InvalidUrl {
            url: location.to_owned(),
            reason: format!("store_options ({key:?}) apply to s3://, gs:// and az:// stores only"),
        }),
    }
}

/// `a/b` joined with `c/d`, either side possibly empty.
fn join(first: &Path, second: &Path) -> Path {
    second
        .parts()
        .fold(first.clone(), |path, part| path.join(part.as_ref()))
}

/// The URL without user info, query or fragment: safe for logs.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
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
    create_dirs_durably(&dir, &dir).map_err(dir_err)?;
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
        local_root: Some(dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path, prefix: &str) -> ArchiveStore {
        open(dir.to_str().expect("utf8"), prefix, StoreOptions::default()).expect("opens")
    }

    #[test]
    fn unknown_schemes_and_bad_urls_are_refused_clearly() {
        let err = open("gopher://x/y", "", StoreOptions::default()).expect_err("unknown");
        assert!(matches!(err, StoreError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("s3://"), "{err}");
        let err = open("s3://", "", StoreOptions::default()).expect_err("no bucket");
        assert!(
            matches!(err, StoreError::InvalidUrl { .. } | StoreError::Open { .. }),
            "{err}"
        );
    }

    #[test]
    fn cloud_urls_keep_their_path_as_the_prefix_and_hide_secrets() {
        // Building a client needs no network: the probe is what checks the store.
        let store = open(
            "s3://user:secret@bucket/archive/v1?x=1",
            "more",
            StoreOptions::default(),
        )
        .expect("builds");
        assert_eq!(store.base().as_ref(), "archive/v1/more");
        assert!(!store.location().contains("secret"), "{}", store.location());
        let memory = open("memory://", "p", StoreOptions::default()).expect("memory");
        assert_eq!(memory.base().as_ref(), "p");
    }

    #[test]
    fn plain_paths_are_created_and_made_absolute() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        let store = local(&dir, "pre/fix/");
        assert!(dir.is_dir());
        assert_eq!(store.base().as_ref(), "pre/fix");
        assert!(std::path::Path::new(store.location()).is_absolute());
    }

    #[test]
    fn file_urls_open_the_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = Url::from_directory_path(tmp.path().join("via-url")).expect("url");
        let store = open(url.as_str(), "", StoreOptions::default()).expect("opens");
        assert!(tmp.path().join("via-url").is_dir());
        assert_eq!(store.base().as_ref(), "");
    }

    #[tokio::test]
    async fn writes_land_complete_under_the_prefix_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = local(tmp.path(), "p");
        store.probe().await.expect("writable");
        assert_eq!(
            std::fs::read_dir(tmp.path().join("p"))
                .expect("dir")
                .count(),
            0,
            "the probe leaves nothing behind"
        );
        let path = store.base().clone().join("ticks").join("x.parquet");
        store
            .put(&path, Bytes::from_static(b"abc"))
            .await
            .expect("put");
        assert_eq!(
            std::fs::read(tmp.path().join("p/ticks/x.parquet")).expect("file"),
            b"abc"
        );
        assert_eq!(store.get(&path).await.expect("get").as_ref(), b"abc");
        let listed = store.list(store.base()).await.expect("list");
        assert_eq!(listed.len(), 1);
        store.delete(&path).await.expect("delete");
        store
            .delete(&path)
            .await
            .expect("a missing object is not an error");
    }

    #[tokio::test]
    async fn large_files_go_up_in_parts_and_arrive_whole() {
        let store = open("memory://", "", StoreOptions::default()).expect("memory");
        let big: Vec<u8> = (0..MULTIPART_THRESHOLD + 3 * MULTIPART_CHUNK / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        let path = Path::from("big.bin");
        store
            .put(&path, Bytes::from(big.clone()))
            .await
            .expect("multipart put");
        assert_eq!(store.get(&path).await.expect("get").as_ref(), &big[..]);
    }

    #[test]
    fn crash_leftover_staging_files_are_swept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = local(tmp.path(), "p");
        let dir = tmp
            .path()
            .join("p/ticks/exchange=okx/date=2025-01-02/hour=07");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("ticks-1-2.parquet#3"), b"half").expect("staging");
        std::fs::write(dir.join(".ticks-3-4.parquet.partial"), b"half").expect("staging");
        std::fs::write(dir.join("ticks-1-2.parquet"), b"whole").expect("file");
        std::fs::write(tmp.path().join("outside#1"), b"not ours").expect("outside");
        assert_eq!(store.remove_local_staging().expect("sweep"), 2);
        assert!(!dir.join("ticks-1-2.parquet#3").exists());
        assert!(dir.join("ticks-1-2.parquet").exists());
        assert!(tmp.path().join("outside#1").exists(), "outside the prefix");
        assert!(is_staging_name("a.parquet#12"));
        assert!(!is_staging_name("a.parquet") && !is_staging_name("#1") && !is_staging_name("a#"));
    }
}
