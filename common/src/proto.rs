//! The generated gRPC code for `proto/ridgeline/v1/ridgeline.proto`, and
//! conversions between wire messages and domain types.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("ridgeline.v1");

    /// The encoded file descriptor set (for gRPC server reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("ridgeline_descriptor");
}

/// The protocol version a worker must announce at registration.
pub const PROTOCOL_VERSION: u32 = 1;
