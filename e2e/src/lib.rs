//! Helpers for end-to-end tests against a real cluster: connect from `$KUBECONFIG`, give
//! each test a fresh namespace (deleted afterwards), wait on conditions with timeouts, and
//! print pod logs and events when a test fails.
//!
//! Without `$KUBECONFIG` every test skips with a message; `e2e/ci.sh` brings the local
//! cluster up and runs them.

pub mod jobs;
pub mod kafka;
pub mod s3;

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client, Config, ResourceExt};
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
}

pub type Result<T> = std::result::Result<T, E2eError>;

/// A client for the cluster of `$KUBECONFIG`, or `None` (after saying why) when no cluster
/// is configured, in which case the test should return early.
pub async fn cluster(test: &str) -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        // Written to stderr directly, not with eprintln!, so the test harness does not
        // capture it: a skipped test should say so in every run.
        let _ = writeln!(
            std::io::stderr(),
            "skipping {test}: no cluster configured (set KUBECONFIG, or run e2e/ci.sh)"
        );
        return None;
    }
    // Two crypto providers are linked in (kube's ring, object_store's): name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match Config::infer().await {
        Ok(c) => c,
        Err(e) => panic!("{test}: KUBECONFIG is set but unusable: {e}"),
    };
    match Client::try_from(config) {
        Ok(c) => Some(c),
        Err(e) => panic!("{test}: cannot build a client: {e}"),
    }
}

