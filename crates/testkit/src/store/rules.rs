//! What the API server enforces and fills in by itself: defaults on create, immutable
//! fields, names, continue tokens.

use super::*;
use crate::resources::ResourceType;
use serde_json::{json, Value};

/// What the API server fills in when an object is created.
pub(super) fn default_on_create(rt: &ResourceType, object: &mut Value, uid: &str) {
    match rt.plural {
        "namespaces" => object["status"] = json!({"phase": "Active"}),
        "pods" => {
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            if object.pointer("/spec/restartPolicy").is_none() {
                object["spec"]["restartPolicy"] = json!("Always");
            }
        }
        "jobs" => {
            object["status"] = json!({});
            let spec = &mut object["spec"];
            for (field, value) in [
                ("parallelism", json!(1)),
                ("completions", json!(1)),
                ("backoffLimit", json!(6)),
                ("suspend", json!(false)),
                ("completionMode", json!("NonIndexed")),
                ("podReplacementPolicy", json!("TerminatingOrFailed")),
                ("manualSelector", Value::Null),
            ] {
                if spec.get(field).is_none() && !value.is_null() {
                    spec[field] = value;
                }
            }
            if spec.get("selector").is_none() {
                spec["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            }
            let name = object["metadata"]["name"].clone();
            let labels = &mut object["spec"]["template"]["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", json!(uid)),
                ("batch.kubernetes.io/job-name", name.clone()),
                ("controller-uid", json!(uid)),
                ("job-name", name),
            ] {
                labels[k] = v;
            }
        }
        _ => {}
    }
}

pub(super) fn check_immutable(
    rt: &ResourceType,
    old: &Value,
    new: &Value,
    name: &str,
) -> Result<(), ApiError> {
    if rt.plural == "jobs" {
        for field in ["/spec/selector", "/spec/template", "/spec/completions"] {
            let suspended = old.pointer("/spec/suspend") == Some(&json!(true));
            if field == "/spec/template" && suspended {
                continue;
            }
            if let Some(value) = new.pointer(field) {
                if Some(value) != old.pointer(field) {
                    let path = field.trim_start_matches('/').replace('/', ".");
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        format!("{path}: Invalid value: field is immutable"),
                    ));
                }
            }
        }
    }
    Ok(())
}

pub(super) fn encode_continue(rv: u64, key: &Key) -> String {
    use base64::Engine;
    let token = json!({"rv": rv, "r": key.0, "ns": key.1, "name": key.2});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

pub(super) fn decode_continue(token: &str) -> Result<(u64, Key), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = value["rv"].as_u64().ok_or_else(bad)?;
    let resource = value["r"].as_u64().ok_or_else(bad)? as usize;
    let ns = value["ns"].as_str().ok_or_else(bad)?.to_owned();
    let name = value["name"].as_str().ok_or_else(bad)?.to_owned();
    Ok((rv, (resource, ns, name)))
}

/// Why `name` cannot name an object of `rt`, in the API server's words: namespaces are DNS
/// labels, everything else DNS subdomains (RFC 1123).
pub(super) fn invalid_name(rt: &ResourceType, name: &str) -> Option<String> {
    let label = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    };
    if rt.plural == "namespaces" {
        return (!label(name)).then(|| "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_owned());
    }
    (name.len() > 253 || !name.split('.').all(label)).then(|| "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned())
}
