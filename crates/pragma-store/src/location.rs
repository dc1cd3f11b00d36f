//! Where a store lives: a local folder (a path or `file://` URL) or an S3-compatible object
//! store (`s3://bucket/prefix`), through the `object_store` crate (Apache Arrow). The
//! writer and the reader use the same few operations for both: `get`, `put` (atomic: a
//! temporary file renamed locally, one PUT remotely), `size` and `list`.
//!
//! Remote settings come from the standard environment: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`)
//! for S3-compatible services such as MinIO, Ceph or R2, and `AWS_ALLOW_HTTP=true` for a
//! plain-HTTP endpoint. Each request is retried by `object_store` (backoff, 5xx and
//! timeouts), and each operation again here, up to [`ATTEMPTS`] times, so a dropped
//! connection or a throttling answer costs time, not the job; the error after the last
//! attempt names the URL, the operation and the cause.
//!
//! A remote store is read through a local cache of its shards
//! (`~/.cache/pragma/stores/<sha256>.safetensors`; `$PRAGMA_STORE_CACHE` moves it), each
//! checked against the manifest's sha256 when downloaded, then memory-mapped as local
//! shards are ([`Location::local_shards`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::error::{Error, Result};

/// Operations on a remote store are tried this many times in all.
pub const ATTEMPTS: usize = 5;

/// A store's place: a local folder or a prefix in an object store.
#[derive(Clone)]
pub enum Location {
    Local(PathBuf),
    Remote(Arc<Remote>),
}

/// A prefix in an S3-compatible object store.
pub struct Remote {
    url: String,
    store: object_store::aws::AmazonS3,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

impl Location {
    /// `s3://bucket/prefix`, `file:///abs/path`, or a plain path.
    pub fn parse(spec: &str) -> Result<Location> {
        if let Some(rest) = spec.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        let Some(rest) = spec.strip_prefix("s3://") else {
            if spec.contains("://") {
                return Err(Error::Corpus(format!(
                    "store location '{spec}': expected a path, file://PATH or s3://BUCKET/PREFIX"
                )));
            }
            return Ok(Location::Local(PathBuf::from(spec)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Corpus(format!(
                "store location '{spec}': expected s3://BUCKET/PREFIX, found no bucket"
            )));
        }
        let remote_err = |e: &dyn std::fmt::Display| Error::Remote {
            url: spec.to_string(),
            reason: e.to_string(),
        };
        let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
        let has_creds = [
            "AWS_ACCESS_KEY_ID",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_SKIP_SIGNATURE",
            "PRAGMA_S3_INSTANCE_ROLE",
        ]
        .iter()
        .any(|v| set(v));
        if !has_creds {
            return Err(remote_err(
                &"no AWS credentials in the environment: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                  (and AWS_ENDPOINT for an S3-compatible service such as MinIO); on EC2 with an instance \
                  role, set PRAGMA_S3_INSTANCE_ROLE=1 to use the instance metadata service",
            ));
        }
        let endpoint = std::env::var("AWS_ENDPOINT")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .unwrap_or_default();
        let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1");
        if endpoint.starts_with("http://") && !allow_http {
            return Err(remote_err(&format!(
                "endpoint {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true to allow it"
            )));
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(120),
                ..RetryConfig::default()
            });
        if std::env::var_os("AWS_ENDPOINT").is_none() {
            if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.with_endpoint(e);
            }
        }
        if std::env::var_os("AWS_DEFAULT_REGION").is_none()
            && std::env::var_os("AWS_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        let store = b.build().map_err(|e| remote_err(&e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| remote_err(&e))?;
        Ok(Location::Remote(Arc::new(Remote {
            url: spec.trim_end_matches('/').to_string(),
            store,
            prefix: prefix.trim_matches('/').to_string(),
            rt,
        })))
    }

    /// The location as the user wrote it (a path or URL).
    pub fn url(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Remote(r) => r.url.clone(),
        }
    }

