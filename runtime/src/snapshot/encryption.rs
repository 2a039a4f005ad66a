//! Snapshots encrypted at rest: every state file of a checkpoint or savepoint is sealed with
//! AES-256-GCM under the process's snapshot key before it leaves the process.
//!
//! The key is 32 random bytes, given base64-encoded in `SLUICE_SNAPSHOT_KEY`, with a name in
//! `SLUICE_SNAPSHOT_KEY_ID` (on Kubernetes: `spec.checkpointing.encryption`, the key from a
//! Secret). A sealed file is a fresh 96-bit nonce, then the ciphertext and its tag; the file's
//! name is the associated data, so a file cannot be passed off as another. The manifest lists
//! the key id of each file: a snapshot written under one key is read with that key, and one
//! written without encryption stays readable after encryption is turned on. The manifests
//! themselves (source positions, file lists, sink transactions) are not encrypted: they hold
//! no record or state value.
//!
//! The key is read from the environment (like object storage's credentials) when the first
//! storage is opened, so every process of a job — coordinator, workers, the pre-flight check,
//! `sluice savepoint` tools — needs only its environment, not a flag passed through.

use super::storage::SnapshotError;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use std::sync::{Arc, OnceLock};

/// The environment variable holding the key, base64 of 32 bytes.
pub const KEY_VAR: &str = sluice_crds::SnapshotEncryption::KEY_ENV;
/// The environment variable naming the key.
pub const KEY_ID_VAR: &str = sluice_crds::SnapshotEncryption::KEY_ID_ENV;

/// A named AES-256-GCM key.
pub struct SnapshotKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("SnapshotKey").field("id", &self.id).finish()
    }
}

impl SnapshotKey {
    /// A key named `id` from its base64 text.
    pub fn from_base64(id: &str, text: &str) -> Result<SnapshotKey, SnapshotError> {
        let bad = |message: String| SnapshotError::Key {
            id: id.to_string(),
            message,
        };
        if id.is_empty() {
            return Err(bad(format!("{KEY_ID_VAR} is empty")));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| bad(format!("{KEY_VAR} is not base64: {e}")))?;
        if bytes.len() != 32 {
            return Err(bad(format!(
                "{KEY_VAR} holds {} bytes; an AES-256 key is 32 (e.g. `head -c 32 /dev/urandom | base64`)",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| bad("not an AES-256 key".to_string()))?;
        Ok(SnapshotKey {
            id: id.to_string(),
            key: LessSafeKey::new(key),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `nonce || ciphertext || tag` of `plain`, bound to `name`.
    pub(crate) fn seal(&self, name: &str, mut plain: Vec<u8>) -> Result<Vec<u8>, SnapshotError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| self.error(name, "no random nonce from the system"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut plain,
            )
            .map_err(|_| self.error(name, "cannot encrypt"))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plain.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&plain);
        Ok(sealed)
    }

    /// The plain text of a file [`Self::seal`] wrote as `name`.
    pub(crate) fn open(&self, name: &str, mut sealed: Vec<u8>) -> Result<Vec<u8>, SnapshotError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(self.error(name, "too short to be an encrypted file"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let plain_len = self
            .key
            .open_within(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
                NONCE_LEN..,
            )
            .map_err(|_| {
                self.error(
                    name,
                    "does not decrypt: the key is not the one it was written with, or the \
                     file was altered",
                )
            })?
            .len();
        sealed.truncate(plain_len);
        Ok(sealed)
    }

    fn error(&self, name: &str, message: &str) -> SnapshotError {
        SnapshotError::Key {
            id: self.id.clone(),
            message: format!("{name}: {message}"),
        }
    }
}

/// The process's key, or the key id and why it cannot be used.
type ProcessKey = Result<Option<Arc<SnapshotKey>>, (String, String)>;

/// The process's snapshot key from the environment, read once: none when neither variable
/// is set; an error (every time asked) when one is set without the other or the key is bad.
pub(crate) fn process_key() -> Result<Option<Arc<SnapshotKey>>, SnapshotError> {
    static KEY: OnceLock<ProcessKey> = OnceLock::new();
    let read = || {
        let id = std::env::var(KEY_ID_VAR).ok();
        let key = std::env::var(KEY_VAR).ok();
        match (id, key) {
            (None, None) => Ok(None),
            (Some(id), None) => Err((id, format!("{KEY_ID_VAR} is set but {KEY_VAR} is not"))),
            (None, Some(_)) => Err((
                String::new(),
                format!("{KEY_VAR} is set but {KEY_ID_VAR} does not name it"),
            )),
            (Some(id), Some(key)) => SnapshotKey::from_base64(&id, &key)
                .map(|k| Some(Arc::new(k)))
                .map_err(|e| (id, e.to_string())),
        }
    };
    KEY.get_or_init(read)
        .clone()
        .map_err(|(id, message)| SnapshotError::Key { id, message })
}

/// Checks that the process has the key `id` the job's manifest names.
pub fn require_key(id: &str) -> Result<(), SnapshotError> {
    match process_key()? {
        Some(key) if key.id() == id => Ok(()),
        Some(key) => Err(SnapshotError::Key {
            id: id.to_string(),
            message: format!("the job names this key but {KEY_ID_VAR} is '{}'", key.id()),
        }),
        None => Err(SnapshotError::Key {
            id: id.to_string(),
            message: format!("the job names this key but {KEY_ID_VAR} and {KEY_VAR} are not set"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "HwAeAB0AHAAbABoAGQAYABcAFgAVABQAEwASABEAEAA=";

    #[test]
    fn a_sealed_file_opens_only_with_its_key_and_name() {
        let a = SnapshotKey::from_base64("a", KEY_A).unwrap();
        let sealed = a.seal("op1.state", b"state bytes".to_vec()).unwrap();
        assert!(
            !sealed.windows(5).any(|w| w == b"state"),
            "plain text in the file"
        );
        assert_eq!(a.open("op1.state", sealed.clone()).unwrap(), b"state bytes");
        let wrong = SnapshotKey::from_base64("a", KEY_B).unwrap();
        let err = wrong
            .open("op1.state", sealed.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key 'a'") && err.contains("does not decrypt"),
            "{err}"
        );
        let err = a.open("op2.state", sealed.clone()).unwrap_err().to_string();
        assert!(err.contains("op2.state: does not decrypt"), "{err}");
        let mut altered = sealed;
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(a.open("op1.state", altered).is_err());
    }

    #[test]
    fn bad_keys_are_named() {
        let err = SnapshotKey::from_base64("k", "c2hvcnQ=")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key 'k'") && err.contains("holds 5 bytes"),
            "{err}"
        );
        let err = SnapshotKey::from_base64("k", "not base64!")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not base64"), "{err}");
        let err = format!("{:?}", SnapshotKey::from_base64("k", KEY_A).unwrap());
        assert!(!err.contains(KEY_A), "{err}");
    }
}
