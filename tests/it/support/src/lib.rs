//! What wavalidate's integration tests (`tests/it`) and benches share: the harness
//! (databases, servers, clients, waiting), fake WhatsApp gateways, and a PostgreSQL
//! proxy for network faults.
pub mod fakes;
pub mod harness;
pub mod pgproxy;

pub use harness::*;
