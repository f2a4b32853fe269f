//! The bookkeeping of one claim: which of its chunks still have numbers to check, and
//! how to let go of each (done, retry later, or deferred) once they are all dealt with.
use std::time::Duration;

use crate::store::rows::{ChunkEnd, ChunkKey, Claim, Claimed};

/// What became of a claimed number in this claim.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Settled {
    Answered,
    Retry,
    /// Not tried: the checker paused; again after this long.
    Deferred(Duration),
}

/// The chunks of one claim: how many of their numbers are still to be checked, and
/// whether any is to be tried again or was deferred, to know how to let go of each.
pub struct ChunkTally {
    chunks: Vec<(ChunkKey, ChunkProgress)>,
    /// How long the deferred chunks wait: the longest pause asked for.
    pub defer_for: Duration,
}

#[derive(Default)]
struct ChunkProgress {
    unsettled: usize,
    retry: bool,
    deferred: bool,
    ended: bool,
}

impl ChunkTally {
    pub fn new(claim: &Claim) -> ChunkTally {
        let mut chunks: Vec<(ChunkKey, ChunkProgress)> = claim
            .chunks
            .iter()
            .map(|&key| (key, ChunkProgress::default()))
            .collect();
        chunks.sort_unstable_by_key(|(key, _)| *key);
        for c in &claim.numbers {
            if let Some(p) = find(&mut chunks, c.chunk_key()) {
                p.unsettled += 1;
            }
        }
        ChunkTally {
            chunks,
            defer_for: Duration::ZERO,
        }
    }

    pub fn settle(&mut self, c: &Claimed, how: Settled) {
        if let Some(p) = find(&mut self.chunks, c.chunk_key()) {
            p.unsettled = p.unsettled.saturating_sub(1);
            match how {
                Settled::Answered => {}
                Settled::Retry => p.retry = true,
                Settled::Deferred(retry_in) => {
                    p.deferred = true;
                    self.defer_for = self.defer_for.max(retry_in);
                }
            }
        }
    }

    /// The chunk's lease was taken over (or the batch cancelled): its numbers are
    /// someone else's now, to be neither asked nor written nor let go of here.
    pub fn lose(&mut self, key: ChunkKey) {
        if let Some(p) = find(&mut self.chunks, key) {
            p.ended = true;
        }
    }

    pub fn holds(&self, key: ChunkKey) -> bool {
        self.chunks
            .binary_search_by_key(&key, |(k, _)| *k)
            .is_ok_and(|i| !self.chunks[i].1.ended)
    }

    /// Chunks still held, for renewing or releasing their lease.
    pub fn held(&self) -> Vec<ChunkKey> {
        self.chunks
            .iter()
            .filter(|(_, p)| !p.ended)
            .map(|(key, _)| *key)
            .collect()
    }

    /// The chunks whose numbers are all settled (all of them on the `last` write), to let go of.
    pub fn take_ends(&mut self, last: bool) -> Vec<(ChunkKey, ChunkEnd)> {
        let mut ends = Vec::new();
        for (key, p) in &mut self.chunks {
            if p.ended || (p.unsettled > 0 && !last) {
                continue;
            }
            p.ended = true;
            let end = if p.deferred {
                ChunkEnd::Defer
            } else if p.retry || p.unsettled > 0 {
                ChunkEnd::Retry
            } else {
                ChunkEnd::Done
            };
            ends.push((*key, end));
        }
        ends
    }
}

fn find(chunks: &mut [(ChunkKey, ChunkProgress)], key: ChunkKey) -> Option<&mut ChunkProgress> {
    chunks
        .binary_search_by_key(&key, |(k, _)| *k)
        .ok()
        .map(|i| &mut chunks[i].1)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn claim(chunks: &[(ChunkKey, usize)]) -> Claim {
        let mut numbers = Vec::new();
        for (key, n) in chunks {
            for i in 0..*n as i32 {
                numbers.push(Claimed {
                    batch_id: key.batch_id,
                    idx: key.first_idx + i,
                    chunk: key.first_idx,
                    e164: format!("+1201555{i:04}"),
                    attempts: 1,
                    queued_at: chrono::Utc::now(),
                });
            }
        }
        Claim {
            token: Uuid::new_v4(),
            chunks: chunks.iter().map(|(key, _)| *key).collect(),
            numbers,
        }
    }

    fn key(first_idx: i32) -> ChunkKey {
        ChunkKey {
            batch_id: Uuid::nil(),
            first_idx,
        }
    }

    #[test]
    fn a_chunk_ends_with_the_write_that_settles_its_last_number() {
        let claim = claim(&[(key(0), 2), (key(50), 1)]);
        let mut tally = ChunkTally::new(&claim);
        tally.settle(&claim.numbers[0], Settled::Answered);
        assert!(
            tally.take_ends(false).is_empty(),
            "one number of chunk 0 left"
        );
        tally.settle(&claim.numbers[1], Settled::Answered);
        assert_eq!(tally.take_ends(false), [(key(0), ChunkEnd::Done)]);
        assert_eq!(tally.held(), [key(50)]);
        tally.settle(&claim.numbers[2], Settled::Answered);
        assert_eq!(tally.take_ends(true), [(key(50), ChunkEnd::Done)]);
        assert!(tally.held().is_empty());
    }

    #[test]
    fn retries_and_deferrals_decide_how_a_chunk_is_let_go() {
        let claim = claim(&[(key(0), 2), (key(50), 2), (key(100), 1)]);
        let mut tally = ChunkTally::new(&claim);
        let n = &claim.numbers;
        tally.settle(&n[0], Settled::Answered);
        tally.settle(&n[1], Settled::Retry);
        tally.settle(&n[2], Settled::Deferred(Duration::from_secs(5)));
        tally.settle(&n[3], Settled::Deferred(Duration::from_secs(30)));
        // The last write ends every chunk, unsettled numbers counting as retries.
        assert_eq!(
            tally.take_ends(true),
            [
                (key(0), ChunkEnd::Retry),
                (key(50), ChunkEnd::Defer),
                (key(100), ChunkEnd::Retry),
            ]
        );
        assert_eq!(
            tally.defer_for,
            Duration::from_secs(30),
            "the longest pause"
        );
    }

    #[test]
    fn a_chunk_left_with_no_pending_numbers_is_let_go_at_the_first_write() {
        let claim = claim(&[(key(0), 0), (key(50), 1)]);
        let mut tally = ChunkTally::new(&claim);
        assert_eq!(tally.take_ends(false), [(key(0), ChunkEnd::Done)]);
    }

    #[test]
    fn a_lost_chunk_is_neither_held_nor_let_go() {
        let claim = claim(&[(key(0), 1), (key(50), 1)]);
        let mut tally = ChunkTally::new(&claim);
        tally.lose(key(0));
        assert!(!tally.holds(key(0)) && tally.holds(key(50)));
        assert_eq!(tally.held(), [key(50)]);
        tally.settle(&claim.numbers[1], Settled::Answered);
        assert_eq!(tally.take_ends(true), [(key(50), ChunkEnd::Done)]);
    }
}
