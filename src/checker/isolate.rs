//! Finding the number that breaks a request, before anything is counted against a
//! number: a failed request of many numbers is split in halves and each half asked again.
use std::future::Future;
use std::pin::Pin;

use super::{Backend, CallError, CallResult, Failure, Outcome};

/// Asks `numbers` through `request` (one upstream request each time it is called). When
/// `backend` puts a call's numbers in one request and its last call went well (`healthy`),
/// a failed request is split to find the number that breaks it (`isolate`); after a failed
/// call it is the gateway, and splitting would only hammer it.
pub async fn ask<F, Fut>(
    backend: &dyn Backend,
    numbers: &[String],
    healthy: bool,
    request: &F,
) -> CallResult
where
    F: Fn(Vec<String>) -> Fut + Sync,
    Fut: Future<Output = CallResult> + Send,
{
    if numbers.len() > 1 && healthy && backend.one_request_per_call() {
        isolate(numbers, request).await
    } else {
        request(numbers.to_vec()).await
    }
}

/// Asks `numbers` through `call` (one paced backend call per request). When a request of
/// several numbers fails with `CallError::Failed`, its halves are asked on their own: a
/// number whose request of one still fails while other numbers of the call were answered
/// is a failure of that number (`Outcome::Retryable`, an attempt); when nothing was
/// answered the whole call failed (the account's trouble, for the caller to decide).
/// Account trouble (rate limits, a lost session, ...) stops at once, keeping the answers
/// so far (a prefix, in order).
pub async fn isolate<F, Fut>(numbers: &[String], call: &F) -> CallResult
where
    F: Fn(Vec<String>) -> Fut + Sync,
    Fut: Future<Output = CallResult> + Send,
{
    let mut found = Found::default();
    search(numbers, call, &mut found).await;
    let answered = found
        .outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Retryable(_)))
        .count();
    match found.stop {
        Some(stop) => CallResult::failed(found.outcomes, stop),
        None if answered == 0 => CallResult::failed(
            Vec::new(),
            found
                .last_failure
                .unwrap_or_else(|| CallError::Failed("the request failed".into())),
        ),
        None => CallResult::ok(found.outcomes),
    }
}

#[derive(Default)]
struct Found {
    /// In input order, up to where the search stopped.
    outcomes: Vec<Outcome>,
    /// Account trouble that ended the search.
    stop: Option<CallError>,
    last_failure: Option<CallError>,
}

type Search<'a> = Pin<Box<dyn Future<Output = Group> + Send + 'a>>;

/// How a group of numbers fared.
#[derive(PartialEq)]
enum Group {
    /// Some were answered (or the search stopped).
    Answered,
    /// Every request in it failed.
    Failed,
}

fn search<'a, F, Fut>(numbers: &'a [String], call: &'a F, found: &'a mut Found) -> Search<'a>
where
    F: Fn(Vec<String>) -> Fut + Sync,
    Fut: Future<Output = CallResult> + Send,
{
    Box::pin(async move {
        let result = call(numbers.to_vec()).await;
        let error = match result.error {
            None => {
                found.outcomes.extend(result.outcomes);
                return Group::Answered;
            }
            Some(error) => error,
        };
        if !matches!(error, CallError::Failed(_)) || !result.outcomes.is_empty() {
            // Account trouble, or a call that stopped part-way: keep what came, stop here.
            found.outcomes.extend(result.outcomes);
            found.stop = Some(error);
            return Group::Answered;
        }
        if numbers.len() == 1 {
            found
                .outcomes
                .push(Outcome::Retryable(Failure::of_call(&error)));
            found.last_failure = Some(error);
            return Group::Failed;
        }
        let (left, right) = numbers.split_at(numbers.len() / 2);
        let before = found.outcomes.len();
        let first = search(left, call, found).await;
        if found.stop.is_some() {
            return Group::Answered;
        }
        // Two nested groups failing whole: the gateway, not a number. Stop asking.
        if first == Group::Failed && left.len() > 1 {
            found.outcomes.truncate(before);
            found.outcomes.extend(
                numbers
                    .iter()
                    .map(|_| Outcome::Retryable(Failure::of_call(&error))),
            );
            return Group::Failed;
        }
        let second = search(right, call, found).await;
        if first == Group::Failed && second == Group::Failed {
            Group::Failed
        } else {
            Group::Answered
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A gateway that fails any request containing one of `poison`, or every request.
    struct Gateway {
        poison: Vec<&'static str>,
        down: bool,
        asked: Mutex<Vec<Vec<String>>>,
    }

    impl Gateway {
        async fn call(&self, numbers: Vec<String>) -> CallResult {
            self.asked.lock().unwrap().push(numbers.clone());
            if self.down || numbers.iter().any(|n| self.poison.contains(&n.as_str())) {
                return CallResult::failed(vec![], CallError::Failed("HTTP 500".into()));
            }
            CallResult::ok(vec![Outcome::NotOnWhatsApp; numbers.len()])
        }
    }

    fn numbers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("+1201555{i:04}")).collect()
    }

    #[tokio::test]
    async fn one_poison_number_fails_alone_and_its_neighbours_are_answered() {
        let all = numbers(50);
        let gw = Gateway {
            poison: vec!["+12015550037"],
            down: false,
            asked: Mutex::new(vec![]),
        };
        let result = isolate(&all, &|n| gw.call(n)).await;
        assert!(result.error.is_none());
        assert_eq!(result.outcomes.len(), 50);
        for (i, o) in result.outcomes.iter().enumerate() {
            if i == 37 {
                assert!(
                    matches!(o, Outcome::Retryable(r) if r.detail.contains("500")),
                    "{o:?}"
                );
            } else {
                assert_eq!(*o, Outcome::NotOnWhatsApp, "number {i}");
            }
        }
        let requests = gw.asked.lock().unwrap().len();
        assert!(
            requests <= 13,
            "halving, not one request a number: {requests}"
        );
    }

    #[tokio::test]
    async fn a_gateway_failing_everything_is_the_calls_failure_after_a_few_requests() {
        let gw = Gateway {
            poison: vec![],
            down: true,
            asked: Mutex::new(vec![]),
        };
        let result = isolate(&numbers(50), &|n| gw.call(n)).await;
        assert!(matches!(result.error, Some(CallError::Failed(_))));
        assert!(
            result.outcomes.is_empty(),
            "nothing counted against a number"
        );
        assert!(gw.asked.lock().unwrap().len() <= 12);
    }

    #[tokio::test]
    async fn a_poisoned_pair_still_asks_the_other_half() {
        let gw = Gateway {
            poison: vec!["+12015550000"],
            down: false,
            asked: Mutex::new(vec![]),
        };
        let result = isolate(&numbers(2), &|n| gw.call(n)).await;
        assert!(result.error.is_none());
        assert!(matches!(result.outcomes[0], Outcome::Retryable(_)));
        assert_eq!(result.outcomes[1], Outcome::NotOnWhatsApp);
    }
}