    /// The local folder, for local stores.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Remote(_) => None,
        }
    }

    /// A path-like name for messages and errors: `URL/name`.
    pub fn display_path(&self, name: &str) -> PathBuf {
        match self {
            Location::Local(p) => p.join(name),
            Location::Remote(r) => PathBuf::from(format!("{}/{name}", r.url)),
        }
    }

    /// The bytes of `name`, or `None` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Location::Local(dir) => match std::fs::read(dir.join(name)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(dir.join(name), e)),
            },
            Location::Remote(r) => r.retry("GET", name, || async {
                match r.store.get(&r.path(name)).await {
                    Ok(g) => Ok(Some(g.bytes().await?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }),
        }
    }

    /// Write `name` whole, atomically: a reader sees the old object or the new one.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Location::Local(dir) => {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                pragma_model::io::write_atomic(&path, bytes)?;
                Ok(())
            }
            Location::Remote(r) => {
                let payload = PutPayload::from(bytes.to_vec());
                r.retry("PUT", name, || async {
                    r.store
                        .put(&r.path(name), payload.clone())
                        .await
                        .map(|_| ())
                })
            }
        }
    }

    /// The size of `name` in bytes, or `None` when it does not exist.
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        match self {
            Location::Local(dir) => match std::fs::metadata(dir.join(name)) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(dir.join(name), e)),
            },
            Location::Remote(r) => r.retry("HEAD", name, || async {
                match r.store.head(&r.path(name)).await {
                    Ok(m) => Ok(Some(m.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }),
        }
    }

    /// Names (relative to the location) of the files directly under folder `dir`.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        match self {
            Location::Local(root) => {
                let d = root.join(dir);
                let mut out = Vec::new();
                let rd = match std::fs::read_dir(&d) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(Error::io(&d, e)),
                };
                for e in rd.flatten() {
                    if e.path().is_file() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        out.push(if dir.is_empty() {
                            name
                        } else {
                            format!("{dir}/{name}")
                        });
                    }
                }
                out.sort();
                Ok(out)
            }
            Location::Remote(r) => {
                let prefix = r.path(dir);
                let base = if r.prefix.is_empty() {
                    String::new()
                } else {
                    format!("{}/", r.prefix)
                };
                let mut names: Vec<String> = r.retry("LIST", dir, || async {
                    let objs: Vec<_> = r.store.list(Some(&prefix)).try_collect().await?;
                    Ok(objs.into_iter().map(|o| o.location.to_string()).collect())
                })?;
                names = names
                    .into_iter()
                    .filter_map(|n| n.strip_prefix(&base).map(str::to_string))
                    .filter(|n| {
                        let rest = if dir.is_empty() {
                            n.as_str()
                        } else {
                            n.strip_prefix(&format!("{dir}/")).unwrap_or("")
                        };
                        !rest.is_empty() && !rest.contains('/')
                    })
                    .collect();
                names.sort();
                Ok(names)
            }
        }
    }

    /// A local folder holding the store's shards, to memory-map: the store itself when it
    /// is local; for a remote store, the download cache, with every shard in `shards`
    /// (file name, sha256, bytes) fetched once and checked against its sha256. Returns the
    /// local path of each shard, in order.
    pub fn local_shards(
        &self,
        shards: &[(String, String, u64)],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<PathBuf>> {
        match self {
            Location::Local(dir) => Ok(shards.iter().map(|(f, _, _)| dir.join(f)).collect()),
            Location::Remote(_) => {
                let cache = shard_cache_dir()?;
                let mut out = Vec::with_capacity(shards.len());
                for (i, (file, sha, bytes)) in shards.iter().enumerate() {
                    progress(i, shards.len());
                    let local = cache.join(format!("{sha}.safetensors"));
                    let fresh = std::fs::metadata(&local).is_ok_and(|m| m.len() == *bytes);
                    if !fresh {
                        let data = self.get(file)?.ok_or_else(|| Error::CorruptShard {
                            file: self.display_path(file),
                            reason: "missing (listed in the manifest)".into(),
                        })?;
                        check_sha(&self.display_path(file), &data, sha, *bytes)?;
                        pragma_model::io::write_atomic(&local, &data)?;
                    }
                    out.push(local);
                }
                progress(shards.len(), shards.len());
                Ok(out)
            }
        }
    }
}

/// Check downloaded or read shard bytes against the manifest's size and sha256.
pub fn check_sha(path: &Path, data: &[u8], sha: &str, bytes: u64) -> Result<()> {
    use sha2::Digest;
    if data.len() as u64 != bytes {
        return Err(Error::CorruptShard {
            file: path.to_path_buf(),
            reason: format!("expected {bytes} bytes, found {}", data.len()),
        });
    }
    let got = format!("{:x}", sha2::Sha256::digest(data));
    if got != sha {
        return Err(Error::CorruptShard {
            file: path.to_path_buf(),
            reason: format!("sha256 {got} does not match the manifest's {sha}"),
        });
    }
    Ok(())
}

/// `$PRAGMA_STORE_CACHE`, else `$PRAGMA_CACHE/stores` or `~/.cache/pragma/stores`:
/// downloaded shards by sha256 (point it at a node's scratch disk on a cluster).
fn shard_cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("PRAGMA_STORE_CACHE") {
        let dir = PathBuf::from(d);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        return Ok(dir);
    }
    let base = std::env::var_os("PRAGMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("pragma")))
        .unwrap_or_else(|| PathBuf::from(".pragma-cache"));
    let dir = base.join("stores");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

impl Remote {
    fn path(&self, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(name)
        } else if name.is_empty() {
            ObjPath::from(self.prefix.as_str())
        } else {
            ObjPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Run `op` up to [`ATTEMPTS`] times with backoff (object_store retries each request
    /// too); the last error names the operation and the object.
    fn retry<T, F, Fut>(&self, what: &str, name: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let mut wait = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.rt.block_on(op()) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    last = e.to_string();
                    // Errors that another try cannot fix.
                    let permanent = matches!(
                        e,
                        object_store::Error::PermissionDenied { .. }
                            | object_store::Error::Unauthenticated { .. }
                            | object_store::Error::InvalidPath { .. }
                            | object_store::Error::NotSupported { .. }
                            | object_store::Error::UnknownConfigurationKey { .. }
                    ) || last.contains("builder error");
                    if permanent {
                        return Err(Error::Remote {
                            url: self.url.clone(),
                            reason: format!("{what} {name}: {last}"),
                        });
                    }
                    if attempt < ATTEMPTS {
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
        Err(Error::Remote {
            url: self.url.clone(),
            reason: format!("{what} {name} failed {ATTEMPTS} times; last error: {last}"),
        })
    }
}
