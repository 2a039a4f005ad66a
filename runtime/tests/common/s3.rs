//! A real S3-compatible server for tests: SeaweedFS's `weed`, built by `e2e/s3/build.sh`,
//! started on free loopback ports with its data in a temporary directory and killed when
//! the test ends. It is found at `$SLUICE_WEED` or in the build script's cache path; when
//! it is absent the test is skipped, unless `SLUICE_REQUIRE_S3=1` (CI) makes that a failure.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "sluice-test";
pub const SECRET_KEY: &str = "sluice-test-secret";
const REGION: &str = "us-east-1";
/// The bucket every server starts with.
pub const BUCKET: &str = "sluice";

/// The `weed` binary: `$SLUICE_WEED`, or where `e2e/s3/build.sh` puts it; else why not.
fn weed() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SLUICE_WEED") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!("SLUICE_WEED={} is not a file", path.display()));
        }
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/s3/build.sh");
    let text = std::fs::read_to_string(script).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("SEAWEEDFS_VERSION="))
        .expect("SEAWEEDFS_VERSION in e2e/s3/build.sh")
        .trim();
    let cache = std::env::var_os("SLUICE_CACHE").unwrap_or_else(|| "/var/cache/sluice".into());
    let path = Path::new(&cache).join(format!("seaweedfs/{version}/weed"));
    if !path.is_file() {
        return Err(format!(
            "no SeaweedFS server at {}: build it with `bash e2e/s3/build.sh` or set \
             SLUICE_WEED to a `weed` binary",
            path.display()
        ));
    }
    Ok(path)
}

pub struct S3Server {
    child: Child,
    dir: tempfile::TempDir,
    /// weed's gRPC ports: it also serves each on a Unix socket in /tmp named after it.
    grpc_ports: Vec<(&'static str, u16)>,
    pub endpoint: String,
}

impl S3Server {
    /// Starts a server with bucket [`BUCKET`] for `test`; `None` (after saying why) when
    /// there is no `weed` to start and S3 is not required.
    pub fn start(test: &str) -> Option<S3Server> {
        let weed = match weed() {
            Ok(weed) => weed,
            Err(why) => return super::skip(test, &why, "SLUICE_REQUIRE_S3"),
        };
        // A port taken between choosing it and weed binding it makes weed exit: try again.
        for attempt in 1.. {
            let mut server = Self::spawn(&weed);
            match server.wait_ready(test) {
                Ok(()) => return Some(server),
                Err(why) if attempt < 3 => eprintln!("{test}: {why}; starting again"),
                Err(why) => panic!("{test}: {why}"),
            }
        }
        unreachable!()
    }

    fn spawn(weed: &Path) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        // Listeners held together so the ports differ; weed binds them right after.
        let listeners: Vec<TcpListener> = (0..8)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/s3/server.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(script)
            .arg(weed)
            .arg(dir.path())
            .args(["127.0.0.1", ACCESS_KEY, SECRET_KEY])
            .args(ports.iter().map(u16::to_string))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl only sets this process's parent-death signal, so the server dies
        // with the test even when the test process is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        S3Server {
            child,
            dir,
            grpc_ports: vec![
                ("master", ports[1]),
                ("volume", ports[3]),
                ("filer", ports[5]),
                ("s3", ports[7]),
            ],
            endpoint: format!("http://127.0.0.1:{}", ports[6]),
        }
    }

    /// Waits until an upload succeeds (it creates [`BUCKET`], as the server creates
    /// buckets on upload for admin identities); fails if weed exits first.
    fn wait_ready(&mut self, test: &str) -> Result<(), String> {
        let started = Instant::now();
        let bucket = self.bucket(BUCKET);
        let marker = ObjectPath::from(".ready");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("weed exited ({status}):\n{}", self.log_tail()));
            }
            let put = bucket
                .rt
                .block_on(bucket.store.put(&marker, PutPayload::from_static(b"ready")));
            match put {
                Ok(_) => break,
                Err(e) if started.elapsed() > Duration::from_secs(120) => panic!(
                    "{test}: S3 not ready after {:?}: {e}\n{}",
                    started.elapsed(),
                    self.log_tail()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        bucket.rt.block_on(bucket.store.delete(&marker)).unwrap();
        eprintln!(
            "{test}: S3 server at {} ready in {:.1}s",
            self.endpoint,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The environment `sluice` reads its S3 settings from.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A client for looking into `bucket` from the test.
    pub fn bucket(&self, bucket: &str) -> Bucket {
        let builder = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            });
        let store = builder.clone().build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bucket { builder, store, rt }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("weed log (last lines):\n{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed, weed leaves its sockets behind.
        for (service, port) in &self.grpc_ports {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{service}-grpc-{port}.sock"));
        }
    }
}

/// A port nothing listens on (for an unreachable endpoint).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads and lists one bucket.
pub struct Bucket {
    builder: AmazonS3Builder,
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    /// The bucket as an object store with a client of its own, for what `Bucket` does not
    /// read itself. Its own, because a pooled connection is served by a task of the runtime
    /// that opened it: a client shared with another runtime (this `Bucket`'s, or one that
    /// has ended) can pick a connection nothing serves, and its request hangs until it
    /// times out. So use each store from one runtime only.
    pub fn store(&self) -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::new(self.builder.clone().build().unwrap())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.rt
            .block_on(async { self.store.get(&ObjectPath::from(key)).await?.bytes().await })
            .ok()
            .map(|b| b.to_vec())
    }

    /// The "directories" directly under `prefix`, by their names from the bucket's root.
    pub fn dirs(&self, prefix: &str) -> BTreeSet<String> {
        let prefix = ObjectPath::from(prefix);
        let listing = self
            .rt
            .block_on(self.store.list_with_delimiter(Some(&prefix)))
            .unwrap();
        listing
            .common_prefixes
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// The objects directly under `prefix`, by their names from the bucket's root.
    pub fn objects(&self, prefix: &str) -> BTreeSet<String> {
        let prefix = ObjectPath::from(prefix);
        let listing = self
            .rt
            .block_on(self.store.list_with_delimiter(Some(&prefix)))
            .unwrap();
        listing
            .objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect()
    }
}
