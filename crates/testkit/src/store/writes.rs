//! Replacing and deleting objects as the API server does: preconditions, status
//! subresources, finalizers, generations, propagation to dependents.

use super::*;
use crate::resources::RESOURCES;
use serde_json::{json, Value};
use std::sync::Arc;

impl Store {
    /// The object being written, or 404.
    fn existing(
        &self,
        resource: usize,
        namespace: &str,
        name: &str,
    ) -> Result<(Key, Arc<Value>), ApiError> {
        let key = (resource, namespace.to_owned(), name.to_owned());
        let old = self.objects.get(&key).cloned();
        let old = old.ok_or_else(|| ApiError::not_found(Self::resource(resource), name))?;
        Ok((key, old))
    }

    /// Replaces an object (`subresource` = `status` changes only the status).
    pub fn update(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        object: Value,
        status_only: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let rt = Self::resource(resource);
        let (key, old) = self.existing(resource, namespace, name)?;
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was in an unknown format",
            ));
        }
        if let Some(body_name) = meta(&object, "name") {
            if body_name != name {
                return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
            }
        }
        if let Some(rv) = meta(&object, "resourceVersion").filter(|r| !r.is_empty()) {
            if Some(rv) != meta(&old, "resourceVersion") {
                return Err(ApiError::conflict(rt, name));
            }
        }
        let mut object = if status_only {
            status_update(&old, object)
        } else {
            spec_update(rt, &old, object, name)?
        };
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        object["metadata"]["name"] = json!(name);
        if rt.namespaced {
            object["metadata"]["namespace"] = json!(namespace);
        }
        object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if object == *old {
            return Ok(old);
        }
        // An object being deleted goes once its last finalizer is removed.
        let finalizers_left = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if old.pointer("/metadata/deletionTimestamp").is_some() && !finalizers_left {
            let rv = self.next_rv();
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let object = Arc::new(object);
            self.objects.remove(&key);
            self.logs
                .retain(|k, _| !(resource == 3 && k.0 == namespace && k.1 == name));
            self.publish(key, ChangeKind::Deleted, object.clone(), Some(old));
            return Ok(object);
        }
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        self.objects.insert(key.clone(), object.clone());
        self.publish(key, ChangeKind::Modified, object.clone(), Some(old));
        Ok(object)
    }

    /// Deletes an object, honouring finalizers and the propagation policy.
    pub fn delete(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        propagation: Option<&str>,
        precondition_uid: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let rt = Self::resource(resource);
        let (key, old) = self.existing(resource, namespace, name)?;
        let uid = meta(&old, "uid").unwrap_or_default();
        if precondition_uid.is_some_and(|p| p != uid) {
            return Err(ApiError::conflict(rt, name));
        }
        // batch/v1 Jobs orphan their pods unless a policy says otherwise (for
        // compatibility); every other resource deletes its dependents in the background.
        let policy = propagation.unwrap_or(if rt.plural == "jobs" {
            "Orphan"
        } else {
            "Background"
        });
        self.propagate_deletion(&uid, policy)?;
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            return Ok(self.mark_deleting(key, old));
        }
        if resource == 0 {
            let in_namespace: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.1 == name && RESOURCES[k.0].namespaced)
                .cloned()
                .collect();
            for k in in_namespace {
                let _ = self.delete(k.0, &k.1.clone(), &k.2.clone(), Some("Background"), None);
            }
        }
        let rv = self.next_rv();
        let mut object = (*old).clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        self.objects.remove(&key);
        if resource == 3 {
            self.logs.retain(|k, _| !(k.0 == namespace && k.1 == name));
        }
        self.publish(key, ChangeKind::Deleted, object.clone(), Some(old));
        Ok(object)
    }

    /// What deleting the owner whose uid is `uid` does to its dependents: with `Orphan`
    /// their owner reference goes, otherwise they are deleted too.
    fn propagate_deletion(&mut self, uid: &str, policy: &str) -> Result<(), ApiError> {
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for dependent in dependents {
            if policy == "Orphan" {
                if let Some(object) = self.objects.get(&dependent).cloned() {
                    let mut object = (*object).clone();
                    if let Some(refs) = object
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                    }
                    self.update(
                        dependent.0,
                        &dependent.1.clone(),
                        &dependent.2.clone(),
                        object,
                        false,
                    )?;
                }
            } else {
                let _ = self.delete(
                    dependent.0,
                    &dependent.1.clone(),
                    &dependent.2.clone(),
                    Some("Background"),
                    None,
                );
            }
        }
        Ok(())
    }

    /// An object with finalizers is only marked as being deleted (once).
    fn mark_deleting(&mut self, key: Key, old: Arc<Value>) -> Arc<Value> {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return old;
        }
        let mut object = (*old).clone();
        object["metadata"]["deletionTimestamp"] = json!(now());
        object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        self.objects.insert(key.clone(), object.clone());
        self.publish(key, ChangeKind::Modified, object.clone(), Some(old));
        object
    }
}

/// An update through `/status`: the spec stays as it was; the status and the labels and
/// annotations are taken, as the API server's status strategies do.
fn status_update(old: &Value, object: Value) -> Value {
    let status = object.get("status").cloned().unwrap_or(Value::Null);
    let labels = object["metadata"].get("labels").cloned();
    let annotations = object["metadata"].get("annotations").cloned();
    let mut object = old.clone();
    for (field, value) in [("labels", labels), ("annotations", annotations)] {
        match value {
            Some(value) => object["metadata"][field] = value,
            None => {
                if let Some(m) = object["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    match status {
        Value::Null => {
            object
                .as_object_mut()
                .expect("objects are maps")
                .remove("status");
        }
        status => object["status"] = status,
    }
    object
}

/// An update of the object itself: its status stays as it was (for resources with a
/// status subresource), immutable fields are checked, the server's metadata kept, and the
/// generation counts spec changes.
fn spec_update(
    rt: &ResourceType,
    old: &Value,
    mut object: Value,
    name: &str,
) -> Result<Value, ApiError> {
    if rt.has_status {
        match old.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                object
                    .as_object_mut()
                    .expect("objects are maps")
                    .remove("status");
            }
        }
    }
    check_immutable(rt, old, &object, name)?;
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
    ] {
        match old["metadata"].get(field) {
            Some(v) => object["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = object["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if object.get("spec") != old.get("spec") && object.get("spec").is_some() {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        object["metadata"]["generation"] = json!(generation + 1);
    }
    Ok(object)
}
