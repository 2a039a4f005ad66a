//! An S3 server on the node for jobs on the cluster: SeaweedFS (`weed`, built by
//! `e2e/s3/build.sh`, found through `$SLUICE_WEED`) listening on every address, so that
//! pods reach it at the node's address while the test uses the loopback one.

use crate::{E2eError, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "sluice";
const ACCESS_KEY: &str = "sluice-e2e";
const SECRET_KEY: &str = "sluice-e2e-secret";
const REGION: &str = "us-east-1";

/// The server, stopped (and its data removed) when dropped.
pub struct NodeS3 {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// weed's gRPC ports: it also serves each on a Unix socket in /tmp named after it.
    grpc_ports: Vec<(&'static str, u16)>,
    store: AmazonS3,
}

fn config_error(what: &str) -> impl Fn(std::io::Error) -> E2eError + '_ {
    move |e| E2eError::Config(format!("{what}: {e}"))
}

impl NodeS3 {
    /// Starts a server with bucket [`BUCKET`], its data in a directory named after `test`.
    pub async fn start(test: &str) -> Result<NodeS3> {
        let weed = std::env::var_os("SLUICE_WEED").ok_or_else(|| {
            E2eError::Config(
                "SLUICE_WEED is not set: build the S3 server with `bash e2e/s3/build.sh` and \
                 set it to the path that prints"
                    .into(),
            )
        })?;
        let dir = std::env::temp_dir().join(format!("sluice-e2e-s3-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(config_error("the S3 data dir"))?;
        // Held together so that the ports differ; weed binds them right after.
        let listeners: Vec<TcpListener> = (0..8)
            .map(|_| TcpListener::bind("0.0.0.0:0"))
            .collect::<std::io::Result<_>>()
            .map_err(config_error("free ports"))?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<_>>()
            .map_err(config_error("free ports"))?;
        drop(listeners);
        let log = std::fs::File::create(dir.join("weed.log")).map_err(config_error("weed.log"))?;
        let err_log = log.try_clone().map_err(config_error("weed.log"))?;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("s3/server.sh");
        // Every address: pods reach the S3 port at the node's.
        let child = Command::new("bash")
            .arg(script)
            .arg(&weed)
            .arg(&dir)
            .args(["0.0.0.0", ACCESS_KEY, SECRET_KEY])
            .args(ports.iter().map(u16::to_string))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(config_error("starting weed"))?;
        let store = AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", ports[6]))
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| E2eError::Config(format!("an S3 client: {e}")))?;
        let mut server = NodeS3 {
            child,
            dir,
            port: ports[6],
            grpc_ports: vec![
                ("master", ports[1]),
                ("volume", ports[3]),
                ("filer", ports[5]),
                ("s3", ports[7]),
            ],
            store,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits until an upload succeeds (it creates the bucket: the identity is an admin).
    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let marker = ObjectPath::from(".ready");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(E2eError::Config(format!(
                    "weed exited ({status}): see {}",
                    self.dir.join("weed.log").display()
                )));
            }
            let put = self
                .store
                .put(&marker, PutPayload::from_static(b"ready"))
                .await;
            match put {
                Ok(_) => break,
                Err(e) if started.elapsed() > Duration::from_secs(120) => {
                    return Err(E2eError::Config(format!("S3 not ready after 120 s: {e}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let _ = self.store.delete(&marker).await;
        Ok(())
    }

    /// The environment a pod reaches the server with, at the node's address.
    pub fn pod_env(&self) -> BTreeMap<String, String> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://{}:{}", crate::kafka::node_address(), self.port),
            ),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Every object under `prefix` with its content, by key.
    pub async fn objects(&self, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        self.objects_where(prefix, |_| true).await
    }

    /// The objects under `prefix` whose keys `keep` accepts, with their content, by key.
    /// Those it refuses are not read: a running job may delete them between the listing
    /// and the read (a sink's pending parts, once committed).
    pub async fn objects_where(
        &self,
        prefix: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let fail = |e: object_store::Error| E2eError::Config(format!("S3 {prefix}: {e}"));
        let path = ObjectPath::from(prefix);
        let listed: Vec<_> = futures::TryStreamExt::try_collect(self.store.list(Some(&path)))
            .await
            .map_err(fail)?;
        let mut objects = BTreeMap::new();
        for meta in listed.into_iter().filter(|m| keep(m.location.as_ref())) {
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(fail)?
                .bytes()
                .await
                .map_err(fail)?;
            objects.insert(meta.location.to_string(), bytes.to_vec());
        }
        Ok(objects)
    }
}

impl Drop for NodeS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        for (service, port) in &self.grpc_ports {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{service}-grpc-{port}.sock"));
        }
    }
}
