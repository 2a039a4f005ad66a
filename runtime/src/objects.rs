//! Object storage named by a URI — a local directory (`file:///absolute/path`) or an S3
//! bucket and prefix (`s3://bucket/prefix`) — for checkpoint storage and for the sinks that
//! write files, and the one runtime their blocking calls run on.
//!
//! S3 is configured from the standard environment: `AWS_ENDPOINT_URL` (for S3-compatible
//! servers), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`,
//! and `AWS_MAX_ATTEMPTS` for the attempts per request.

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, RetryConfig};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

pub const FILE: &str = "file://";
pub const S3: &str = "s3://";

/// The store a URI names, rooted at its path or prefix. A local directory is created if
/// missing. The error is a message to be reported with the URI.
pub fn open(uri: &str) -> Result<Arc<dyn ObjectStore>, String> {
    if let Some(root) = uri.strip_prefix(FILE) {
        if !root.starts_with('/') {
            return Err("the path must be absolute (file:///…)".into());
        }
        std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
        // Deleting the last object of a directory removes the directory too, as a prefix
        // disappears in S3.
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| e.to_string())?
            .with_automatic_cleanup(true);
        Ok(Arc::new(store))
    } else if let Some(rest) = uri.strip_prefix(S3) {
        s3_store(rest)
    } else {
        Err("unsupported storage (file:///absolute/path or s3://bucket/prefix)".into())
    }
}

/// The store of `uri`, opened once per process: committing a sink's files after a
/// checkpoint needs the store the writer used, which a commit names only by URI.
pub fn shared(uri: &str) -> Result<Arc<dyn ObjectStore>, String> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(store) = stores.get(uri) {
        return Ok(store.clone());
    }
    let store = open(uri)?;
    stores.insert(uri.to_string(), store.clone());
    Ok(store)
}

/// The runtime the sinks' object-store calls run on: one worker thread, so that the parts
/// of a multipart upload go out in the background while a task goes on encoding.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-objects")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the object-storage runtime: {e}"))?;
    // Another thread may have won the race; its runtime is kept and this one dropped.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs `future` on [`runtime`], blocking the calling thread.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, String> {
    Ok(runtime()?.block_on(future))
}

/// An S3 store for `bucket/prefix` (`rest`, the URI after `s3://`), configured from the
/// environment.
fn s3_store(rest: &str) -> Result<Arc<dyn ObjectStore>, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("no bucket (s3://bucket/prefix)".into());
    }
    // S3's bucket naming rules, checked here so a typo is not reported as a network error.
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "'{bucket}' is not a valid bucket name (3 to 63 lowercase letters, digits, '.' or '-')"
        ));
    }
    let prefix = Path::parse(prefix.trim_end_matches('/'))
        .map_err(|e| format!("bad prefix '{prefix}': {e}"))?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    // The AWS SDKs' setting for attempts per request (the first included).
    if let Ok(attempts) = std::env::var("AWS_MAX_ATTEMPTS") {
        let attempts: usize = attempts
            .trim()
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("AWS_MAX_ATTEMPTS={attempts} is not a number from 1 up"))?;
        builder = builder.with_retry(RetryConfig {
            max_retries: attempts - 1,
            ..RetryConfig::default()
        });
    }
    let s3 = builder.build().map_err(|e| e.to_string())?;
    Ok(if prefix.as_ref().is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix))
    })
}
