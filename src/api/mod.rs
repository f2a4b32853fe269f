//! The gRPC and JSON HTTP APIs: thin handlers over `ops`, which holds what they share.
pub mod auth;
pub mod convert;
pub mod http;
pub mod ops;
pub mod service;
pub mod watch;
