//! What can go wrong with the archive, each failure named after what failed.

/// Why an archive operation failed. Each variant names the object (its key under the
/// archive's URL) it failed on, so an error on one build's object concerns that build only.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// `--archive URL` is not an archive URL kubeci can use.
    #[error("archive URL `{url}`: {problem}")]
    Url { url: String, problem: String },
    /// A namespace, job or step name that cannot be part of an object key.
    #[error("{what} `{value}` cannot name an object in the archive: {problem}")]
    Name {
        what: &'static str,
        value: String,
        problem: String,
    },
    /// The store could not be set up from the URL and the environment (a missing region,
    /// credentials, an endpoint that is not a URL, a directory that cannot be made).
    #[error("cannot open the archive {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading an object failed (the store unreachable, a timeout, access denied).
    #[error("cannot read {key} from the archive: {source}")]
    Read {
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// Writing an object failed.
    #[error("cannot write {key} to the archive: {source}")]
    Write {
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// Deleting an object failed.
    #[error("cannot delete {key} from the archive: {source}")]
    Delete {
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// Listing the objects under a key failed.
    #[error("cannot list {prefix} in the archive: {source}")]
    List {
        prefix: String,
        #[source]
        source: object_store::Error,
    },
    /// An object is there but its bytes are not what kubeci writes there: cut short,
    /// written by another tool, or of another type.
    #[error(
        "{key} in the archive is not {expected}: {source} \
         (cut short, or written by another tool? write the build again, or delete the object)"
    )]
    Decode {
        key: String,
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A record or index object larger than any kubeci writes: not read.
    #[error(
        "{key} in the archive is not kubeci's: it is {size} bytes, more than the {limit} \
         a record or index object may be (written by another tool? delete the object)"
    )]
    TooLarge { key: String, size: u64, limit: u64 },
    /// A log object is not in kubeci's log format (see docs/archive.md).
    #[error("{key} in the archive is not a kubeci log: at byte {offset}, {problem}")]
    BadLog {
        key: String,
        offset: u64,
        problem: String,
    },
    /// A log read was asked to start where no line starts.
    #[error("cannot read {key} from byte {from}: {problem}")]
    BadOffset {
        key: String,
        from: u64,
        problem: String,
    },
    /// A value could not be written as JSON (a map with non-string keys, a failing
    /// `Serialize`).
    #[error("cannot write {key} as JSON: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A line handed to `put_log` cannot be stored as one line.
    #[error("line {line} of the log for {key} cannot be archived: {problem}")]
    BadLine {
        key: String,
        line: u64,
        problem: String,
    },
    /// The bytes handed to `put_file` failed; nothing was written.
    #[error("reading the file to archive as {key} failed: {source}")]
    FileSource {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file handed to `put_file` is longer than it may be; nothing was written.
    #[error("{key} was not archived: it is longer than its limit of {limit} bytes")]
    FileOverLimit { key: String, limit: u64 },
    /// The stream of lines handed to `put_log` failed; nothing was written.
    #[error("reading the log to archive as {key} failed: {source}")]
    LogSource {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Other writers kept changing an index object between this writer's read and its
    /// conditional write.
    #[error("{key} changed under each of {attempts} attempts to update it (other writers)")]
    Contention { key: String, attempts: u32 },
}

impl ArchiveError {
    /// Whether the same call may succeed later unchanged: the store unreachable, a
    /// timeout, a server error, a writer racing this one, a log source that failed. Not
    /// retryable: a bad URL or name, missing credentials or permissions, bad bytes in an
    /// object, a value that cannot be encoded.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Read { source, .. }
            | Self::Write { source, .. }
            | Self::Delete { source, .. }
            | Self::List { source, .. } => store_error_is_retryable(source),
            Self::Contention { .. } | Self::LogSource { .. } | Self::FileSource { .. } => true,
            Self::Url { .. }
            | Self::Name { .. }
            | Self::Open { .. }
            | Self::Decode { .. }
            | Self::TooLarge { .. }
            | Self::BadLog { .. }
            | Self::BadOffset { .. }
            | Self::Encode { .. }
            | Self::BadLine { .. }
            | Self::FileOverLimit { .. } => false,
        }
    }
}

impl ArchiveError {
    /// The error as kubeci shows it to whoever reads its pages and API: what failed and on
    /// which key, and for a store's failure only its kind — never the store's answer, its
    /// endpoint or the request (an S3 `SignatureDoesNotMatch` answer names the access key
    /// id and the string it signed). The whole error is for kubeci's log.
    pub fn shown(&self) -> String {
        let (what, key, source) = match self {
            Self::Read { key, source } => ("read", key, source),
            Self::Write { key, source } => ("write", key, source),
            Self::Delete { key, source } => ("delete", key, source),
            Self::List { prefix, source } => ("list", prefix, source),
            other => return other.to_string(),
        };
        let place = match what {
            "write" => "to",
            "list" => "in",
            _ => "from",
        };
        let failure = store_failure(source);
        format!("cannot {what} {key} {place} the archive: {failure}")
    }
}

/// What kind of failure a store's error is, in words, without anything the store said.
fn store_failure(error: &object_store::Error) -> String {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => "not found".into(),
        E::PermissionDenied { .. } => "the store denied kubeci permission".into(),
        E::Unauthenticated { .. } => "the store did not accept kubeci's credentials".into(),
        E::Precondition { .. } | E::AlreadyExists { .. } => "another writer changed it".into(),
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            "the store does not support the request".into()
        }
        E::Generic { store, source } => match io_error(source.as_ref()) {
            Some(io) => format!("{store}: {io}"),
            None => format!(
                "the store ({store}) failed or could not be reached; kubeci's log says more"
            ),
        },
        _ => "the store failed; kubeci's log says more".into(),
    }
}

/// The local I/O error under `error`, if it is one (a file:// archive's: no secret).
fn io_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = error.source();
    }
    None
}

/// object_store reports HTTP failures (connection refused, timeouts, 5xx after its own
/// retries) and local I/O errors as `Generic`; a precondition lost to another writer as
/// `Precondition` or `AlreadyExists`. Everything else is about the request itself.
fn store_error_is_retryable(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    match error {
        E::Generic { source, .. } => !permission_denied(source.as_ref()),
        E::Precondition { .. } | E::AlreadyExists { .. } | E::JoinError { .. } => true,
        _ => false,
    }
}

/// A local file the process may not touch (object_store reports it as `Generic`).
fn permission_denied(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return true;
            }
        }
        next = error.source();
    }
    false
}

/// The crate's results.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
