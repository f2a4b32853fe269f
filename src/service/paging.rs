//! Page tokens of ListBatches: opaque to clients, the last row's position inside.
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;

/// Where a page ended: the last batch's creation time and id (the listing's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl PageToken {
    /// A token this API returned; anything else is the caller's mistake.
    pub fn parse(text: &str) -> Result<PageToken, ApiError> {
        decode(text).ok_or_else(|| {
            ApiError::bad_field("page_token", "page_token is not one this API returned")
        })
    }

    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{}/{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }
}

/// Tokens are made from rows, so their times lie between 1970 and 9999; outside that a
/// forged token would reach PostgreSQL, whose timestamps end sooner than chrono's.
const TOKEN_MICROS: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999_999;

fn decode(token: &str) -> Option<PageToken> {
    let text = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let (micros, id) = text.split_once('/')?;
    let micros: i64 = micros.parse().ok()?;
    Some(PageToken {
        created_at: DateTime::from_timestamp_micros(
            Some(micros).filter(|m| TOKEN_MICROS.contains(m))?,
        )?,
        id: Uuid::parse_str(id).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let token = PageToken {
            created_at: DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(PageToken::parse(&token.encode()).unwrap(), token);
        assert!(PageToken::parse("zz").is_err());
        assert!(PageToken::parse(&hex::encode("x/y")).is_err());
        // Times PostgreSQL cannot hold (issue 20: HTTP 500 / INTERNAL before).
        let id = Uuid::new_v4();
        for micros in ["-8000000000000000000", "-1", "253402300800000000"] {
            assert!(
                PageToken::parse(&hex::encode(format!("{micros}/{id}"))).is_err(),
                "{micros}"
            );
        }
    }
}
