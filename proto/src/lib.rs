//! Generated protobuf types and gRPC stubs for corebank (package `corebank.v1`),
//! plus the encoded file descriptor set that reflection and the REST facade use.

/// `corebank.v1`: every service, request, response and message.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("corebank.v1");
}

/// The subset of `google.api` the protos import (HTTP annotations).
#[allow(clippy::all, missing_docs)]
pub mod google_api {
    tonic::include_proto!("google.api");
}

/// The encoded `FileDescriptorSet` of every corebank proto and its imports,
/// with extension options such as `google.api.http` intact.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/corebank_descriptor.bin"));

pub mod wire;
