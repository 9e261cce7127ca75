//! The fake GitHub's check runs: created, read, updated and listed as GitHub's Checks API does
//! it, refusing what GitHub refuses (a status or conclusion it does not know, a completed
//! check run without a conclusion, an output summary over 65,535 characters, more than 50
//! annotations in one request or an annotation without its fields) with `422`. Each check
//! run keeps every status it went through, for tests to follow, and its annotations —
//! appended, request after request, as GitHub keeps them — listed by
//! `GET …/check-runs/{id}/annotations`.

use serde_json::{json, Value};

/// A check run as the fake keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeCheckRun {
    pub id: u64,
    /// `owner/name` as written in the call.
    pub repo: String,
    pub head_sha: String,
    pub name: String,
    pub external_id: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub details_url: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub output: Value,
    /// Its buttons (`actions`).
    pub actions: Value,
    /// Every status it had, in order (`completed:<conclusion>` for the end).
    pub history: Vec<String>,
    /// Its annotations, in the order they came.
    pub annotations: Vec<Value>,
    /// How many annotations each request that carried some carried.
    pub annotation_requests: Vec<usize>,
}

const STATUSES: [&str; 3] = ["queued", "in_progress", "completed"];
const CONCLUSIONS: [&str; 8] = [
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];

/// Why GitHub would refuse these fields, if it would.
fn refusal(fields: &Value, current: Option<&FakeCheckRun>) -> Option<String> {
    let status = fields["status"]
        .as_str()
        .or(current.map(|c| c.status.as_str()))
        .unwrap_or("queued");
    if !STATUSES.contains(&status) {
        return Some(format!("status {status:?} is not one of {STATUSES:?}"));
    }
    let conclusion = fields["conclusion"]
        .as_str()
        .or(current.and_then(|c| c.conclusion.as_deref()));
    if let Some(conclusion) = conclusion {
        if !CONCLUSIONS.contains(&conclusion) {
            return Some(format!(
                "conclusion {conclusion:?} is not one of {CONCLUSIONS:?}"
            ));
        }
    }
    if status == "completed" && conclusion.is_none() {
        return Some("a completed check run needs a conclusion".into());
    }
    for action in fields["actions"].as_array().into_iter().flatten() {
        let within = |key: &str, most: usize| {
            action[key]
                .as_str()
                .is_some_and(|t| !t.is_empty() && t.chars().count() <= most)
        };
        if !(within("label", 20) && within("description", 40) && within("identifier", 20)) {
            return Some(format!(
                "action {action} needs a label (20), description (40) and identifier (20)"
            ));
        }
    }
    if !fields["output"].is_null() {
        if fields["output"]["title"].as_str().is_none_or(str::is_empty) {
            return Some("output needs a title".into());
        }
        let summary = fields["output"]["summary"].as_str().unwrap_or("");
        if summary.is_empty() || summary.chars().count() > 65_535 {
            return Some("output.summary must be 1 to 65535 characters".into());
        }
        return annotations_refusal(&fields["output"]["annotations"]);
    }
    None
}

const LEVELS: [&str; 3] = ["notice", "warning", "failure"];

/// GitHub's limit on an annotation's message and raw details ("64 KB").
const ANNOTATION_TEXT: usize = 64 * 1024;

/// Why GitHub would refuse these annotations, if it would.
fn annotations_refusal(annotations: &Value) -> Option<String> {
    if annotations.is_null() {
        return None;
    }
    let Some(annotations) = annotations.as_array() else {
        return Some("output.annotations must be an array".into());
    };
    if annotations.len() > 50 {
        return Some(format!(
            "{} annotations in one request: at most 50",
            annotations.len()
        ));
    }
    for annotation in annotations {
        let text = |key: &str| annotation[key].as_str();
        let line = |key: &str| annotation[key].as_u64().filter(|l| *l >= 1);
        let fine = text("path").is_some_and(|p| !p.is_empty())
            && line("start_line").is_some()
            && line("end_line") >= line("start_line")
            && text("annotation_level").is_some_and(|l| LEVELS.contains(&l))
            && text("message").is_some_and(|m| !m.is_empty() && m.len() <= ANNOTATION_TEXT)
            && text("raw_details").is_none_or(|d| d.len() <= ANNOTATION_TEXT)
            && text("title").is_none_or(|t| t.chars().count() <= 255);
        if !fine {
            return Some(format!("annotation {annotation} is not valid"));
        }
    }
    None
}

fn step(run: &FakeCheckRun) -> String {
    match &run.conclusion {
        Some(conclusion) if run.status == "completed" => format!("completed:{conclusion}"),
        _ => run.status.clone(),
    }
}

