//! The node agent's pure parts: log queries and lines, image patterns.

use super::logs::{parse_log_query, LogQuery};
use super::*;

#[test]
fn image_patterns_match_as_globs() {
    assert!(image_matches(
        "registry.invalid/*",
        "registry.invalid/kubeci/missing:1"
    ));
    assert!(image_matches(
        "*missing*",
        "registry.invalid/kubeci/missing:1"
    ));
    assert!(image_matches("bash:5", "bash:5"));
    assert!(!image_matches("bash:5", "bash:5.2"));
    assert!(!image_matches(
        "registry.invalid/*",
        "docker.io/library/bash:5"
    ));
    assert!(!image_matches("a*b*c", "acb"));
}

#[test]
fn log_queries_read_booleans_as_kubernetes_does() {
    let q = parse_log_query("follow=True&timestamps=1&tailLines=3&limitBytes=10").unwrap();
    assert_eq!(
        q,
        LogQuery {
            follow: true,
            timestamps: true,
            tail_lines: Some(3),
            limit_bytes: Some(10),
            ..LogQuery::default()
        }
    );
    assert!(!parse_log_query("follow=false").unwrap().follow);
    assert!(parse_log_query("tailLines=x").is_err());
}
