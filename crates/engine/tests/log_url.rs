//! A build's link to the log store (`--log-url-template`, a job's `log_url`): each value
//! is read back whole by what opens the link, wherever the template puts it.

use kubeci_engine::api::log_url;
use percent_encoding::percent_decode_str;

/// A value with every character that could end a path segment or a query value, start an
/// escape, or need UTF-8.
const AWKWARD: &str = "a:b/c?d#e f%g&h=i+j é";

/// The path of `url` cut into its segments, each decoded as a log store's HTTP server
/// reads it.
fn path_segments(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    path.split('/')
        .skip(1)
        .map(|segment| {
            percent_decode_str(segment)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .collect()
}

/// The query of `url` as a browser's `URLSearchParams` and a server's form decoder read it.
fn query(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[test]
fn a_value_stays_one_path_segment_or_query_value_and_reads_back_whole() {
    let url = log_url(
        "https://logs.example.com/pods/{pod}/log?job={job}&from={start}&to={end}#top",
        &[
            ("pod", AWKWARD),
            ("job", AWKWARD),
            ("start", "2026-11-23T10:00:00Z"),
            ("end", "now"),
        ],
    );
    assert!(url.is_ascii(), "{url}");
    assert_eq!(path_segments(&url), ["pods", AWKWARD, "log"], "{url}");
    assert_eq!(
        query(&url),
        [
            ("job".to_owned(), AWKWARD.to_owned()),
            ("from".to_owned(), "2026-11-23T10:00:00Z".to_owned()),
            ("to".to_owned(), "now".to_owned()),
        ],
        "{url}"
    );
    assert!(
        url.ends_with("#top"),
        "the template's own fragment is kept: {url}"
    );
}

#[test]
fn times_keep_their_colons_as_people_read_and_paste_them() {
    let url = log_url(
        "https://grafana.example.com/explore?from={start}&to={end}",
        &[
            ("start", "2026-11-23T10:00:00Z"),
            ("end", "2026-11-23T10:05:42Z"),
        ],
    );
    assert_eq!(
        url,
        "https://grafana.example.com/explore?from=2026-11-23T10:00:00Z&to=2026-11-23T10:05:42Z"
    );
}
