//! The fake API server's state: objects, one cluster-wide resourceVersion sequence, a
//! bounded history of changes for watches, list snapshots for pagination, and pod logs.
//!
//! Every operation runs under one lock and publishes its change while holding it, so a
//! watcher that subscribes under the same lock sees each change exactly once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::resources::{ResourceType, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};

mod rules;
use rules::{check_immutable, decode_continue, default_on_create, encode_continue, invalid_name};

mod writes;

/// (resource index, namespace, name); cluster-scoped objects have an empty namespace.
pub type Key = (usize, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub key: Key,
    pub kind: ChangeKind,
    pub object: Arc<Value>,
    /// The object before the change (for MODIFIED), to decide what a filtered watch sees.
    pub old: Option<Arc<Value>>,
}

/// An API error, returned as a `metav1.Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, resource: &ResourceType, name: &str) -> ApiError {
        let mut details = json!({"name": name, "kind": resource.plural});
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        self.details = Some(details);
        self
    }

    pub fn not_found(resource: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .about(resource, name)
    }

    pub fn already_exists(resource: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
        )
        .about(resource, name)
    }

    pub fn conflict(resource: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", resource.qualified()),
        )
        .about(resource, name)
    }

    pub fn invalid(resource: &ResourceType, name: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {}",
                resource.kind,
                message.into()
            ),
        )
        .about(resource, name)
        .kind_in_details(resource)
    }

    /// Validation errors name the kind (`ConfigMap`), not the resource, in their details.
    fn kind_in_details(mut self, resource: &ResourceType) -> ApiError {
        if let Some(details) = self.details.as_mut() {
            details["kind"] = json!(resource.kind);
        }
        self
    }

    /// A request the API server cannot process (`422`), about no object.
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// A container's log, as the kubelet keeps it.
#[derive(Debug, Default)]
pub struct LogBuffer {
    /// (RFC 3339 time, line)
    pub lines: Vec<(String, String)>,
    /// The container has terminated: a follower stops at the end.
    pub finished: bool,
}

/// A page of a list.
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

type Snapshot = Arc<BTreeMap<Key, Arc<Value>>>;

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches must start at or after this resourceVersion; older ones get 410 Gone.
    oldest_watchable: u64,
    snapshots: VecDeque<(u64, Snapshot)>,
    sender: broadcast::Sender<Arc<Change>>,
    uids: u64,
    names: u64,
    pub logs: HashMap<(String, String, String), LogBuffer>,
    log_notify: tokio::sync::watch::Sender<u64>,
}

