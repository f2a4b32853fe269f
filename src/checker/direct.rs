//! The simulated backend as the workers' checker: it spends no WhatsApp account, so it
//! has nothing to pace or back off; a number it fails is an attempt like any other.
use async_trait::async_trait;

use super::{Backend, Checker, Failure, Outcome};

pub struct Direct<B> {
    backend: B,
}

impl<B: Backend> Direct<B> {
    pub fn new(backend: B) -> Direct<B> {
        Direct { backend }
    }
}

#[async_trait]
impl<B: Backend> Checker for Direct<B> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn max_batch(&self) -> usize {
        self.backend.max_batch()
    }

    fn cacheable(&self) -> bool {
        self.backend.cacheable()
    }

    async fn check(&self, e164: &[String]) -> Vec<Outcome> {
        let result = super::timed_check(&self.backend, e164).await;
        let mut outcomes = result.outcomes;
        outcomes.truncate(e164.len());
        let failure = result.error.map_or_else(
            || Failure::no_answer("the checker returned no answer for this number"),
            |e| Failure::of_call(&e),
        );
        outcomes.resize(e164.len(), Outcome::Retryable(failure));
        outcomes
    }
}
