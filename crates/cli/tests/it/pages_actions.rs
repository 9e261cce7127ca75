//! The pages' actions over real HTTP ("Build now", "Rebuild", "Cancel", sign-in and out):
//! each needs a signed-in session and its CSRF token.

use crate::common;

use std::time::Duration;

use common::local::{configmap, Local};

use crate::pages::get;

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// One request; (status, lowercased head, body).
fn raw(
    kubeci: &common::serve::Kubeci,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", kubeci.port)).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: l\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_owned())
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[test]
fn actions_need_a_signed_in_session_and_a_csrf_token() {
    let (local, repo) = Local::new();
    local.write(
        "slow.yaml",
        &configmap("slow", &repo.bare, "echo started; sleep 30", ""),
    );
    let kubeci = local.serve(&[], &[]);
    let builds = || common::serve::builds(&kubeci, "slow").len();

    let (_, anonymous) = get(&kubeci, "/jobs/default/slow");
    assert!(
        anonymous.contains(
            "<a href=\"/login?next=%2Fjobs%2Fdefault%2Fslow\">Sign in to start builds</a>"
        ),
        "{anonymous}"
    );
    assert!(!anonymous.contains("Build now"), "{anonymous}");
    let (status, _, _) = raw(
        &kubeci,
        "POST",
        "/jobs/default/slow/build",
        &[FORM],
        "csrf=x",
    );
    assert_eq!(status, 401, "not signed in");
    assert_eq!(builds(), 0, "and nothing happened");

    let (status, _, page) = raw(&kubeci, "POST", "/login", &[FORM], "token=wrong&next=%2F");
    assert_eq!(status, 401);
    assert!(page.contains("That is not the server's token."), "{page}");
    let (status, head, _) = raw(
        &kubeci,
        "POST",
        "/login",
        &[FORM],
        "token=%2F%2Fevil&next=%2F%2Fevil.example%2F",
    );
    assert_eq!(status, 401);
    assert!(!head.contains("set-cookie"), "{head}");
    let body = format!("token={}&next=%2F%2Fevil.example%2F", common::serve::TOKEN);
    let (status, head, _) = raw(&kubeci, "POST", "/login", &[FORM], &body);
    assert_eq!(status, 303);
    assert!(
        head.contains("\r\nlocation: /\r\n"),
        "never to another site: {head}"
    );
    let cookie_line = head
        .lines()
        .find(|l| l.starts_with("set-cookie: "))
        .expect("a session cookie");
    assert!(
        cookie_line.contains("httponly") && cookie_line.contains("samesite=strict"),
        "{cookie_line}"
    );
    // The head was lowercased; the cookie value is digits, a dot and hex.
    let session = cookie_line
        .trim_start_matches("set-cookie: ")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let cookie = ("Cookie", session.as_str());

    let (_, _, signed) = raw(&kubeci, "GET", "/jobs/default/slow", &[cookie], "");
    let csrf = signed
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a Build now form with its CSRF token")
        .to_owned();
    let (status, _, _) = raw(
        &kubeci,
        "POST",
        "/jobs/default/slow/build",
        &[cookie, FORM],
        "csrf=forged",
    );
    assert_eq!(status, 403, "a form from elsewhere");
    let (status, _, _) = raw(
        &kubeci,
        "POST",
        "/jobs/default/slow/build",
        &[FORM],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 401, "the token without the session");
    assert_eq!(builds(), 0, "nothing happened");

    let (status, head, _) = raw(
        &kubeci,
        "POST",
        "/jobs/default/slow/build",
        &[cookie, FORM],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303);
    assert!(
        head.contains("\r\nlocation: /jobs/default/slow/builds/1\r\n"),
        "{head}"
    );
    let build = &common::serve::builds(&kubeci, "slow")[0];
    assert_eq!(build["requested_by"], "ui");
    common::git::wait_for(Duration::from_secs(60), "the build to run", || {
        common::serve::state(&kubeci, "slow", 1) == "running"
    });
    let (_, _, page) = raw(&kubeci, "GET", "/jobs/default/slow/builds/1", &[cookie], "");
    assert!(page.contains(">Cancel</button>"), "{page}");
    let cancel = "/jobs/default/slow/builds/1/cancel";
    assert_eq!(
        raw(&kubeci, "POST", cancel, &[cookie, FORM], "csrf=forged").0,
        403
    );
    assert_eq!(
        common::serve::state(&kubeci, "slow", 1),
        "running",
        "a forged cancel does nothing"
    );
    assert_eq!(
        raw(
            &kubeci,
            "POST",
            cancel,
            &[cookie, FORM],
            &format!("csrf={csrf}")
        )
        .0,
        303
    );
    common::git::wait_for(Duration::from_secs(30), "the build to be aborted", || {
        common::serve::state(&kubeci, "slow", 1) == "aborted"
    });
}
