use super::*;
use sluice_crds::tls::{issue, JobCertificates};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// A certificate directory of job `job`, as the operator's Secret mounts it.
pub(crate) fn job_dir(job: &str) -> (tempfile::TempDir, TlsContext) {
    let JobCertificates { ca, cert, key } = issue(job, &[]).expect("issue");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(CA_FILE), ca).expect("write");
    std::fs::write(dir.path().join(CERT_FILE), cert).expect("write");
    std::fs::write(dir.path().join(KEY_FILE), key).expect("write");
    let context = TlsContext::from_dir(dir.path()).expect("load");
    (dir, context)
}

/// Accepts one connection with `server` on a thread and connects with `client`.
fn pair(
    server: Option<TlsContext>,
    client: Option<&TlsContext>,
) -> (
    std::io::Result<Link>,
    std::thread::JoinHandle<std::io::Result<Link>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        Link::accept(stream, server.as_ref())
    });
    let stream = TcpStream::connect(addr).expect("connect");
    (Link::connect(stream, client), accepted)
}

/// Both sides write 8 MiB at once while reading the other's, in frames of odd sizes, then
/// end their stream: each reads exactly what the other wrote, then a clean end.
fn exchange_both_ways(a: Link, b: Link) {
    fn pattern(seed: u8) -> Vec<u8> {
        (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
            .collect()
    }
    let run = |link: Link, mine: u8, theirs: u8| {
        std::thread::spawn(move || {
            let Link {
                mut reader,
                mut writer,
                closer: _closer,
            } = link;
            let sending = std::thread::spawn(move || {
                let data = pattern(mine);
                for chunk in data.chunks(70_001) {
                    writer.write_all(chunk).expect("write");
                }
                writer.shutdown_write().expect("shutdown");
            });
            let mut got = Vec::new();
            reader.read_to_end(&mut got).expect("read to a clean end");
            sending.join().expect("sender");
            assert!(
                got == pattern(theirs),
                "the bytes read differ from those written"
            );
        })
    };
    let a = run(a, 1, 2);
    let b = run(b, 2, 1);
    a.join().expect("side a");
    b.join().expect("side b");
}

#[test]
fn peers_of_one_job_exchange_both_ways_at_once_and_end_cleanly() {
    let (_dir, job) = job_dir("orders");
    let (client, server) = pair(Some(job.clone()), Some(&job));
    let client = client.expect("client handshake");
    let server = server.join().expect("thread").expect("server handshake");
    exchange_both_ways(client, server);
}

#[test]
fn without_certificates_a_link_is_plain_tcp() {
    let (client, server) = pair(None, None);
    exchange_both_ways(
        client.expect("connect"),
        server.join().expect("thread").expect("accept"),
    );
}

/// A client that trusts the CA in `trusting` and presents the certificate in `presenting`
/// (none without one): it gets as far as the server's check of its certificate.
fn client_config(trusting: &Path, presenting: Option<&Path>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(trusting.join(CA_FILE)).expect("ca"))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    match presenting {
        None => builder.with_no_client_auth(),
        Some(dir) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(dir.join(CERT_FILE)).expect("cert")],
                PrivateKeyDer::from_pem_file(dir.join(KEY_FILE)).expect("key"),
            )
            .expect("client cert"),
    }
}

/// The server's error when `client` connects to a process of job `server`.
fn refusal(server: &TlsContext, client: Option<rustls::ClientConfig>) -> std::io::Error {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = server.clone();
    let accepting = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        Link::accept(stream, Some(&server))
    });
    let mut stream = TcpStream::connect(addr).expect("connect");
    match client {
        Some(config) => {
            let mut session = rustls::ClientConnection::new(
                Arc::new(config),
                TlsContext::peer_name().expect("name"),
            )
            .expect("session");
            // The client finishes its half of the handshake; the server then checks it.
            let _ = session.complete_io(&mut stream);
            let _ = session.complete_io(&mut stream);
        }
        // Plain TCP sending what would be a data exchange header and frame.
        None => stream.write_all(b"SLX1\0\0\0\x01hello").expect("write"),
    }
    match accepting.join().expect("thread") {
        Ok(_) => panic!("the server accepted the peer"),
        Err(e) => e,
    }
}

#[test]
fn a_peer_of_another_job_or_without_a_certificate_is_refused_in_the_handshake() {
    let (orders_dir, orders) = job_dir("orders");
    let (payments_dir, _) = job_dir("payments");

    // A process of another job, even one that trusts this job's CA.
    let other_job = client_config(orders_dir.path(), Some(payments_dir.path()));
    let refused = refusal(&orders, Some(other_job));
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");

    // A TLS client without a certificate.
    let anonymous = client_config(orders_dir.path(), None);
    let refused = refusal(&orders, Some(anonymous));
    assert!(
        refused.to_string().contains("peer sent no certificates"),
        "{refused}"
    );

    // Plain TCP: what it sent is not taken for a frame.
    let refused = refusal(&orders, None);
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidData, "{refused}");

    // And a process of this job is let in by the same server.
    let (client, server) = pair(Some(orders.clone()), Some(&orders));
    client.expect("client");
    server.join().expect("thread").expect("server");
}

#[test]
fn a_missing_or_wrong_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = TlsContext::from_dir(dir.path()).expect_err("no files");
    assert!(err.to_string().contains(CA_FILE), "{err}");
    let JobCertificates { ca, cert, .. } = issue("orders", &[]).expect("issue");
    std::fs::write(dir.path().join(CA_FILE), ca).expect("write");
    std::fs::write(dir.path().join(CERT_FILE), cert).expect("write");
    std::fs::write(dir.path().join(KEY_FILE), "not a key").expect("write");
    let err = TlsContext::from_dir(dir.path()).expect_err("bad key");
    assert!(err.to_string().contains(KEY_FILE), "{err}");
}