/// A namespace of its own for one test. Call [`TestNamespace::finish`] at the end; on a
/// failed wait, [`TestNamespace::diagnose`] prints what the pods said.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> Result<Self> {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // The suffix survives truncation: runs of one test never share a namespace.
        let stem: String = format!("e2e-{}", test.replace('_', "-"))
            .chars()
            // Short enough that every child's DNS name stays short too.
            .take(40)
            .collect();
        let name = format!("{}-{suffix:08x}", stem.trim_end_matches('-'));
        // Every pod of every test, the operator's and the test's own, must meet the
        // `restricted` Pod Security Standard: the API server refuses any other.
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {
                "sluice.dev/e2e": "true",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}
        }))
        .map_err(|e| E2eError::Config(e.to_string()))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        // Pods can only be created once the namespace's default service account exists.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_until(
            "default service account",
            Duration::from_secs(60),
            || async { Ok(sa.get_opt("default").await?.is_some()) },
        )
        .await?;
        Ok(TestNamespace {
            client: client.clone(),
            name,
        })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Prints every pod's status and logs and the namespace's events.
    pub async fn diagnose(&self) {
        let pods: Api<Pod> = self.api();
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for p in list {
                let name = p.name_any();
                eprintln!("--- pod {name}: {:?}", p.status.as_ref().map(|s| &s.phase));
                if let Some(statuses) = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                {
                    for c in statuses {
                        eprintln!("    container {}: {:?}", c.name, c.state);
                    }
                }
                if let Ok(logs) = pods.logs(&name, &LogParams::default()).await {
                    eprintln!("    logs:\n{logs}");
                }
                let previous = LogParams {
                    previous: true,
                    ..LogParams::default()
                };
                if let Ok(logs) = pods.logs(&name, &previous).await {
                    eprintln!("    logs of the previous container:\n{logs}");
                }
            }
        }
        let events: Api<Event> = self.api();
        if let Ok(list) = events.list(&ListParams::default()).await {
            for e in list {
                eprintln!(
                    "--- event {} {}: {}",
                    e.reason.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default(),
                    e.message.unwrap_or_default()
                );
            }
        }
    }

    /// Deletes the namespace (and everything in it), asking again after an error: a test
    /// that passed does not fail on one dropped request to the API server.
    pub async fn finish(self) -> Result<()> {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let mut attempts = 0;
        loop {
            attempts += 1;
            match namespaces
                .delete(&self.name, &DeleteParams::background())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if attempts >= 5 => return Err(e.into()),
                Err(e) => {
                    eprintln!("deleting namespace {} (attempt {attempts}): {e}", self.name);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// `GET path` over plain HTTP, with a bearer token unless it is empty: the whole answer,
/// headers and body.
pub fn http_get(ip: &str, port: u16, path: &str, token: &str) -> Result<String> {
    let fail = |e: std::io::Error| E2eError::Config(format!("GET {ip}:{port}{path}: {e}"));
    let stream = TcpStream::connect((ip, port)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    get_over(stream, ip, path, token).map_err(fail)
}

/// As [`http_get`], over HTTPS to a job's coordinator: the server must prove it holds the
/// job's certificate, issued by the CA in `ca_pem` (`ca.crt` of the job's TLS Secret) for
/// the name every job certificate carries.
pub fn https_get(ip: &str, port: u16, path: &str, token: &str, ca_pem: &[u8]) -> Result<String> {
    use rustls::pki_types::pem::PemObject;
    let fail = |e: String| E2eError::Config(format!("GET https://{ip}:{port}{path}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sluice_crds::tls::PEER_NAME)
        .map_err(|e| fail(e.to_string()))?;
    let session = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| fail(e.to_string()))?;
    let tcp = TcpStream::connect((ip, port)).map_err(|e| fail(e.to_string()))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail(e.to_string()))?;
    get_over(rustls::StreamOwned::new(session, tcp), ip, path, token)
        .map_err(|e| fail(e.to_string()))
}

/// An HTTP/1.0 GET on `stream`; the whole answer. The server closes after it.
fn get_over(
    mut stream: impl Read + Write,
    host: &str,
    path: &str,
    token: &str,
) -> std::io::Result<String> {
    let authorization = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\n{authorization}\r\n"
    )?;
    stream.flush()?;
    let mut answer = String::new();
    match stream.read_to_string(&mut answer) {
        Ok(_) => Ok(answer),
        // A TLS server may close without a close_notify once it has answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => Ok(answer),
        Err(e) => Err(e),
    }
}

/// The `kubectl` of the local cluster: `$SLUICE_KUBECTL`, or where `e2e/cluster/build.sh`
/// puts the version `e2e/cluster/versions.sh` pins.
fn kubectl() -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_KUBECTL") {
        return Ok(path.into());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let versions = std::fs::read_to_string(root.join("cluster/versions.sh"))
        .map_err(|e| E2eError::Config(format!("e2e/cluster/versions.sh: {e}")))?;
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .ok_or_else(|| E2eError::Config("no K8S_VERSION in e2e/cluster/versions.sh".into()))?;
    let cache = std::env::var_os("SLUICE_CACHE").unwrap_or_else(|| "/var/cache/sluice".into());
    Ok(std::path::Path::new(&cache).join(format!("k8s/{}/bin/kubectl", version.trim())))
}

/// `kubectl port-forward` from a free local port to `port` of `target` (`svc/name`,
/// `pod/name`) in `namespace`, as a user reaches a job's page; stopped when dropped.
pub struct PortForward {
    child: std::process::Child,
    /// The local end, on 127.0.0.1.
    pub local_port: u16,
}

impl PortForward {
    pub fn start(namespace: &str, target: &str, port: u16) -> Result<PortForward> {
        use std::io::BufRead;
        let kubectl = kubectl()?;
        let fail = |e: String| E2eError::Config(format!("kubectl port-forward {target}: {e}"));
        let child = std::process::Command::new(&kubectl)
            .args([
                "port-forward",
                "--namespace",
                namespace,
                "--address",
                "127.0.0.1",
            ])
            .arg(target)
            .arg(format!(":{port}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("{}: {e}", kubectl.display())))?;
        let mut forward = PortForward {
            child,
            local_port: 0,
        };
        // "Forwarding from 127.0.0.1:40123 -> 9249" once it listens.
        let stdout = forward
            .child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout".into()))?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines
            .next()
            .ok_or_else(|| fail("exited before forwarding".into()))?
            .map_err(|e| fail(e.to_string()))?;
        forward.local_port = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| fail(format!("unexpected first line {line:?}")))?;
        // Later lines ("Handling connection …") are drained so kubectl never blocks on them.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(forward)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns true, failing after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    wait_for(what, timeout, || {
        let fut = check();
        async move { Ok(fut.await?.then_some(())) }
    })
    .await
}

/// Polls `check` until it returns a value, failing after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(E2eError::Timeout {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pod-level settings the `restricted` Pod Security Standard asks of a test's own pods.
pub fn restricted_pod() -> serde_json::Value {
    serde_json::json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// The container-level half of [`restricted_pod`].
pub fn restricted_container() -> serde_json::Value {
    serde_json::json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
    })
}

/// Runs a pod of one container (meeting the `restricted` standard) to its end, and deletes
/// it: whether it succeeded, and its logs.
pub async fn run_pod(
    pods: &Api<Pod>,
    name: &str,
    image: &str,
    args: &[&str],
) -> Result<(bool, String)> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": restricted_pod(),
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never", "args": args,
                "securityContext": restricted_container(),
            }]
        }
    }))
    .map_err(|e| E2eError::Config(e.to_string()))?;
    pods.create(&PostParams::default(), &pod).await?;
    let phase = wait_for(
        &format!("pod {name} to finish"),
        Duration::from_secs(120),
        || async {
            let phase = pods
                .get_opt(name)
                .await?
                .and_then(|p| p.status.and_then(|s| s.phase));
            Ok(phase.filter(|p| p == "Succeeded" || p == "Failed"))
        },
    )
    .await?;
    let logs = pods.logs(name, &LogParams::default()).await?;
    pods.delete(name, &DeleteParams::background()).await?;
    Ok((phase == "Succeeded", logs))
}

/// The sluice image built by `e2e/cluster/images.sh sluice`.
pub const SLUICE_IMAGE: &str = "sluice.local/sluice:dev";
/// The test-helper image built by `e2e/cluster/images.sh e2e`.
pub const ECHO_IMAGE: &str = "sluice.local/e2e-echo:dev";

/// A test against the cluster in a namespace of its own: skipped without a cluster, the
/// namespace diagnosed on failure and deleted after success.
#[macro_export]
macro_rules! e2e_test {
    ($name:ident, |$ns:ident| $body:block) => {
        #[tokio::test]
        async fn $name() {
            let Some(client) = $crate::cluster(stringify!($name)).await else {
                return;
            };
            let $ns = $crate::TestNamespace::create(&client, stringify!($name))
                .await
                .expect("namespace");
            let result: $crate::Result<()> = async { $body }.await;
            if let Err(e) = &result {
                $ns.diagnose().await;
                panic!("{}: {e}", stringify!($name));
            }
            $ns.finish().await.expect("namespace deleted");
        }
    };
}
