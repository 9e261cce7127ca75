//! What the server hands webhook deliveries to (`POST /hooks/github`): a [`Webhooks`]
//! implementation (GitHub's, in `kubeci-github-api`), or [`NoWebhooks`] refusing them all.

use std::future::Future;
use std::pin::Pin;

/// One webhook delivery as the server received it.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// `X-GitHub-Event`.
    pub event: Option<String>,
    /// `X-GitHub-Delivery`.
    pub id: Option<String>,
    /// `X-Hub-Signature-256`.
    pub signature: Option<String>,
    pub body: Vec<u8>,
    /// The signature was checked while the body arrived (by [`Webhooks::check_body`]).
    pub verified: bool,
}

/// Checks a delivery's body while it arrives, chunk by chunk (its signature): the body is
/// read once, and a forged one is known when its last byte is.
pub trait BodyCheck: Send {
    fn update(&mut self, chunk: &[u8]);
    /// Whether the body is what its headers claim (else `deliver` refuses it).
    fn finish(self: Box<Self>) -> bool;
}

/// The answer to a delivery: an HTTP status and a JSON body saying what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAnswer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// What handles webhook deliveries (`POST /hooks/github`).
pub trait Webhooks: Send + Sync + 'static {
    fn deliver(
        &self,
        delivery: Delivery,
    ) -> Pin<Box<dyn Future<Output = DeliveryAnswer> + Send + '_>>;
    /// The check of the body of delivery `head` (its headers; no body yet), or the answer
    /// refusing it before any of its body is read (no secret, no or a malformed
    /// signature). `None`: the body is checked by `deliver`.
    fn check_body(&self, _head: &Delivery) -> Result<Option<Box<dyn BodyCheck>>, DeliveryAnswer> {
        Ok(None)
    }
    /// Deliveries by event and outcome, calls made to GitHub.
    fn metrics(&self) -> Vec<crate::metrics::Family> {
        Vec::new()
    }
}

/// Webhooks when none are configured: every delivery is refused.
pub struct NoWebhooks;

impl NoWebhooks {
    fn refusal() -> DeliveryAnswer {
        DeliveryAnswer {
            status: 401,
            body: serde_json::json!({"error": {"code": "no-webhook-secret", "message": "kubeci has no GitHub webhook secret configured, so it accepts no delivery (--github-webhook-secret-file)"}}),
        }
    }
}

impl Webhooks for NoWebhooks {
    fn deliver(&self, _: Delivery) -> Pin<Box<dyn Future<Output = DeliveryAnswer> + Send + '_>> {
        Box::pin(async { NoWebhooks::refusal() })
    }

    fn check_body(&self, _: &Delivery) -> Result<Option<Box<dyn BodyCheck>>, DeliveryAnswer> {
        Err(NoWebhooks::refusal())
    }
}
