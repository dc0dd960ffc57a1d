//! The generated messages of `anonymous_results.v1`, the raw generated client
//! ([`anonymous_results_client::AnonymousResultsClient`]), and the encoded descriptor set for reflection.
//! Their docs are the proto file's comments.

#![allow(clippy::all)]

tonic::include_proto!("anonymous_results.v1");

/// The encoded `FileDescriptorSet` of the contract (with its imports), served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("anonymous_results_descriptor");

/// The sink's storage options hold credentials, so its `Debug` names the keys and hides every value. The
/// messages that carry a commit token hide it too.
impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&str> = self.storage_options.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_struct("Sink")
            .field("uri", &self.uri)
            .field("storage_options", &format_args!("{{{} redacted}}", keys.join(", ")))
            .field("credentials_expire_at", &self.credentials_expire_at)
            .finish()
    }
}

/// What a redacted secret shows: whether there is one.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<redacted>" }
}

impl std::fmt::Debug for AllocateResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllocateResponse")
            .field("result_id", &self.result_id)
            .field("sink", &self.sink)
            .field("commit_token", &redacted(&self.commit_token))
            .field("commit_deadline", &self.commit_deadline)
            .field("status", &self.status)
            .finish()
    }
}

impl std::fmt::Debug for CommitRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitRequest")
            .field("result_id", &self.result_id)
            .field("commit_token", &redacted(&self.commit_token))
            .field("files", &self.files)
            .finish()
    }
}

impl std::fmt::Debug for AbortRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortRequest")
            .field("result_id", &self.result_id)
            .field("commit_token", &redacted(&self.commit_token))
            .field("reason", &self.reason)
            .finish()
    }
}

impl std::fmt::Debug for RefreshSinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshSinkRequest")
            .field("result_id", &self.result_id)
            .field("commit_token", &redacted(&self.commit_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_credentials_and_commit_tokens() {
        let token = "0123456789abcdef0123456789abcdef";
        let sink = Sink {
            uri: "s3://b/p/".into(),
            storage_options: [("aws_secret_access_key".into(), "s3cr3t".into())].into(),
            credentials_expire_at: None,
        };
        let shown = [
            format!(
                "{:?}",
                AllocateResponse { sink: Some(sink.clone()), commit_token: token.into(), ..Default::default() }
            ),
            format!("{:?}", RefreshSinkResponse { sink: Some(sink), ..Default::default() }),
            format!("{:?}", RefreshSinkRequest { commit_token: token.into(), ..Default::default() }),
            format!("{:?}", CommitRequest { commit_token: token.into(), ..Default::default() }),
            format!("{:?}", AbortRequest { commit_token: token.into(), ..Default::default() }),
        ];
        for text in shown {
            assert!(!text.contains(token) && !text.contains("s3cr3t") && text.contains("redacted"), "{text}");
        }
    }
}
