//! wavalidate: batch WhatsApp number validation over gRPC, backed by PostgreSQL.
pub mod app;
pub mod bench;
pub mod checker;
pub mod cli;
pub mod client;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;

/// Generated from `proto/wavalidation/v1/wavalidation.proto`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("wavalidation.v1");

    /// Served by reflection, so grpcurl needs no proto file.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("wavalidation_descriptor");
}
