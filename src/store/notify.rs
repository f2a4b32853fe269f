//! The notifications the store sends, with the one encoder and the one decoder of the
//! results payload: `<batch_id> <idx>,<idx>,... [<origin>]`.
use uuid::Uuid;

/// Carries a results payload whenever results are written (or numbers cancelled).
pub const RESULTS_CHANNEL: &str = "wav_results";
/// Poked (empty payload) when numbers are queued, to wake idle workers.
pub const QUEUED_CHANNEL: &str = "wav_queued";

/// The SQL expression of a results payload, from SQL expressions for the batch id, the
/// comma-separated indexes, and the writer's origin (NULL when there is none). Every
/// statement that notifies results builds its payload with this.
macro_rules! results_payload {
    ($batch:literal, $idxs:literal, $origin:literal) => {
        concat!(
            $batch,
            "::text || ' ' || ",
            $idxs,
            " || coalesce(' ' || ",
            $origin,
            ", '')"
        )
    };
}
pub(crate) use results_payload;

/// Results written for one batch, as a notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsNotice {
    pub batch_id: Uuid,
    pub indexes: Vec<i32>,
    /// The store that wrote them, when it handed them to its own watchers itself.
    pub origin: Option<Uuid>,
}

impl ResultsNotice {
    /// None for a payload not written by `results_payload!`.
    pub fn parse(payload: &str) -> Option<ResultsNotice> {
        let mut parts = payload.split(' ');
        let batch_id = Uuid::parse_str(parts.next()?).ok()?;
        let indexes = parts
            .next()?
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<i32>, _>>()
            .ok()?;
        let origin = match parts.next() {
            Some(origin) => Some(Uuid::parse_str(origin).ok()?),
            None => None,
        };
        parts.next().is_none().then_some(ResultsNotice {
            batch_id,
            indexes,
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_notification_payloads() {
        let (id, origin) = (Uuid::new_v4(), Uuid::new_v4());
        let notice = |indexes: Vec<i32>, origin| {
            Some(ResultsNotice {
                batch_id: id,
                indexes,
                origin,
            })
        };
        assert_eq!(
            ResultsNotice::parse(&format!("{id} 0,5,7")),
            notice(vec![0, 5, 7], None)
        );
        assert_eq!(
            ResultsNotice::parse(&format!("{id} 3 {origin}")),
            notice(vec![3], Some(origin))
        );
        assert_eq!(ResultsNotice::parse("nonsense"), None);
        assert_eq!(ResultsNotice::parse(&format!("{id} 1,x")), None);
        assert_eq!(ResultsNotice::parse(&format!("{id} 1 nope")), None);
        assert_eq!(ResultsNotice::parse(&format!("{id} 1 {origin} more")), None);
    }

    #[test]
    fn the_sql_encoder_writes_what_the_decoder_reads() {
        assert_eq!(
            results_payload!("b", "i", "o"),
            "b::text || ' ' || i || coalesce(' ' || o, '')"
        );
    }
}
