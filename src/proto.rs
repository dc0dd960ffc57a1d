//! The generated gRPC types of `anonymous_results.v1`, and the encoded descriptor set for reflection.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("anonymous_results.v1");

/// The encoded `FileDescriptorSet` of the contract (with its imports), served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("anonymous_results_descriptor");

/// The sink's storage options hold credentials, so its `Debug` names the keys and hides every value.
impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&str> = self.storage_options.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_struct("Sink")
            .field("uri", &self.uri)
            .field("storage_options", &format_args!("{{{} redacted}}", keys.join(", ")))
            .finish()
    }
}
