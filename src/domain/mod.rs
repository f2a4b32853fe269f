//! Types that parse their input, so invalid values stop at the edge.
pub mod api_key;
pub mod batch;
pub mod checker;
pub mod numbering;
pub mod phone;
pub mod webhook;
