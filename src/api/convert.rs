//! Stored rows to proto messages.
use chrono::{DateTime, Utc};

use crate::domain::batch::NumberState;
use crate::pb;
use crate::store::batches::{BatchRow, ResultRow};

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn batch_status(batch: &BatchRow) -> pb::BatchStatus {
    if batch.completed_at.is_some() {
        pb::BatchStatus::Completed
    } else {
        pb::BatchStatus::Processing
    }
}

pub fn number_result(row: &ResultRow) -> pb::NumberResult {
    pb::NumberResult {
        index: row.idx,
        phone_number: row.input.clone(),
        status: row.state().to_proto() as i32,
        e164: row.e164.clone().unwrap_or_default(),
        wa_id: row.wa_id.clone().unwrap_or_default(),
        is_business: row.is_business,
        region: row.region.clone().unwrap_or_default(),
        // A retry's last error is kept on the row, but a pending number has no answer yet.
        error: if row.state() == NumberState::Pending {
            String::new()
        } else {
            row.error.clone().unwrap_or_default()
        },
        checked_at: row.checked_at.map(timestamp),
        from_cache: row.from_cache,
        normalization_note: row.normalization_note.clone().unwrap_or_default(),
    }
}

/// Counters derived from the rows themselves, so they always add up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub completed: i32,
    pub failed: i32,
    pub cancelled: i32,
}

impl Counts {
    pub fn of(states: impl IntoIterator<Item = NumberState>) -> Counts {
        let mut c = Counts::default();
        for s in states {
            c.add(s);
        }
        c
    }

    pub fn add(&mut self, state: NumberState) {
        match state {
            s if s.is_definite() => self.completed += 1,
            NumberState::Error => self.failed += 1,
            NumberState::Cancelled => self.cancelled += 1,
            _ => {}
        }
    }

    pub fn pending(&self, total: i32) -> i32 {
        total - self.completed - self.failed - self.cancelled
    }
}

/// A batch row's own counters as a summary.
pub fn batch_summary(batch: &BatchRow) -> pb::BatchSummary {
    pb::BatchSummary {
        batch_id: batch.id.to_string(),
        status: batch_status(batch) as i32,
        total_numbers: batch.total_numbers,
        completed: batch.completed,
        failed: batch.failed,
        pending: batch.pending(),
        cancelled: batch.cancelled,
        created_at: Some(timestamp(batch.created_at)),
        completed_at: batch.completed_at.map(timestamp),
        credits_charged: batch.credits_charged,
        credits_refunded: batch.credits_refunded,
        request_id: batch.request_id.clone().unwrap_or_default(),
    }
}
