//! Signing in to the pages with the server's token: a session cookie that any replica can
//! check (`<expiry>.<nonce>.<HMAC(token, expiry, nonce)>`, no server-side state), and a
//! CSRF token per session that every form carries. Pure: the caller passes the time and
//! the nonce (random, so no two sessions are alike, even when issued in the same second).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::same_secret;

/// The session cookie's name.
pub const COOKIE: &str = "kubeci_session";
/// How long a sign-in lasts.
pub const LIFETIME: i64 = 12 * 3600;

/// HMAC-SHA256 of `purpose` under the token, in hex.
fn mac(token: &str, purpose: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A new session's cookie value, unique by `nonce`: two sign-ins in the same second were
/// given the same session, and so the same CSRF token (issue 27 finding 4).
pub fn issue(token: &str, now: i64, nonce: &str) -> String {
    let expiry = now + LIFETIME;
    let mac = mac(token, &format!("session:{expiry}:{nonce}"));
    format!("{expiry}.{nonce}.{mac}")
}

/// Whether `value` is a session this token issued that has not expired.
pub fn valid(token: &str, value: &str, now: i64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some(expiry), Some(nonce), Some(presented)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(at) = expiry.parse::<i64>() else {
        return false;
    };
    at > now
        && !nonce.is_empty()
        && same_secret(presented, &mac(token, &format!("session:{expiry}:{nonce}")))
}

/// The cookie holding the session of a user named by the authenticating proxy.
pub const PROXY_COOKIE: &str = "kubeci_proxy_session";

/// A new session of proxy user `user`: bound to that user, unique by `nonce`, so its CSRF
/// token differs from every other session's, the same user's included.
pub fn issue_for_user(token: &str, user: &str, now: i64, nonce: &str) -> String {
    let expiry = now + LIFETIME;
    let mac = mac(token, &format!("user-session:{user}:{expiry}:{nonce}"));
    format!("{expiry}.{nonce}.{mac}")
}

/// Whether `value` is a session this token issued to `user` that has not expired.
pub fn valid_for_user(token: &str, user: &str, value: &str, now: i64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some(expiry), Some(nonce), Some(presented)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(at) = expiry.parse::<i64>() else {
        return false;
    };
    at > now
        && !nonce.is_empty()
        && same_secret(
            presented,
            &mac(token, &format!("user-session:{user}:{expiry}:{nonce}")),
        )
}

/// The CSRF token of a session: forms carry it, a forged form cannot know it.
pub fn csrf(token: &str, session: &str) -> String {
    mac(token, &format!("csrf:{session}"))
}

pub fn csrf_ok(token: &str, session: &str, presented: &str) -> bool {
    same_secret(presented, &csrf(token, session))
}

/// The session cookie in a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    cookie(header, COOKIE)
}

/// Cookie `wanted` in a `Cookie` header, if any.
pub fn cookie<'h>(header: &'h str, wanted: &str) -> Option<&'h str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value)
}

/// Where to go after signing in: a path on this server, never another site.
pub fn safe_next(next: &str) -> &str {
    // Only a path of this server: browsers drop tabs and line breaks inside URLs (so
    // `/\t/evil.example/` is `//evil.example/`, another host) and a header cannot carry
    // control characters, so only visible ASCII is followed.
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic());
    if local {
        next
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_csrf_tokens_hold_only_for_their_token_and_time() {
        let token = "a-token-of-some-length";
        let session = issue(token, 1000, "n0");
        assert!(valid(token, &session, 1001));
        assert!(!valid(token, &session, 1000 + LIFETIME), "expired");
        assert!(
            !valid("another-token-entirely", &session, 1001),
            "another token"
        );
        let (expiry, signed) = session.split_once('.').unwrap();
        let stretched = format!("{}.{signed}", expiry.parse::<i64>().unwrap() + 3600);
        assert!(!valid(token, &stretched, 1001), "the expiry is signed");
        let (nonce, mac) = signed.split_once('.').unwrap();
        let flipped = if mac.ends_with('0') { "1" } else { "0" };
        let forged = format!("{expiry}.{nonce}.{}{flipped}", &mac[..mac.len() - 1]);
        assert!(!valid(token, &forged, 1001), "a MAC one digit off");
        assert!(
            !valid(token, &format!("{expiry}.{nonce}x.{mac}"), 1001),
            "the nonce is signed"
        );
        assert!(!valid(token, "garbage", 1001));
        let again = issue(token, 1000, "n1");
        assert!(valid(token, &again, 1001));
        assert_ne!(session, again, "sessions issued in the same second differ");
        assert_ne!(csrf(token, &session), csrf(token, &again));
        let form = csrf(token, &session);
        assert!(csrf_ok(token, &session, &form));
        assert!(
            !csrf_ok(token, &issue(token, 2000, "n0"), &form),
            "another session's form"
        );
        assert!(!csrf_ok(token, &session, ""));
        assert_eq!(
            from_cookie_header("a=1; kubeci_session=5.abc; b=2"),
            Some("5.abc")
        );
        assert_eq!(from_cookie_header("kubeci_sessionx=1"), None);

        let alice = issue_for_user(token, "alice", 1000, "n1");
        assert!(valid_for_user(token, "alice", &alice, 1001));
        assert!(
            !valid_for_user(token, "bob", &alice, 1001),
            "bound to alice"
        );
        assert!(!valid_for_user(token, "alice", &alice, 1000 + LIFETIME));
        assert!(!valid_for_user(token, "alice", &session, 1001));
        let again = issue_for_user(token, "alice", 1000, "n2");
        assert_ne!(
            csrf(token, &alice),
            csrf(token, &again),
            "each session of one user has its own CSRF token"
        );
        assert_eq!(safe_next("/jobs/ns/a"), "/jobs/ns/a");
        for hostile in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "javascript:alert(1)",
            "/\t/evil.example/",
            "/\n/evil.example/",
            "/\r/evil.example/",
            "/\0",
            "/ /evil.example/",
            "/jobs/\u{7f}",
            "/jobs/é",
        ] {
            assert_eq!(safe_next(hostile), "/", "{hostile}");
        }
    }
}
