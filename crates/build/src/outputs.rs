//! What a build's job declares it leaves behind (`test_reports`, `artifacts`, and the
//! `workdir` their patterns are relative to), as recorded on the build's Job
//! ([`crate::keys::OUTPUTS`]): what the build collects, read from the build itself, so a
//! job changed while its build runs does not change what that build leaves.

use serde::{Deserialize, Serialize};

/// The audience of the token a build pod's collector presents to kubeci: a token minted
/// for it is good for nothing else (not the API server, not another service), and kubeci
/// takes no other token for a build's files.
pub const COLLECT_AUDIENCE: &str = "kubeci-collect";

/// The build pod's collector: its container's name, and the step its log is kept as.
pub const COLLECT_STEP: &str = "collect";

/// The longest path of a build's file, in bytes.
pub const MAX_FILE_PATH: usize = 1024;

/// A build's file path (relative to its `workdir`) is `/`-separated segments, each neither
/// empty nor `.` nor `..`, of at most 255 bytes without control characters; at most
/// [`MAX_FILE_PATH`] bytes in all. So it names a file under its build whatever writes it
/// (no segment climbs out, it is never absolute), and every store takes it as a key. Why
/// not, in words.
pub fn check_file_path(path: &str) -> Result<(), String> {
    let problem = if path.is_empty() {
        Some("it is empty".to_owned())
    } else if path.len() > MAX_FILE_PATH {
        Some(format!("it is longer than {MAX_FILE_PATH} bytes"))
    } else if let Some(c) = path.chars().find(|c| c.is_control()) {
        Some(format!("it has the control character {c:?}"))
    } else {
        path.split('/').find_map(|segment| match segment {
            "" => Some("it has an empty segment (a leading, trailing or double `/`)".to_owned()),
            "." | ".." => Some(format!("it has a `{segment}` segment")),
            s if s.len() > 255 => Some("a segment is longer than 255 bytes".to_owned()),
            _ => None,
        })
    };
    problem.map_or(Ok(()), Err)
}

/// The files a build collects once its `run_command` ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredOutputs {
    /// The job's `workdir`, normalized (`""`: the checkout's root).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_reports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

impl DeclaredOutputs {
    /// Whether the job declares any file to collect.
    pub fn any(&self) -> bool {
        !self.test_reports.is_empty() || !self.artifacts.is_empty()
    }

    /// As the annotation holds it (JSON).
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("strings serialize")
    }

    /// What [`DeclaredOutputs::to_annotation`] wrote; `None` when the build declares
    /// nothing or the text is not that (a build written by an older kubeci).
    pub fn from_annotation(text: Option<&str>) -> Option<DeclaredOutputs> {
        let declared: DeclaredOutputs = serde_json::from_str(text?).ok()?;
        declared.any().then_some(declared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_outputs_read_back_from_their_annotation() {
        let declared = DeclaredOutputs {
            workdir: "app".into(),
            test_reports: vec!["**/junit*.xml".into()],
            artifacts: vec!["dist/".into()],
        };
        let text = declared.to_annotation();
        assert_eq!(
            DeclaredOutputs::from_annotation(Some(&text)),
            Some(declared)
        );
        assert_eq!(DeclaredOutputs::from_annotation(Some("{}")), None);
        assert_eq!(DeclaredOutputs::from_annotation(Some("not json")), None);
        assert_eq!(DeclaredOutputs::from_annotation(None), None);
    }
}
