//! Checker backends: given normalized numbers, tell which are on WhatsApp.
use std::sync::Arc;

use async_trait::async_trait;

pub mod simulated;

/// What a checker says about one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    OnWhatsApp {
        wa_id: String,
        is_business: bool,
    },
    NotOnWhatsApp,
    /// Worth asking again later (rate limit, timeout, gateway down).
    Retryable(String),
    /// Asking again will not help; recorded as NUMBER_STATUS_ERROR at once.
    Final(String),
}

#[async_trait]
pub trait Checker: Send + Sync + 'static {
    /// Shown in logs, so an operator always knows which backend answered.
    fn name(&self) -> &'static str;

    /// Most numbers one `check` call may carry.
    fn max_batch(&self) -> usize;

    /// One outcome per number, in the same order. A backend that answers fewer
    /// must not be trusted for the rest: the worker treats missing ones as retryable.
    async fn check(&self, e164: &[String]) -> Vec<Outcome>;
}

pub type DynChecker = Arc<dyn Checker>;
