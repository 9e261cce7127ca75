//! `X-Hub-Signature-256`: the HMAC-SHA256 of the raw body under the webhook secret, as
//! `sha256=<hex>`. Checked in constant time; without a configured secret nothing is
//! accepted (ghprb accepted unsigned hooks then), and the SHA-1 `X-Hub-Signature` is never
//! enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a delivery is refused (all answer 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no webhook secret is configured, so no delivery can be verified")]
    NoSecret,
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("X-Hub-Signature-256 is not `sha256=` and 64 hex digits")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body: wrong secret or altered body")]
    Mismatch,
}

/// Checks a body's signature while the body arrives, chunk by chunk: the body is read
/// once, and whether it is forged is known when its last byte is.
pub struct Verifier {
    mac: Hmac<Sha256>,
    expected: [u8; 32],
}

impl Verifier {
    /// A check of the body signed `header` under `secret`; refused at once when there is
    /// no secret or the header is missing or malformed (no body needs reading then).
    pub fn new(secret: Option<&[u8]>, header: Option<&str>) -> Result<Verifier, SignatureError> {
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::NoSecret)?;
        let header = header.ok_or(SignatureError::Missing)?;
        let digits = header
            .trim()
            .strip_prefix("sha256=")
            .ok_or(SignatureError::Malformed)?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(digits, &mut expected).map_err(|_| SignatureError::Malformed)?;
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        Ok(Verifier { mac, expected })
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.mac.update(chunk);
    }

    /// Whether the body read matches the signature; compared in constant time.
    pub fn finish(self) -> Result<(), SignatureError> {
        self.mac
            .verify_slice(&self.expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// Checks the signature `header` of `body` under `secret`.
pub fn verify(
    secret: Option<&[u8]>,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let mut verifier = Verifier::new(secret, header)?;
    verifier.update(body);
    verifier.finish()
}

/// The `X-Hub-Signature-256` value of `body` under `secret` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/github-webhooks")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn github_documents_this_signature() {
        // The example of GitHub's "Validating webhook deliveries" documentation.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn only_a_correct_signature_under_a_configured_secret_passes() {
        let body = fixture("pull_request.opened.json");
        let secret = b"test-secret".as_slice();
        let good = sign(secret, &body);
        assert_eq!(verify(Some(secret), Some(&good), &body), Ok(()));
        assert_eq!(
            verify(
                Some(secret),
                Some(&good.to_uppercase().replace("SHA256=", "sha256=")),
                &body
            ),
            Ok(()),
            "hex case does not matter"
        );
        assert_eq!(
            verify(None, Some(&good), &body),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            verify(Some(b""), Some(&good), &body),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            verify(Some(secret), None, &body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(b"another-secret"), Some(&good), &body),
            Err(SignatureError::Mismatch)
        );
        let flipped = if good.ends_with('0') { "1" } else { "0" };
        let one_digit_off = format!("{}{flipped}", &good[..good.len() - 1]);
        assert_eq!(
            verify(Some(secret), Some(&one_digit_off), &body),
            Err(SignatureError::Mismatch),
            "a signature of the same length, one digit off"
        );
        let mut altered = body.clone();
        altered[10] ^= 1;
        assert_eq!(
            verify(Some(secret), Some(&good), &altered),
            Err(SignatureError::Mismatch)
        );
        for malformed in [
            "sha1=abc",
            "sha256=",
            "sha256=zz",
            &good[..70],
            &format!("{good}00"),
        ] {
            assert_eq!(
                verify(Some(secret), Some(malformed), &body),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn a_body_checked_in_chunks_verifies_as_it_does_whole() {
        let body = fixture("pull_request.opened.json");
        let header = sign(b"s3cret", &body);
        for size in [1, 7, 4096, body.len()] {
            let mut verifier = Verifier::new(Some(b"s3cret"), Some(&header)).unwrap();
            for chunk in body.chunks(size) {
                verifier.update(chunk);
            }
            assert_eq!(verifier.finish(), Ok(()));
        }
        let mut altered = Verifier::new(Some(b"s3cret"), Some(&header)).unwrap();
        altered.update(&body[1..]);
        assert_eq!(altered.finish(), Err(SignatureError::Mismatch));
        assert!(
            Verifier::new(Some(b"s3cret"), None).is_err(),
            "no body is read"
        );
        assert!(Verifier::new(None, Some(&header)).is_err());
    }
}
