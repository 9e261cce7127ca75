//! Reads a real API server's audit log (JSON lines, `Metadata` level) to prove what one
//! user did: how many requests, whether any touched a Secret, whether any was refused.

use std::collections::{BTreeMap, BTreeSet};

/// What one user's requests in an audit log came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditSummary {
    /// Distinct requests (by audit ID).
    pub requests: usize,
    /// (verb, resource) pairs used, e.g. `("create", "jobs")`.
    pub used: BTreeSet<(String, String)>,
    /// Requests on `secrets`, as "VERB URI".
    pub secrets: Vec<String>,
    /// Requests answered 403, as "VERB URI".
    pub forbidden: Vec<String>,
    /// How many requests of each (verb, resource).
    pub counts: BTreeMap<(String, String), usize>,
    /// Writes that succeeded (`create`, `update`, `patch`, `delete`, `deletecollection`
    /// answered 2xx): what went into etcd.
    pub writes: usize,
}

/// The verbs that write.
const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Summarizes the requests of `user` in `log`; a line that is not an audit event is an
/// error naming its line number.
pub fn summarize(log: &str, user: &str) -> Result<AuditSummary, String> {
    let mut summary = AuditSummary::default();
    let mut seen = BTreeSet::new();
    for (index, line) in log.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("line {}: not a JSON audit event: {e}", index + 1))?;
        if event["kind"] != "Event" {
            return Err(format!("line {}: not an audit event", index + 1));
        }
        if event["user"]["username"] != user {
            continue;
        }
        let id = event["auditID"].as_str().unwrap_or_default().to_owned();
        if !seen.insert(id) {
            continue;
        }
        summary.requests += 1;
        let verb = event["verb"].as_str().unwrap_or_default();
        let uri = event["requestURI"].as_str().unwrap_or_default();
        let resource = match event["objectRef"]["subresource"].as_str() {
            Some(sub) => format!(
                "{}/{sub}",
                event["objectRef"]["resource"].as_str().unwrap_or_default()
            ),
            None => event["objectRef"]["resource"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let request = format!("{verb} {uri}");
        if resource.starts_with("secrets") {
            summary.secrets.push(request.clone());
        }
        if event["responseStatus"]["code"] == 403 {
            summary.forbidden.push(request);
        }
        let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
        if WRITES.contains(&verb) && (200..300).contains(&code) {
            summary.writes += 1;
        }
        *summary
            .counts
            .entry((verb.to_owned(), resource.clone()))
            .or_default() += 1;
        if !resource.is_empty() {
            summary.used.insert((verb.to_owned(), resource));
        }
    }
    Ok(summary)
}

/// What the `rules` of a Role or ClusterRole grant, as (verb, resource) pairs.
pub fn granted(rules: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    let strings = |rule: &serde_json::Value, field: &str| -> Vec<String> {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut pairs = BTreeSet::new();
    for rule in rules {
        for resource in strings(rule, "resources") {
            for verb in strings(rule, "verbs") {
                pairs.insert((verb, resource.clone()));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, user: &str, verb: &str, resource: &str, code: u16) -> String {
        serde_json::json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": id, "stage": "ResponseComplete", "verb": verb,
            "requestURI": format!("/api/v1/namespaces/a/{resource}"),
            "user": {"username": user}, "objectRef": {"resource": resource, "namespace": "a"},
            "responseStatus": {"code": code}})
        .to_string()
    }

    #[test]
    fn counts_one_users_requests_and_finds_secrets_and_refusals() {
        let kubeci = "system:serviceaccount:kubeci:kubeci";
        let log = [
            line("1", kubeci, "list", "configmaps", 200),
            line("1", kubeci, "list", "configmaps", 200), // a second stage of the same request
            line("2", kubeci, "get", "secrets", 403),
            line("3", "admin", "get", "secrets", 200),
            line("4", kubeci, "create", "jobs", 201),
            line("5", kubeci, "create", "jobs", 409),
        ]
        .join("\n");
        let summary = summarize(&log, kubeci).unwrap();
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.writes, 1, "only the create that was written");
        assert_eq!(summary.counts[&("create".to_owned(), "jobs".to_owned())], 2);
        assert_eq!(summary.secrets, ["get /api/v1/namespaces/a/secrets"]);
        assert_eq!(summary.forbidden, ["get /api/v1/namespaces/a/secrets"]);
        assert!(summary.used.contains(&("create".into(), "jobs".into())));
        assert_eq!(summarize(&log, "nobody").unwrap(), AuditSummary::default());
    }

    #[test]
    fn rules_grant_verb_resource_pairs() {
        let rules = [
            serde_json::json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]}),
        ];
        let expected: BTreeSet<(String, String)> = [
            ("get".into(), "pods".into()),
            ("get".into(), "pods/log".into()),
        ]
        .into();
        assert_eq!(granted(&rules), expected);
    }

    #[test]
    fn a_line_that_is_not_an_audit_event_is_an_error() {
        assert_eq!(
            summarize("{\"kind\": \"Event\"}\nnot json", "x").unwrap_err()[..7],
            *"line 2:"
        );
    }
}
