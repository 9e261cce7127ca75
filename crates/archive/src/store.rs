//! Opening the object store an [`ArchiveUrl`] names, with settings from the environment.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, RetryConfig};

use crate::error::{ArchiveError, Result};
use crate::url::{ArchiveUrl, Store};

/// How often a request is retried after a connection error, a timeout or a server error
/// (with object_store's exponential backoff from 100 ms), and for how long at most. Short:
/// kubeci retries a failed archive on its own pass, and a call must not hold a finalizer's
/// pass for minutes.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// The store `url` names, configured from `env` (`AWS_*` for s3://, `GOOGLE_*` and
/// `SERVICE_ACCOUNT` for gs://, `AZURE_*` for az://; names as object_store reads them).
pub(crate) fn open_store(
    url: &ArchiveUrl,
    env: &[(String, String)],
) -> Result<Arc<dyn ObjectStore>> {
    let open_error = |source: object_store::Error| ArchiveError::Open {
        url: url.to_string(),
        source: Box::new(source),
    };
    let store: Arc<dyn ObjectStore> = match &url.store {
        Store::File { root } => {
            // Made for kubeci's user alone, as its database is: builds' logs are not
            // everyone's to read (a directory already there keeps its owner's choice).
            use std::os::unix::fs::DirBuilderExt;
            let mut dir = std::fs::DirBuilder::new();
            dir.recursive(true).mode(0o700);
            dir.create(root).map_err(|source| ArchiveError::Open {
                url: url.to_string(),
                source: Box::new(source),
            })?;
            Arc::new(LocalFileSystem::new_with_prefix(root).map_err(open_error)?)
        }
        Store::S3 { bucket } => {
            install_crypto_provider();
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_retry(retry());
            for (key, value) in settings(env, "AWS_") {
                if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            Arc::new(builder.build().map_err(open_error)?)
        }
        Store::Gcs { bucket } => {
            install_crypto_provider();
            let mut builder = GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_retry(retry());
            if let Some((_, path)) = env.iter().find(|(k, _)| k == "SERVICE_ACCOUNT") {
                builder = builder.with_service_account_path(path);
            }
            for (key, value) in settings(env, "GOOGLE_") {
                if let Ok(key) = key.parse::<GoogleConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            Arc::new(builder.build().map_err(open_error)?)
        }
        Store::Azure { container } => {
            install_crypto_provider();
            let mut builder = MicrosoftAzureBuilder::new()
                .with_container_name(container)
                .with_retry(retry());
            for (key, value) in settings(env, "AZURE_") {
                if let Ok(key) = key.parse::<AzureConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            Arc::new(builder.build().map_err(open_error)?)
        }
    };
    Ok(store)
}

/// The variables starting with `prefix`, their names lowercased as object_store's keys
/// are (`AWS_ENDPOINT_URL` → `aws_endpoint_url`).
fn settings<'a>(
    env: &'a [(String, String)],
    prefix: &'a str,
) -> impl Iterator<Item = (String, &'a str)> + 'a {
    env.iter()
        .filter(move |(key, _)| key.starts_with(prefix))
        .map(|(key, value)| (key.to_ascii_lowercase(), value.as_str()))
}

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
        ..RetryConfig::default()
    }
}

/// object_store's HTTP client (reqwest, built without a crypto provider of its own) takes
/// rustls's process default. kubeci's other TLS clients (kube, kubeci-https) use `ring`,
/// so `ring` is installed as that default unless one already is: one provider in the
/// binary, and no client can panic for want of a default.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one between the check and this call; either wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
