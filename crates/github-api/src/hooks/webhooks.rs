//! [`Webhooks`] for [`Hooks`]: the server's view of them — the body's signature checked as
//! it streams, the delivery handed over, and the metrics of deliveries and GitHub's API.

use std::future::Future;
use std::pin::Pin;

use kubeci_engine::api::{Backend, Delivery, DeliveryAnswer, Webhooks};

use super::{refusal, Hooks};

/// The answer to a delivery whose signature does not hold.
pub(super) fn signature_refusal(e: &kubeci_github::SignatureError) -> DeliveryAnswer {
    match e {
        kubeci_github::SignatureError::NoSecret => refusal(401, "no-webhook-secret", e.to_string()),
        e => refusal(401, "bad-signature", e.to_string()),
    }
}

/// [`kubeci_github::Verifier`] as the server's streaming body check.
struct SignatureCheck(kubeci_github::Verifier);

impl kubeci_engine::api::BodyCheck for SignatureCheck {
    fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    fn finish(self: Box<Self>) -> bool {
        self.0.finish().is_ok()
    }
}

impl<B: Backend> Webhooks for Hooks<B> {
    fn deliver(
        &self,
        delivery: Delivery,
    ) -> Pin<Box<dyn Future<Output = DeliveryAnswer> + Send + '_>> {
        Box::pin(self.handle(delivery))
    }

    fn check_body(
        &self,
        head: &Delivery,
    ) -> Result<Option<Box<dyn kubeci_engine::api::BodyCheck>>, DeliveryAnswer> {
        let secret = self.settings.secret.as_deref();
        match kubeci_github::Verifier::new(secret, head.signature.as_deref()) {
            Ok(verifier) => Ok(Some(Box::new(SignatureCheck(verifier)))),
            Err(e) => {
                let answer = signature_refusal(&e);
                super::delivery_span(head).in_scope(|| self.record(head.event.as_deref(), &answer));
                Err(answer)
            }
        }
    }

    fn metrics(&self) -> Vec<kubeci_engine::metrics::Family> {
        use kubeci_engine::metrics::{Family, Kind};
        let stats = self.github.stats();
        let mut families = vec![
            Family {
                samples: self
                    .counters
                    .samples("kubeci_webhook_deliveries_total", &["event", "status"]),
                ..Family::new(
                    "kubeci_webhook_deliveries_total",
                    "GitHub webhook deliveries, by event and the status kubeci answered.",
                    Kind::Counter,
                )
            },
            Family::new(
                "kubeci_github_api_calls_total",
                "Calls kubeci made to GitHub's API.",
                Kind::Counter,
            )
            .sample(Vec::new(), stats.calls as f64),
        ];
        if let Some(left) = stats.rate_limit_remaining {
            families.push(
                Family::new(
                    "kubeci_github_rate_limit_remaining",
                    "GitHub's X-RateLimit-Remaining in its last answer.",
                    Kind::Gauge,
                )
                .sample(Vec::new(), left as f64),
            );
        }
        if !stats.rate_limit_by_installation.is_empty() {
            let mut family = Family::new(
                "kubeci_github_installation_rate_limit_remaining",
                "GitHub's X-RateLimit-Remaining in its last answer to each installation of \
                 kubeci's App.",
                Kind::Gauge,
            );
            for (installation, left) in &stats.rate_limit_by_installation {
                family = family.sample(
                    vec![("installation", installation.to_string())],
                    *left as f64,
                );
            }
            families.push(family);
        }
        if stats.tokens_made > 0 {
            families.push(
                Family::new(
                    "kubeci_github_installation_tokens_total",
                    "Installation tokens kubeci's App made.",
                    Kind::Counter,
                )
                .sample(Vec::new(), stats.tokens_made as f64),
            );
        }
        families
    }
}
