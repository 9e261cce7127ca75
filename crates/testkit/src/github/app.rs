//! The fake GitHub as GitHub sees an App: it verifies each JWT's RS256 signature with the
//! App's public key, its issuer and its times (as GitHub does: issued in the past, expiring
//! in the future and at most ten minutes after it was issued), finds installations by
//! repository or organisation, and hands out installation tokens that expire — and
//! refuses them once expired, or on another installation's repositories.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::Value;

use super::FakeGitHub;

/// The App's side of the fake.
pub(super) struct AppSide {
    pub id: u64,
    /// PKCS#1 `RSAPublicKey`, DER.
    pub public_key: Vec<u8>,
    /// Account (lower case) → installation id.
    pub installations: BTreeMap<String, u64>,
    /// Token → (installation, expiry in seconds since the epoch).
    pub tokens: BTreeMap<String, (u64, i64)>,
    /// How long the tokens it makes live.
    pub token_lifetime: i64,
    /// Why each refused JWT was refused.
    pub refused_jwts: Vec<String>,
    /// Calls made with each installation's tokens (its rate limit spent).
    pub calls: BTreeMap<u64, u64>,
}

/// An installation's hourly rate limit, as GitHub gives an App's installation at least.
pub(super) const RATE_LIMIT: u64 = 5000;

pub(super) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl AppSide {
    /// Whether `jwt` is the App's, valid now; why not, otherwise.
    pub fn verify(&self, jwt: &str) -> Result<(), String> {
        let mut parts = jwt.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string());
        let json = |part: &str| -> Result<Value, String> {
            serde_json::from_slice(&decode(part)?).map_err(|e| e.to_string())
        };
        if json(header)?["alg"] != "RS256" {
            return Err("'alg' must be RS256".into());
        }
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_key)
            .verify(format!("{header}.{claims}").as_bytes(), &decode(signature)?)
            .map_err(|_| "the signature is not the App's key's".to_owned())?;
        let claims = json(claims)?;
        let issuer = match &claims["iss"] {
            Value::String(s) => s.parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        if issuer != Some(self.id) {
            return Err(format!("'iss' {} is not the App's id", claims["iss"]));
        }
        let (Some(issued), Some(expires)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
            return Err("'iat' and 'exp' must be numbers".into());
        };
        let now = now();
        if issued > now {
            return Err(
                "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                    .into(),
            );
        }
        if expires <= now {
            return Err("'Expiration time' claim ('exp') is in the past".into());
        }
        if expires - issued > 600 {
            return Err("'Expiration time' claim ('exp') is too far in the future".into());
        }
        Ok(())
    }

    /// The installation on `account`'s repositories a token may call, if it is one of
    /// this App's and has not expired.
    pub fn token_installation(&self, token: &str) -> Result<u64, &'static str> {
        match self.tokens.get(token) {
            Some((installation, expires)) if *expires > now() => Ok(*installation),
            Some(_) => Err("Bad credentials: the installation token has expired"),
            None => Err("Bad credentials"),
        }
    }

    /// A new token of `installation`: (token, expiry in seconds).
    pub fn make_token(&mut self, installation: u64) -> (String, i64) {
        let token = format!("ghs_{installation}_{}", self.tokens.len() + 1);
        let expires = now() + self.token_lifetime;
        self.tokens.insert(token.clone(), (installation, expires));
        (token, expires)
    }

    /// One call with `installation`'s token: its rate limit left.
    pub fn spend(&mut self, installation: u64) -> u64 {
        let calls = self.calls.entry(installation).or_default();
        *calls += 1;
        RATE_LIMIT.saturating_sub(*calls)
    }

    /// Makes every token given so far expired.
    pub fn expire_tokens(&mut self) {
        let past = now() - 1;
        for (_, expires) in self.tokens.values_mut() {
            *expires = past;
        }
    }
}

/// A GitHub App's private key as GitHub generates one (PKCS#1 PEM, 2048 bits), made by
/// `openssl` at `path`; returns the public key as the fake wants it (PKCS#1 DER).
pub fn make_app_key(path: &std::path::Path) -> Vec<u8> {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (the tests need it: .ci/run installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let file = path.to_str().expect("a UTF-8 path");
    run(&["genrsa", "-traditional", "-out", file, "2048"]);
    run(&["rsa", "-in", file, "-RSAPublicKey_out", "-outform", "DER"])
}

impl FakeGitHub {
    /// Starts as GitHub answers App `app_id` whose public key is `public_key` (PKCS#1
    /// `RSAPublicKey`, DER): calls need the App's JWT or one of its installations' tokens
    /// (see [`FakeGitHub::install`]), which live an hour unless
    /// [`FakeGitHub::set_token_lifetime`] says otherwise.
    pub async fn start_app(app_id: u64, public_key: Vec<u8>, bot: &str) -> FakeGitHub {
        let github = FakeGitHub::start("", bot).await;
        github.state().app = Some(AppSide {
            id: app_id,
            public_key,
            installations: BTreeMap::new(),
            tokens: BTreeMap::new(),
            token_lifetime: 3600,
            refused_jwts: Vec::new(),
            calls: BTreeMap::new(),
        });
        github
    }

    /// The App is installed on `account` (a user or an organisation) as `installation`.
    pub fn install(&self, account: &str, installation: u64) {
        self.with_app(|app| {
            app.installations
                .insert(account.to_ascii_lowercase(), installation)
        });
    }

    /// Installation tokens made from now on expire after `lifetime`.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.with_app(|app| app.token_lifetime = lifetime.as_secs() as i64);
    }

    /// Every installation token made so far is expired from now on.
    pub fn expire_tokens(&self) {
        self.with_app(AppSide::expire_tokens);
    }

    /// How many installation tokens were made.
    pub fn tokens_made(&self) -> usize {
        self.with_app(|app| app.tokens.len())
    }

    /// Why each JWT refused so far was refused.
    pub fn refused_jwts(&self) -> Vec<String> {
        self.with_app(|app| app.refused_jwts.clone())
    }

    fn with_app<T>(&self, act: impl FnOnce(&mut AppSide) -> T) -> T {
        act(self.state().app.as_mut().expect("started with start_app"))
    }
}
