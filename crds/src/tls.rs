//! The certificates of a job's processes: the contract between the operator, which issues
//! them into a Secret, and the runtime, which reads them from the Secret's mounted files.
//!
//! Each job gets a CA of its own and one certificate, signed by it, that all its pods share.
//! A pod trusts only its job's CA, so a connection from anything that is not part of the
//! job (another job's pod included) fails its TLS handshake.

/// The name every job certificate carries and every peer checks: pods are reached by
/// address, and addresses change, so the name says "a process of this job", nothing more.
pub const PEER_NAME: &str = "peer.sluice.internal";
/// The job's CA certificate.
pub const CA_FILE: &str = "ca.crt";
/// The job's certificate (the `kubernetes.io/tls` Secret layout).
pub const CERT_FILE: &str = "tls.crt";
/// Its private key.
pub const KEY_FILE: &str = "tls.key";

/// The Secret holding job `job`'s certificates.
pub fn secret_name(job: &str) -> String {
    format!("{job}-tls")
}

/// A job's certificates, PEM-encoded, as the files of its Secret hold them.
#[cfg(feature = "issue")]
#[derive(Clone, Debug)]
pub struct JobCertificates {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

#[cfg(feature = "issue")]
#[derive(Debug, thiserror::Error)]
#[error("cannot issue the certificates of job '{job}': {message}")]
pub struct IssueError {
    pub job: String,
    pub message: String,
}

/// Makes a CA for job `job` and a certificate it signs, valid for [`PEER_NAME`] and for
/// `names` (the DNS names clients reach the job's services at). The CA's key is not kept:
/// nothing else is ever signed by it.
#[cfg(feature = "issue")]
pub fn issue(job: &str, names: &[String]) -> Result<JobCertificates, IssueError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let fail = |e: rcgen::Error| IssueError {
        job: job.to_string(),
        message: e.to_string(),
    };
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("sluice job {job} CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(fail)?;
    let mut all_names = vec![PEER_NAME.to_string()];
    all_names.extend(names.iter().cloned());
    let mut leaf = CertificateParams::new(all_names).map_err(fail)?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("sluice job {job}"));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every process is both a server (it accepts) and a client (it connects).
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = leaf.signed_by(&key, &issuer).map_err(fail)?;
    Ok(JobCertificates {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}
