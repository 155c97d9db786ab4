//! The coherence wire contract.
//!
//! Everything that crosses the process boundary between an application and its sidecar is
//! defined in `proto/coherence/v1/*.proto` (package `coherence.v1`). This crate compiles those
//! files with tonic and re-exports the generated types, so that the sidecar, the client and the
//! CLI agree on one definition. Apps in other languages generate their own code from the same
//! `.proto` files.

/// Generated types and services of package `coherence.v1`.
pub mod v1 {
    tonic::include_proto!("coherence.v1");
}

/// The encoded `FileDescriptorSet` of every coherence proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("coherence_descriptor");
