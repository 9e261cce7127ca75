//! Signing in as a GitHub App: the App's JWT (RS256, from its PEM private key), the
//! installation that covers each repository or organisation, and installation tokens,
//! kept until five minutes before they expire.
//!
//! The decisions are plain functions ([`jwt_claims`], [`scope_of`], [`usable`]); the
//! calls that find an installation and fetch its token are made by the client, which
//! holds one [`Installations`] and asks it at most once at a time per key, so a burst of
//! reports shares one installation look-up and one token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::json;

use crate::GitHubError;

/// How long before it was issued a JWT says it was (GitHub's clock may be behind ours).
pub const JWT_BACKDATE_SECONDS: i64 = 60;
/// How long after now a JWT expires (GitHub refuses more than ten minutes in all).
pub const JWT_LIFETIME_SECONDS: i64 = 9 * 60;
/// An installation token is not used in its last five minutes: a call made with it could
/// still be refused, and a build's reports need several.
pub const TOKEN_MARGIN_SECONDS: i64 = 5 * 60;

/// An App's private key. Its `Debug` shows nothing of it.
pub struct AppKey(RsaKeyPair);

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey(<private>)")
    }
}

impl AppKey {
    /// Reads the PEM GitHub hands out when a private key is generated for an App (PKCS#1,
    /// `BEGIN RSA PRIVATE KEY`), or the same key as PKCS#8 (`BEGIN PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<AppKey, GitHubError> {
        let invalid = |reason: String| GitHubError::InvalidAppKey { reason };
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            invalid(format!(
                "it is not a PEM private key ({e}); use the .pem file GitHub generated for the App"
            ))
        })?;
        let pair = match &der {
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(key) => RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()),
            _ => {
                return Err(invalid(
                    "it is not an RSA key; a GitHub App's key is RSA (`BEGIN RSA PRIVATE KEY`)"
                        .into(),
                ))
            }
        }
        .map_err(|e| invalid(format!("it is not a usable RSA key: {e}")))?;
        Ok(AppKey(pair))
    }

    /// The public half (PKCS#1 `RSAPublicKey`, DER), which GitHub verifies JWTs with.
    pub fn public_key_der(&self) -> &[u8] {
        use ring::signature::KeyPair as _;
        self.0.public_key().as_ref()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, GitHubError> {
        let mut signature = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| GitHubError::InvalidAppKey {
                reason: "signing with it failed".into(),
            })?;
        Ok(signature)
    }
}

/// A GitHub App: its id and private key.
#[derive(Debug)]
pub struct App {
    pub id: u64,
    pub key: AppKey,
}

/// The claims of the JWT App `app_id` signs at `now` (seconds since the epoch).
pub fn jwt_claims(app_id: u64, now: i64) -> serde_json::Value {
    json!({
        "iat": now - JWT_BACKDATE_SECONDS,
        "exp": now + JWT_LIFETIME_SECONDS,
        "iss": app_id.to_string(),
    })
}

impl App {
    /// A JWT for the App's own calls (finding installations, making their tokens).
    pub fn jwt(&self, now: i64) -> Result<String, GitHubError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(jwt_claims(self.id, now).to_string());
        let signed = format!("{header}.{claims}");
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(signed.as_bytes())?);
        Ok(format!("{signed}.{signature}"))
    }
}

/// What a call is about, for choosing the installation whose token it carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `owner/name`, lower case.
    Repository(String),
    /// An organisation, lower case.
    Organisation(String),
}

impl Scope {
    /// The App's call that finds the installation covering this scope.
    pub fn installation_path(&self) -> String {
        match self {
            Scope::Repository(repo) => format!("/repos/{repo}/installation"),
            Scope::Organisation(org) => format!("/orgs/{org}/installation"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository(repo) => write!(f, "repository {repo}"),
            Scope::Organisation(org) => write!(f, "organisation {org}"),
        }
    }
}

/// The scope of an API path (`/repos/{owner}/{repo}/…`, `/orgs/{org}/…`); `None` for a
/// path of neither kind.
pub fn scope_of(path: &str) -> Option<Scope> {
    let path = path.split('?').next().unwrap_or(path);
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next(), segments.next()) {
        (Some("repos"), Some(owner), Some(name)) if !owner.is_empty() && !name.is_empty() => Some(
            Scope::Repository(format!("{owner}/{name}").to_ascii_lowercase()),
        ),
        (Some("orgs"), Some(org), _) if !org.is_empty() => {
            Some(Scope::Organisation(org.to_ascii_lowercase()))
        }
        _ => None,
    }
}

/// An installation token and when it expires (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationToken {
    pub token: String,
    pub expires_at: i64,
}

/// Whether a token expiring at `expires_at` may be used at `now`: until
/// [`TOKEN_MARGIN_SECONDS`] before it expires.
pub fn usable(expires_at: i64, now: i64) -> bool {
    expires_at - now > TOKEN_MARGIN_SECONDS
}

/// A value looked up once at a time: callers that find it missing wait for the one
/// look-up under way instead of each making their own.
type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// The App's installations as found so far, and their tokens.
#[derive(Default)]
pub(crate) struct Installations {
    by_scope: Mutex<HashMap<Scope, Slot<u64>>>,
    tokens: Mutex<HashMap<u64, Slot<InstallationToken>>>,
}

impl Installations {
    pub(crate) fn installation_slot(&self, scope: &Scope) -> Slot<u64> {
        let mut map = self.by_scope.lock().expect("the installations lock");
        map.entry(scope.clone()).or_default().clone()
    }

    pub(crate) fn token_slot(&self, installation: u64) -> Slot<InstallationToken> {
        let mut map = self.tokens.lock().expect("the tokens lock");
        map.entry(installation).or_default().clone()
    }

    /// Forgets which installation covers what (an App installed or removed somewhere).
    pub(crate) fn forget_scopes(&self) {
        self.by_scope
            .lock()
            .expect("the installations lock")
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_scoped_by_their_repository_or_organisation() {
        assert_eq!(
            scope_of("/repos/Org/Repo/pulls?state=open&page=2"),
            Some(Scope::Repository("org/repo".into()))
        );
        assert_eq!(
            scope_of("/orgs/Org/members/alice"),
            Some(Scope::Organisation("org".into()))
        );
        assert_eq!(scope_of("/app/installations/1/access_tokens"), None);
        assert_eq!(scope_of("/repos/org"), None);
        assert_eq!(
            Scope::Repository("org/repo".into()).installation_path(),
            "/repos/org/repo/installation"
        );
    }

    #[test]
    fn tokens_are_not_used_in_their_last_five_minutes() {
        let now = 1_000_000;
        assert!(usable(now + 3600, now));
        assert!(usable(now + 301, now));
        assert!(!usable(now + 300, now));
        assert!(!usable(now - 1, now));
    }

    #[test]
    fn a_jwt_was_issued_a_minute_ago_and_lives_under_ten_minutes() {
        let claims = jwt_claims(42, 1_000_000);
        assert_eq!(claims["iss"], "42");
        assert_eq!(claims["iat"], 1_000_000 - 60);
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert!(lifetime <= 600, "{lifetime}");
        assert!(claims["exp"].as_i64().unwrap() > 1_000_000);
    }

    #[test]
    fn what_is_not_an_rsa_private_key_is_refused_with_what_to_use() {
        for (pem, says) in [
            (&b"not a key"[..], "not a PEM private key"),
            (
                b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "not a usable RSA key",
            ),
            (
                b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "not an RSA key",
            ),
        ] {
            let error = AppKey::from_pem(pem).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        }
    }
}
