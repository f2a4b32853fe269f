//! Domain values as proto messages.
use chrono::{DateTime, Utc};

use crate::domain::batch::{
    BatchStatus, BatchSummary, Counts, NumberResult, NumberState, WatchEvent,
};
use crate::domain::numbering::{self, LineType};
use crate::pb;
use crate::service::{BatchPage, BatchResults, Cancelled, Checked};

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn status(status: BatchStatus) -> pb::BatchStatus {
    match status {
        BatchStatus::Processing => pb::BatchStatus::Processing,
        BatchStatus::Completed => pb::BatchStatus::Completed,
    }
}

/// The filter of a ListBatches request; unspecified lists every batch.
pub fn status_filter(value: i32) -> Option<BatchStatus> {
    match pb::BatchStatus::try_from(value) {
        Ok(pb::BatchStatus::Completed) => Some(BatchStatus::Completed),
        Ok(pb::BatchStatus::Processing) => Some(BatchStatus::Processing),
        _ => None,
    }
}

fn number_status(state: NumberState) -> pb::NumberStatus {
    match state {
        NumberState::Pending => pb::NumberStatus::Pending,
        NumberState::OnWhatsApp => pb::NumberStatus::OnWhatsapp,
        NumberState::NotOnWhatsApp => pb::NumberStatus::NotOnWhatsapp,
        NumberState::InvalidNumber => pb::NumberStatus::InvalidNumber,
        NumberState::Error => pb::NumberStatus::Error,
        NumberState::Cancelled => pb::NumberStatus::Cancelled,
    }
}

/// The domain's line types in the proto's order.
const LINE_TYPES: [(LineType, pb::LineType); 12] = [
    (LineType::Mobile, pb::LineType::Mobile),
    (LineType::FixedLine, pb::LineType::FixedLine),
    (LineType::FixedLineOrMobile, pb::LineType::FixedLineOrMobile),
    (LineType::Voip, pb::LineType::Voip),
    (LineType::TollFree, pb::LineType::TollFree),
    (LineType::PremiumRate, pb::LineType::PremiumRate),
    (LineType::SharedCost, pb::LineType::SharedCost),
    (LineType::PersonalNumber, pb::LineType::PersonalNumber),
    (LineType::Pager, pb::LineType::Pager),
    (LineType::Uan, pb::LineType::Uan),
    (LineType::Voicemail, pb::LineType::Voicemail),
    (LineType::Unknown, pb::LineType::Unknown),
];

fn line_type(t: Option<LineType>) -> pb::LineType {
    LINE_TYPES
        .iter()
        .find(|(domain, _)| Some(*domain) == t)
        .map_or(pb::LineType::Unspecified, |(_, proto)| *proto)
}

fn line_type_from_pb(value: i32) -> Option<LineType> {
    LINE_TYPES
        .iter()
        .find(|(_, proto)| *proto as i32 == value)
        .map(|(domain, _)| *domain)
}

pub fn number_result(r: NumberResult) -> pb::NumberResult {
    pb::NumberResult {
        index: r.index,
        phone_number: r.phone_number,
        status: number_status(r.state) as i32,
        e164: r.e164.unwrap_or_default(),
        wa_id: r.wa_id.unwrap_or_default(),
        is_business: r.is_business,
        region: r.region.unwrap_or_default(),
        error: r.error.unwrap_or_default(),
        checked_at: r.checked_at.map(timestamp),
        from_cache: r.from_cache,
        normalization_note: r.normalization_note.unwrap_or_default(),
        line_type: line_type(r.line_type) as i32,
        carrier: r.carrier.unwrap_or_default(),
    }
}

/// A result read back from the proto (the CLI's side of the wire).
pub fn result_from_pb(r: &pb::NumberResult) -> NumberResult {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    NumberResult {
        index: r.index,
        phone_number: r.phone_number.clone(),
        // The proto's statuses are numbered as the domain's states are.
        state: NumberState::from_db(r.status as i16),
        e164: text(&r.e164),
        wa_id: text(&r.wa_id),
        is_business: r.is_business,
        region: text(&r.region),
        error: text(&r.error),
        checked_at: r
            .checked_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)),
        from_cache: r.from_cache,
        normalization_note: text(&r.normalization_note),
        line_type: line_type_from_pb(r.line_type),
        carrier: text(&r.carrier),
    }
}

/// A single check's batch of one, its result and what the data says of the number.
pub fn check_response(checked: Checked) -> pb::CheckNumberResponse {
    let details = checked.result.e164.as_deref().and_then(numbering::of);
    pb::CheckNumberResponse {
        batch_id: checked.batch.id.to_string(),
        result: Some(number_result(checked.result)),
        details: details.map(|n| pb::NumberDetails {
            international_format: n.international,
            national_format: n.national,
            location: n.location.unwrap_or_default(),
            time_zones: n.time_zones.into_iter().map(str::to_string).collect(),
            country_calling_code: n.calling_code.into(),
            country_name: n.country_name.unwrap_or_default(),
        }),
    }
}

pub fn batch_summary(b: BatchSummary) -> pb::BatchSummary {
    pb::BatchSummary {
        batch_id: b.id.to_string(),
        status: status(b.status) as i32,
        total_numbers: b.total_numbers,
        completed: b.completed,
        failed: b.failed,
        pending: b.pending(),
        cancelled: b.cancelled,
        created_at: Some(timestamp(b.created_at)),
        completed_at: b.completed_at.map(timestamp),
        credits_charged: b.credits_charged,
        credits_refunded: b.credits_refunded,
        request_id: b.request_id.unwrap_or_default(),
    }
}

pub fn poll_response(polled: BatchResults) -> pb::PollBatchResponse {
    let b = polled.batch;
    pb::PollBatchResponse {
        batch_id: b.id.to_string(),
        status: status(b.status) as i32,
        total_numbers: b.total_numbers,
        completed: b.completed,
        failed: b.failed,
        cancelled: b.cancelled,
        pending: b.pending(),
        results: polled.results.into_iter().map(number_result).collect(),
        created_at: Some(timestamp(b.created_at)),
        completed_at: b.completed_at.map(timestamp),
        credits_charged: b.credits_charged,
        credits_refunded: b.credits_refunded,
    }
}

pub fn list_response(page: BatchPage) -> pb::ListBatchesResponse {
    pb::ListBatchesResponse {
        batches: page.batches.into_iter().map(batch_summary).collect(),
        next_page_token: page.next.map(|t| t.encode()).unwrap_or_default(),
    }
}

pub fn cancel_response(cancelled: Cancelled) -> pb::CancelBatchResponse {
    pb::CancelBatchResponse {
        batch: Some(batch_summary(cancelled.batch)),
        cancelled_numbers: cancelled.numbers as i32,
        credits_refunded: cancelled.numbers,
    }
}

fn completed(c: Counts) -> pb::BatchCompleted {
    pb::BatchCompleted {
        total_numbers: c.total_numbers,
        completed: c.completed,
        failed: c.failed,
        cancelled: c.cancelled,
    }
}

pub fn watch_event(event: WatchEvent) -> pb::WatchBatchResponse {
    use pb::watch_batch_response::Event;
    pb::WatchBatchResponse {
        event: Some(match event {
            WatchEvent::Result(r) => Event::Result(number_result(r)),
            WatchEvent::Completed(c) => Event::Completed(completed(c)),
        }),
    }
}
