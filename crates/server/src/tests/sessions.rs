//! Sessions signed in with the token, and the forms that act for them (issue 27 finding 4):
//! every form, signing out included, refuses another site, and no two sessions are alike.

use super::*;

const TOKEN: &str = "s3cret";

fn signed_app() -> Router {
    app(
        Arc::new(Fake::default()),
        Access {
            token: Some(TOKEN.into()),
            ..Access::default()
        },
    )
}

/// A form POST to `uri` with `cookie` as the session and `extra` headers.
fn form(uri: &str, session: Option<&str>, body: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::HOST, "ci.example.com")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(session) = session {
        request = request.header(header::COOKIE, format!("{}={session}", session::COOKIE));
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

/// Signs in with the token; the session cookie's value.
async fn sign_in(extra: &[(&str, &str)]) -> Option<String> {
    let response = signed_app()
        .oneshot(form(
            "/login",
            None,
            &format!("token={TOKEN}&next=/"),
            extra,
        ))
        .await
        .unwrap();
    let cookie = response.headers().get(header::SET_COOKIE)?.to_str().ok()?;
    let value = cookie.strip_prefix("kubeci_session=")?.split(';').next()?;
    Some(value.to_owned())
}

/// Signing out as a page of another site would (`Sec-Fetch-Site: cross-site`, or an
/// `Origin` of another host, or no CSRF token) is refused and clears nothing: the session
/// still starts builds. Before, any `POST /logout` cleared the session.
#[tokio::test]
async fn a_sign_out_from_another_site_is_refused_and_the_session_still_works() {
    let session = sign_in(&[]).await.expect("signed in");
    let csrf = format!("csrf={}", session::csrf(TOKEN, &session));
    for (body, extra) in [
        (csrf.as_str(), &[("sec-fetch-site", "cross-site")][..]),
        (csrf.as_str(), &[("sec-fetch-site", "same-site")][..]),
        (csrf.as_str(), &[("origin", "https://evil.example")][..]),
        ("", &[][..]),
        ("csrf=0123", &[("sec-fetch-site", "same-origin")][..]),
    ] {
        let response = signed_app()
            .oneshot(form("/logout", Some(&session), body, extra))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{body} {extra:?}");
        assert!(
            response.headers().get(header::SET_COOKIE).is_none(),
            "{body} {extra:?}"
        );
    }
    let (status, body) = send(
        signed_app(),
        form("/jobs/default/demo/build", Some(&session), &csrf, &[]),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the session still acts: {body}"
    );

    // From kubeci's own page, it signs out.
    let response = signed_app()
        .oneshot(form(
            "/logout",
            Some(&session),
            &csrf,
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://ci.example.com"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("kubeci_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

/// Signing in from another site's page is refused like every other form.
#[tokio::test]
async fn a_sign_in_from_another_site_is_refused() {
    assert_eq!(sign_in(&[("sec-fetch-site", "cross-site")]).await, None);
    assert_eq!(sign_in(&[("origin", "https://evil.example")]).await, None);
    assert!(sign_in(&[("sec-fetch-site", "same-origin")])
        .await
        .is_some());
}

/// Two sign-ins in the same second get two sessions, each with its own CSRF token. Before,
/// a session was its expiry second and its MAC: the same cookie for both.
#[tokio::test]
async fn two_sign_ins_in_the_same_second_get_different_sessions() {
    let expiry = |session: &str| session.split('.').next().unwrap().to_owned();
    // Sign-ins take microseconds: a pair straddles a second rarely, and is tried again.
    for _ in 0..10 {
        let first = sign_in(&[]).await.expect("signed in");
        let second = sign_in(&[]).await.expect("signed in");
        if expiry(&first) != expiry(&second) {
            continue;
        }
        assert_ne!(first, second);
        assert_ne!(session::csrf(TOKEN, &first), session::csrf(TOKEN, &second));
        for session in [&first, &second] {
            assert!(session::valid(TOKEN, session, now()), "{session}");
        }
        return;
    }
    panic!("no two sign-ins fell in the same second in ten tries");
}
