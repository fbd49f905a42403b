//! Spans for units of work and webhook deliveries, with the `tracing` feature. Without it,
//! these helpers compile to the bare future: no span, no field, no cost.
//!
//! Fields carry ids and outcomes only, never user data: a unit's `kind` (`write`, `read`,
//! `member`, `service`), `org` (the organization id, empty for none), `outcome` (`ok` or
//! `err`) and `elapsed_us`; a delivery's `message_id`, `event_type` and `outcome` (the
//! [`Outcome`](crate::clerk::Outcome) or the refusal's [`ErrorKind`](crate::ErrorKind)).

use std::future::Future;

use crate::OrgId;

/// Runs `unit` inside a `tenancy.unit` span.
#[cfg(feature = "tracing")]
pub(crate) async fn unit<T, E>(
    kind: &'static str,
    org: Option<OrgId>,
    unit: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "tenancy.unit",
        kind,
        org = tracing::field::display(org.map(|o| o.to_string()).unwrap_or_default()),
        outcome = tracing::field::Empty,
        elapsed_us = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let result = unit.instrument(span.clone()).await;
    span.record("outcome", if result.is_ok() { "ok" } else { "err" });
    span.record(
        "elapsed_us",
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    );
    result
}

/// Without the `tracing` feature: the future itself.
#[cfg(not(feature = "tracing"))]
#[inline(always)]
pub(crate) async fn unit<T, E>(
    _kind: &'static str,
    _org: Option<OrgId>,
    unit: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    unit.await
}

/// A webhook delivery's span: opened before verification, filled in as the delivery is
/// verified, parsed and applied.
#[cfg(all(feature = "tracing", feature = "clerk"))]
pub(crate) struct Delivery(tracing::Span);

#[cfg(all(not(feature = "tracing"), feature = "clerk"))]
pub(crate) struct Delivery;

#[cfg(feature = "clerk")]
impl Delivery {
    pub(crate) fn start() -> Self {
        #[cfg(feature = "tracing")]
        return Delivery(tracing::info_span!(
            "tenancy.webhook",
            message_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
            outcome = tracing::field::Empty,
        ));
        #[cfg(not(feature = "tracing"))]
        Delivery
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn verified(&self, message_id: &str) {
        #[cfg(feature = "tracing")]
        self.0.record("message_id", message_id);
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn parsed(&self, event_type: &str) {
        #[cfg(feature = "tracing")]
        self.0.record("event_type", event_type);
    }

    /// Runs the rest of the delivery inside the span and records how it ended.
    pub(crate) async fn run<F>(
        &self,
        delivery: F,
    ) -> Result<crate::clerk::Outcome, crate::clerk::SyncError>
    where
        F: Future<Output = Result<crate::clerk::Outcome, crate::clerk::SyncError>>,
    {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            let result = delivery.instrument(self.0.clone()).await;
            match &result {
                Ok(outcome) => self.0.record("outcome", tracing::field::debug(outcome)),
                Err(e) => self.0.record("outcome", tracing::field::debug(e.kind())),
            };
            result
        }
        #[cfg(not(feature = "tracing"))]
        delivery.await
    }
}
