//! `wavalidation.v1.WaValidationService` over gRPC: the tonic service (a thin adapter
//! around `crate::service`), proto conversions, the error status, and reflection.
pub mod codec;
pub mod convert;
mod service;
mod status;

pub use service::GrpcService;

/// Largest message accepted: 1,000 entries of 256 characters fit with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Largest message of the services that take no key (health, reflection).
pub const KEYLESS_MESSAGE_BYTES: usize = 16 * 1024;

/// Reflection knows our service, health and both reflection versions, so every grpcurl lists them all.
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}