/// The current time as Kubernetes writes it (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(object: &Value, field: &str) -> Option<String> {
    object
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The names of a pod's `containers` or `initContainers`.
pub fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let map = target.as_object_mut().expect("made an object");
            for (key, value) in patch {
                if value.is_null() {
                    map.remove(key);
                } else {
                    merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Store {
    pub fn new(history_limit: usize) -> Store {
        let (sender, _) = broadcast::channel(65_536);
        let (log_notify, _) = tokio::sync::watch::channel(0);
        let mut store = Store {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_watchable: 0,
            snapshots: VecDeque::new(),
            sender,
            uids: 0,
            names: 0,
            logs: HashMap::new(),
            log_notify,
        };
        for namespace in ["default", "kube-system", "kube-public"] {
            let ns =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
            store
                .create(0, "", ns)
                .expect("the built-in namespaces are new");
        }
        store
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }

    pub fn log_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log_notify.subscribe()
    }

    /// Forgets the change history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_watchable = self.rv;
        self.snapshots.clear();
    }

    fn publish(&mut self, key: Key, kind: ChangeKind, object: Arc<Value>, old: Option<Arc<Value>>) {
        let change = Arc::new(Change {
            rv: self.rv,
            key,
            kind,
            object,
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.rv;
            }
        }
        let _ = self.sender.send(change);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn resource(index: usize) -> &'static ResourceType {
        &RESOURCES[index]
    }

    pub fn get(
        &self,
        resource: usize,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.objects
            .get(&(resource, namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(Self::resource(resource), name))
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects
            .contains_key(&(0, String::new(), namespace.to_owned()))
    }

    /// The name of an object to create: its own, or one made from its `generateName`;
    /// refused when it is not a valid name.
    fn new_name(&mut self, rt: &ResourceType, object: &Value) -> Result<String, ApiError> {
        let name = match (
            meta(object, "name").filter(|n| !n.is_empty()),
            meta(object, "generateName"),
        ) {
            (Some(name), _) => name,
            (None, Some(prefix)) => {
                self.names += 1;
                let suffix: String = format!("{:05x}", (self.names * 2_654_435_761) % 0xfffff)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_digit() {
                            (b'b' + (c as u8 - b'0')) as char
                        } else {
                            c
                        }
                    })
                    .collect();
                format!("{prefix}{suffix}")
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        };
        if let Some(problem) = invalid_name(rt, &name) {
            return Err(ApiError::invalid(
                rt,
                &name,
                format!("metadata.name: Invalid value: \"{name}\": {problem}"),
            ));
        }
        Ok(name)
    }

    pub fn create(
        &mut self,
        resource: usize,
        namespace: &str,
        mut object: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let rt = Self::resource(resource);
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was in an unknown format",
            ));
        }
        if object.get("metadata").is_none_or(|m| !m.is_object()) {
            object["metadata"] = json!({});
        }
        if rt.namespaced {
            match meta(&object, "namespace") {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
                }
                _ => object["metadata"]["namespace"] = json!(namespace),
            }
            if !self.namespace_exists(namespace) {
                return Err(ApiError::not_found(Self::resource(0), namespace));
            }
        }
        let name = self.new_name(rt, &object)?;
        let key = (
            resource,
            if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        self.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uids);
        let rv = self.next_rv();
        let metadata = object["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        metadata.insert("name".into(), json!(name));
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        metadata.insert("creationTimestamp".into(), json!(now()));
        metadata.remove("deletionTimestamp");
        if object.get("spec").is_some() {
            object["metadata"]["generation"] = json!(1);
        }
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        default_on_create(rt, &mut object, &uid);
        let object = Arc::new(object);
        self.objects.insert(key.clone(), object.clone());
        self.publish(key, ChangeKind::Added, object.clone(), None);
        Ok(object)
    }

    /// The objects of `resource` in `namespace` whose label `key` has `value`, for tests'
    /// assertions.
    pub fn labelled(
        &self,
        resource: usize,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> Vec<Arc<Value>> {
        self.objects
            .iter()
            .filter(|((r, ns, _), object)| {
                *r == resource
                    && ns == namespace
                    && object
                        .pointer("/metadata/labels")
                        .and_then(|l| l.get(key))
                        .and_then(Value::as_str)
                        == Some(value)
            })
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// A page of objects of `resource` (in `namespace`, or all namespaces when `None`).
    pub fn list(
        &mut self,
        resource: usize,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let (snapshot_rv, snapshot, start_after) = match continue_token {
            Some(token) => {
                let (rv, after) = decode_continue(token)?;
                let snapshot = self
                    .snapshots
                    .iter()
                    .find(|(r, _)| *r == rv)
                    .map(|(_, s)| s.clone())
                    .ok_or_else(|| ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."))?;
                (rv, snapshot, Some(after))
            }
            None => (self.rv, Arc::new(BTreeMap::new()), None),
        };
        let source: &BTreeMap<Key, Arc<Value>> = if continue_token.is_some() {
            &snapshot
        } else {
            &self.objects
        };
        let lower = match (&start_after, namespace) {
            (Some(after), _) => std::ops::Bound::Excluded(after.clone()),
            (None, Some(ns)) => std::ops::Bound::Included((resource, ns.to_owned(), String::new())),
            (None, None) => std::ops::Bound::Included((resource, String::new(), String::new())),
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0usize;
        let mut truncated = false;
        for (key, object) in source.range((lower, std::ops::Bound::Unbounded)) {
            if key.0 != resource || namespace.is_some_and(|ns| key.1 != ns) {
                break;
            }
            if !labels.matches(object) || !fields.matches(object) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                truncated = true;
                remaining += 1;
                continue;
            }
            items.push(object.clone());
            last_key = Some(key.clone());
        }
        let continue_token = if truncated {
            if continue_token.is_none() {
                self.snapshots
                    .push_back((snapshot_rv, Arc::new(self.objects.clone())));
                while self.snapshots.len() > 8 {
                    self.snapshots.pop_front();
                }
            }
            last_key.map(|k| encode_continue(snapshot_rv, &k))
        } else {
            None
        };
        Ok(ListPage {
            items,
            resource_version: snapshot_rv,
            continue_token,
            remaining: truncated.then_some(remaining),
        })
    }

    /// Changes after `from` for a watch, or 410 Gone if they are no longer kept.
    pub fn history_since(&self, from: u64) -> Result<Vec<Arc<Change>>, ApiError> {
        if from < self.oldest_watchable {
            return Err(ApiError::gone(format!(
                "too old resource version: {from} ({})",
                self.oldest_watchable
            )));
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > from)
            .cloned()
            .collect())
    }

    /// All objects of a resource, for a watch that starts with the current state.
    pub fn current(&self, resource: usize, namespace: Option<&str>) -> Vec<Arc<Value>> {
        self.objects
            .iter()
            .filter(|(k, _)| k.0 == resource && namespace.is_none_or(|ns| k.1 == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Appends a line to a container's log.
    pub fn append_log(&mut self, namespace: &str, pod: &str, container: &str, line: &str) {
        let buffer = self
            .logs
            .entry((namespace.to_owned(), pod.to_owned(), container.to_owned()))
            .or_default();
        buffer.lines.push((now(), line.to_owned()));
        self.log_notify.send_modify(|n| *n += 1);
    }

    pub fn finish_log(&mut self, namespace: &str, pod: &str, container: &str) {
        self.logs
            .entry((namespace.to_owned(), pod.to_owned(), container.to_owned()))
            .or_default()
            .finished = true;
        self.log_notify.send_modify(|n| *n += 1);
    }

    /// Loads many objects at once (one change each), for scale tests.
    pub fn preload(&mut self, objects: Vec<Value>) -> Result<usize, ApiError> {
        let mut created = 0;
        for object in objects {
            let api_version = object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
            let resource = crate::resources::index_of_kind(api_version, kind).ok_or_else(|| {
                ApiError::bad_request(format!("no resource for {api_version} {kind}"))
            })?;
            let namespace = meta(&object, "namespace").unwrap_or_else(|| "default".into());
            if RESOURCES[resource].namespaced && !self.namespace_exists(&namespace) {
                self.create(0, "", json!({"metadata": {"name": namespace}}))?;
            }
            self.create(resource, &namespace, object)?;
            created += 1;
        }
        Ok(created)
    }
}
