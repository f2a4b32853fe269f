//! The gRPC API: thin handlers over the store, the event hub and the domain types.
pub mod auth;
pub mod convert;
pub mod service;
pub mod watch;
