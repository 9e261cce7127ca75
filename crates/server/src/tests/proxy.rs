//! Users named by an authenticating proxy: who may act, from where, with which session.

use super::*;

/// Opens a job page as `user` of the proxy: (the session cookie it sets, the CSRF
/// token in its forms).
async fn proxy_session(app: Router, user: &str) -> (String, String) {
    let response = app
        .oneshot(as_user("GET", "/jobs/default/demo", user, None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.starts_with("kubeci_proxy_session="),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("HttpOnly; SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&bytes).into_owned();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a form with a CSRF token: {page}"))
        .to_owned();
    (cookie, csrf)
}

/// The server behind a proxy naming users in `X-Forwarded-User`, of whom alice may act.
fn alice_may_act(backend: &Arc<Fake>) -> Router {
    app(
        Arc::clone(backend),
        Access {
            token: Some("s3cret".into()),
            user_header: Some(axum::http::HeaderName::from_static("x-forwarded-user")),
            allowed_users: vec!["alice".into()],
            ..Access::default()
        },
    )
}

#[tokio::test]
async fn a_proxy_user_acts_only_from_this_site_and_only_when_named_once() {
    let backend = Arc::new(Fake::default());
    let app = || alice_may_act(&backend);
    let api = "/api/v1/jobs/default/demo/builds";
    let with = |headers: &[(&str, &str)]| {
        let mut request = as_user("POST", api, "alice", Some("a=b"));
        request
            .headers_mut()
            .insert(header::HOST, "ci.example.com".parse().unwrap());
        for (name, value) in headers {
            request.headers_mut().append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        request
    };
    // What the reviewer sent: a form POST from another site, the proxy adding alice.
    for headers in [
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ][..],
        &[("origin", "http://evil.example")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("origin", "null")][..],
    ] {
        let (status, body) = send(app(), with(headers)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        assert!(body.contains("\"cross-site\""), "{body}");
    }
    let (status, body) = send(app(), with(&[("x-forwarded-user", "mallory")])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "named twice: {body}");
    assert!(body.contains("ambiguous-user"), "{body}");
    assert!(
        backend.started.lock().unwrap().is_empty(),
        "nothing started"
    );
    for headers in [
        &[][..],
        &[
            ("origin", "https://ci.example.com"),
            ("sec-fetch-site", "same-origin"),
        ][..],
        &[("origin", "https://ci.example.com")][..],
    ] {
        let (status, body) = send(app(), with(headers)).await;
        assert_eq!(status, StatusCode::CREATED, "{headers:?}: {body}");
    }
}

#[tokio::test]
async fn session_cookies_are_secure_when_the_server_is_reached_over_https() {
    for secure in [false, true] {
        let app = app(
            Arc::new(Fake::default()),
            Access {
                token: Some("s3cret".into()),
                secure_cookies: secure,
                ..Access::default()
            },
        );
        let login = Request::builder()
            .method("POST")
            .uri("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("token=s3cret&next=/"))
            .unwrap();
        let response = app.oneshot(login).await.unwrap();
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(cookie.contains("; Secure"), secure, "{cookie}");
    }
}

#[tokio::test]
async fn users_named_by_the_proxy_act_only_when_allowed() {
    let backend = Arc::new(Fake::default());
    let app = || alice_may_act(&backend);
    let api = "/api/v1/jobs/default/demo/builds";
    let (status, body) = send(app(), as_user("POST", api, "mallory", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("user-not-allowed"), "{body}");
    let (status, body) = send(app(), as_user("POST", api, "alice", None)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let rebuild = "/api/v1/jobs/default/demo/builds/1/rebuild";
    let (status, body) = send(app(), as_user("POST", rebuild, "mallory", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        *backend.started.lock().unwrap(),
        ["alice"],
        "only alice's request started a build, under her name"
    );
    // Without the proxy's header, the token still works.
    assert_eq!(
        call(app(), "POST", api, Some("s3cret")).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn proxy_users_forms_carry_their_sessions_csrf() {
    let backend = Arc::new(Fake::default());
    let app = || alice_may_act(&backend);
    // Alice's pages give her a session of her own; its CSRF token is in the forms.
    let (cookie, alice_csrf) = proxy_session(app(), "alice").await;
    let (other_cookie, other_csrf) = proxy_session(app(), "alice").await;
    assert_ne!(
        alice_csrf, other_csrf,
        "one CSRF token per session, not per user"
    );
    let form = format!("csrf={alice_csrf}");
    let with = |uri: &str, user: &str, form: Option<&str>, cookie: &str| {
        let mut request = as_user("POST", uri, user, form);
        request
            .headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        request
    };
    let build = "/jobs/default/demo/build";
    let refused = [
        (
            with(build, "mallory", Some(&form), &cookie),
            "another user with alice's form and cookie",
        ),
        (
            with(build, "alice", Some("csrf=forged"), &cookie),
            "a forged form",
        ),
        (with(build, "alice", None, &cookie), "no form at all"),
        (
            with(build, "alice", Some(&form), &other_cookie),
            "another session's form",
        ),
        (
            with(
                build,
                "alice",
                Some(&format!("csrf={}", session::csrf("s3cret", "user:alice"))),
                &cookie,
            ),
            "the old per-user constant",
        ),
    ];
    for (request, what) in refused {
        assert_eq!(
            send(app(), request).await.0,
            StatusCode::FORBIDDEN,
            "{what}"
        );
    }
    let (status, _) = send(app(), as_user("POST", build, "alice", Some(&form))).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the form without its session"
    );
    let (status, _) = send(app(), with(build, "alice", Some(&form), &cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let rebuild = |n: u64| format!("/jobs/default/demo/builds/{n}/rebuild");
    let (status, _) = send(app(), with(&rebuild(1), "alice", Some(&form), &cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = send(app(), with(&rebuild(9), "alice", Some(&form), &cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no build 9 to rebuild");
    assert_eq!(
        *backend.started.lock().unwrap(),
        ["alice", "alice (rebuild of #1)"],
        "alice's forms started builds, under her name"
    );
}