impl FakeCheckRun {
    fn apply(&mut self, fields: &Value) {
        let text = |key: &str| fields[key].as_str().map(str::to_owned);
        if let Some(status) = text("status") {
            self.status = status;
        }
        if let Some(conclusion) = text("conclusion") {
            self.conclusion = Some(conclusion);
            self.status = "completed".into();
        }
        self.details_url = text("details_url").unwrap_or(self.details_url.clone());
        self.started_at = text("started_at").or(self.started_at.take());
        self.completed_at = text("completed_at").or(self.completed_at.take());
        if !fields["output"].is_null() {
            let mut output = fields["output"].clone();
            if let Some(Value::Array(annotations)) =
                output.as_object_mut().and_then(|o| o.remove("annotations"))
            {
                self.annotation_requests.push(annotations.len());
                self.annotations.extend(annotations);
            }
            self.output = output;
        }
        if !fields["actions"].is_null() {
            self.actions = fields["actions"].clone();
        }
        let now = step(self);
        if self.history.last() != Some(&now) {
            self.history.push(now);
        }
    }

    pub fn json(&self) -> Value {
        let mut output = self.output.clone();
        if let Some(output) = output.as_object_mut() {
            output.insert("annotations_count".into(), self.annotations.len().into());
        }
        json!({
            "id": self.id, "name": self.name, "head_sha": self.head_sha,
            "external_id": self.external_id, "status": self.status,
            "conclusion": self.conclusion, "details_url": self.details_url,
            "started_at": self.started_at, "completed_at": self.completed_at,
            "output": output, "actions": self.actions,
        })
    }
}

/// `POST /repos/{repo}/check-runs`: the new check run, or why not.
pub(super) fn create(
    runs: &mut Vec<FakeCheckRun>,
    repo: &str,
    fields: &Value,
) -> Result<Value, String> {
    if let Some(why) = refusal(fields, None) {
        return Err(why);
    }
    let (Some(name), Some(head_sha)) = (fields["name"].as_str(), fields["head_sha"].as_str())
    else {
        return Err("name and head_sha are required".into());
    };
    let mut run = FakeCheckRun {
        id: runs.len() as u64 + 1,
        repo: repo.to_owned(),
        head_sha: head_sha.to_owned(),
        name: name.to_owned(),
        external_id: fields["external_id"].as_str().unwrap_or("").to_owned(),
        status: "queued".into(),
        conclusion: None,
        details_url: String::new(),
        started_at: None,
        completed_at: None,
        output: Value::Null,
        actions: Value::Null,
        history: Vec::new(),
        annotations: Vec::new(),
        annotation_requests: Vec::new(),
    };
    run.apply(fields);
    let answer = run.json();
    runs.push(run);
    Ok(answer)
}

/// `PATCH /repos/{repo}/check-runs/{id}`: the check run as updated; `None` when there is
/// none; why not when GitHub would refuse.
pub(super) fn update(
    runs: &mut [FakeCheckRun],
    repo: &str,
    id: u64,
    fields: &Value,
) -> Option<Result<Value, String>> {
    let run = runs
        .iter_mut()
        .find(|r| r.id == id && r.repo.eq_ignore_ascii_case(repo))?;
    if let Some(why) = refusal(fields, Some(run)) {
        return Some(Err(why));
    }
    run.apply(fields);
    Some(Ok(run.json()))
}

/// `GET /repos/{repo}/check-runs/{id}/annotations`: every annotation of the check run, in
/// the order they came (a page of them is the caller's); `None` when there is no such
/// check run.
pub(super) fn annotations(runs: &[FakeCheckRun], repo: &str, id: &str) -> Option<Vec<Value>> {
    runs.iter()
        .find(|r| id.parse() == Ok(r.id) && r.repo.eq_ignore_ascii_case(repo))
        .map(|run| run.annotations.clone())
}

/// `GET /repos/{repo}/commits/{sha}/check-runs` (see [`list`]) or
/// `GET /repos/{repo}/check-runs/{id}`: `None` when there is no such check run.
pub(super) fn get(
    runs: &[FakeCheckRun],
    repo: &str,
    segments: &[&str],
    check_name: Option<&str>,
) -> Option<Value> {
    match segments {
        [.., "commits", sha, "check-runs"] => Some(list(runs, repo, sha, check_name)),
        [.., "check-runs", id] => runs
            .iter()
            .find(|r| id.parse() == Ok(r.id) && r.repo.eq_ignore_ascii_case(repo))
            .map(FakeCheckRun::json),
        _ => None,
    }
}

/// `GET /repos/{repo}/commits/{sha}/check-runs?check_name=`: the latest first.
fn list(runs: &[FakeCheckRun], repo: &str, sha: &str, name: Option<&str>) -> Value {
    let found: Vec<Value> = runs
        .iter()
        .rev()
        .filter(|r| r.repo.eq_ignore_ascii_case(repo) && r.head_sha == sha)
        .filter(|r| name.is_none_or(|n| r.name == n))
        .map(FakeCheckRun::json)
        .collect();
    json!({"total_count": found.len(), "check_runs": found})
}
