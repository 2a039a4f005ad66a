//! Bearer-token authentication of the control API.

use crate::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use subtle::ConstantTimeEq;

/// The environment variable holding the token when no token file is given.
pub const TOKEN_ENV: &str = "SLUICE_CONTROL_TOKEN";

/// The API token: the content of `file` (surrounding whitespace removed, so a file ending in
/// a newline works), else `SLUICE_CONTROL_TOKEN`, else none.
pub fn read_token(file: Option<&Path>) -> Result<Option<String>, Error> {
    let (token, origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
            path.display().to_string(),
        ),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t, TOKEN_ENV.to_string()),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(e) => return Err(Error::Control(format!("{TOKEN_ENV}: {e}"))),
        },
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Control(format!("the token in {origin} is empty")));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        // It must fit an HTTP header unchanged.
        return Err(Error::Control(format!(
            "the token in {origin} has characters other than printable ASCII"
        )));
    }
    Ok(Some(token.to_string()))
}

/// Refuses to serve without a token anywhere but on loopback.
pub(super) fn check_exposure(addr: SocketAddr, token: Option<&str>) -> Result<(), Error> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(Error::Control(format!(
            "refusing to listen on {addr} without a token: give one with \
             --control-token-file or {TOKEN_ENV}, or listen on loopback only \
             (127.0.0.1 or [::1])"
        )));
    }
    Ok(())
}

/// Why a request is refused, or `None` when it may go on.
pub(super) fn refusal(expected: Option<&str>, authorization: Option<&[u8]>) -> Option<String> {
    let expected = expected?;
    let Some(header) = authorization else {
        return Some("missing 'Authorization: Bearer <token>' header".into());
    };
    let given = match header.iter().position(|&b| b == b' ') {
        Some(i) if header[..i].eq_ignore_ascii_case(b"bearer") => header[i + 1..].trim_ascii(),
        _ => return Some("the Authorization header is not 'Bearer <token>'".into()),
    };
    // Constant time in the token's content; a length mismatch returns early, which only
    // tells the token's length.
    if bool::from(given.ct_eq(expected.as_bytes())) {
        None
    } else {
        Some("wrong bearer token".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let t = Some("s3cret");
        assert_eq!(refusal(t, Some(b"Bearer s3cret")), None);
        assert_eq!(refusal(t, Some(b"bearer s3cret")), None);
        assert_eq!(
            refusal(t, Some(b"Bearer s3cre")),
            Some("wrong bearer token".into())
        );
        assert_eq!(
            refusal(t, Some(b"Bearer s3cretX")),
            Some("wrong bearer token".into())
        );
        assert_eq!(
            refusal(t, Some(b"Basic czNjcmV0")),
            Some("the Authorization header is not 'Bearer <token>'".into())
        );
        assert!(refusal(t, None).unwrap().contains("missing"));
        assert_eq!(refusal(None, None), None);
    }

    #[test]
    fn no_token_is_refused_off_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let err = check_exposure(any, None).unwrap_err().to_string();
        assert!(err.contains("without a token"), "{err}");
        assert!(err.contains("loopback"), "{err}");
        check_exposure(any, Some("t")).unwrap();
        check_exposure("127.0.0.1:0".parse().unwrap(), None).unwrap();
        check_exposure("[::1]:0".parse().unwrap(), None).unwrap();
    }

    #[test]
    fn a_token_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(read_token(Some(&path)).unwrap().as_deref(), Some("abc"));
        std::fs::write(&path, " \n").unwrap();
        let err = read_token(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
