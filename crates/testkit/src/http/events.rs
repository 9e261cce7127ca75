//! Events written through either Events API (`events.k8s.io/v1` or core `v1`) shown through
//! both, as one object, like a real API server.

use super::*;
use crate::resources::RESOURCES;
use crate::store::{now, ApiError};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Serves a request; an Event written through either Events API is then written through
/// the other too, as a real API server, which stores both as one object, shows it.
pub(super) async fn serve_and_mirror(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    target: Target,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let written = RESOURCES[target.resource].plural == "events" && method != Method::GET;
    let (resource, namespace, name) = (
        target.resource,
        target.namespace.clone().unwrap_or_default(),
        target.name.clone(),
    );
    let reply = serve(shared, method, headers, target, query, body).await?;
    if written {
        mirror_event(shared, resource, &namespace, name.as_deref());
    }
    Ok(reply)
}

/// The twin of an Event in the other Events API: `events.k8s.io/v1` ⇄ core `v1`.
pub fn convert_event(event: &Value, to_core: bool) -> Value {
    let pairs: [(&str, &str); 9] = [
        ("regarding", "involvedObject"),
        ("note", "message"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("deprecatedSource", "source"),
        ("eventTime", "eventTime"),
    ];
    let same = ["metadata", "reason", "type", "action", "related", "series"];
    let mut twin = json!({});
    for key in same {
        if let Some(value) = event.get(key) {
            twin[key] = value.clone();
        }
    }
    for (new, core) in pairs {
        let (from, to) = if to_core { (new, core) } else { (core, new) };
        if let Some(value) = event.get(from) {
            twin[to] = value.clone();
        }
    }
    let (api_version, kind) = if to_core {
        ("v1", "Event")
    } else {
        ("events.k8s.io/v1", "Event")
    };
    twin["apiVersion"] = json!(api_version);
    twin["kind"] = json!(kind);
    if let Some(metadata) = twin["metadata"].as_object_mut() {
        for generated in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            metadata.remove(generated);
        }
    }
    twin
}

fn mirror_event(shared: &Arc<Shared>, resource: usize, namespace: &str, name: Option<&str>) {
    let to_core = RESOURCES[resource].group == "events.k8s.io";
    let Some(other) = RESOURCES
        .iter()
        .position(|r| r.plural == "events" && (r.group == "events.k8s.io") != to_core)
    else {
        return;
    };
    let mut store = shared.store.lock().expect("lock");
    // A created Event's name may have been generated: it is the newest in its namespace.
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        let version = |e: &Value| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        store
            .current(resource, Some(namespace))
            .into_iter()
            .max_by_key(|e| version(e))
            .and_then(|e| e["metadata"]["name"].as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    match store.get(resource, namespace, &name) {
        Ok(event) => {
            let twin = convert_event(&event, to_core);
            let result = match store.get(other, namespace, &name) {
                Ok(_) => store.update(other, namespace, &name, twin, false),
                Err(_) => store.create(other, namespace, twin),
            };
            if let Err(e) = result {
                tracing::warn!(namespace, event = %name, error = ?e, "fake API server: cannot mirror an Event");
            }
        }
        Err(_) => {
            let _ = store.delete(other, namespace, &name, None, None);
        }
    }
}

/// A Kubernetes Event about an object, as the kubelet or a controller records it.
pub fn event_for(object: &Value, reason: &str, message: &str, kind: &str) -> Value {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}.")},
        "involvedObject": {
            "apiVersion": object.get("apiVersion"), "kind": object.get("kind"), "name": name,
            "namespace": object.pointer("/metadata/namespace"), "uid": object.pointer("/metadata/uid"),
        },
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "kubelet", "host": "fake-node"},
    })
}
