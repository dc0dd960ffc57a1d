//! What the workers' credentials reach: at start-up, with `worker_storage_options` configured, the service
//! shows that they can neither write nor read the control folder (`_control/`, where the commit secret and
//! the probes live). A worker runs users' code; credentials that reach the service's records let any query
//! forge commit tokens and download links, or plant records.
//!
//! The probe writes a fresh object there with the workers' credentials and reads one the service wrote; the
//! service deletes both with its own. A store's answer of permission denied (403) or unauthenticated (401)
//! is what it should be; success refuses the start; any other answer (a timeout, a 500) proves nothing
//! either way and is logged as a warning.

use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{ObjectStorage, PROBE_PREFIX, random_hex};
use crate::storage::{Backend, Cause, StorageError};

/// The table whose credentials are probed, as the operator names it.
const WORKER_OPTIONS_KEY: &str = "[anonymous_results_service] worker_storage_options";

/// What one request with the workers' credentials showed.
enum Reach {
    /// The store refused it for want of permission: as it should.
    Denied,
    /// It worked.
    Reached,
    /// It failed otherwise: nothing is shown.
    Unknown(String),
}

impl ObjectStorage {
    /// Refuses workers' credentials (`workers`, a store built from `worker_storage_options`) that can write or
    /// read the control folder, with an error naming the key and what to deny them; logs a warning when the
    /// store's answers show neither.
    pub(super) async fn check_workers_reach(&self, workers: &Arc<dyn ObjectStore>) -> Result<(), StorageError> {
        let probe = format!("{}/{PROBE_PREFIX}workers-{}", crate::layout::CONTROL, random_hex());
        let (written, read) = (format!("{probe}-written"), format!("{probe}-read"));
        let write = async {
            let options = PutOptions { mode: PutMode::Create, ..Default::default() };
            let path = self.path(&written);
            self.reach(workers.put_opts(&path, PutPayload::from_static(b"workers' probe"), options)).await
        };
        let read_back = async {
            self.put_create(&read, b"service's probe".to_vec()).await?;
            let path = self.path(&read);
            let get = async { workers.get(&path).await?.bytes().await };
            Ok::<_, StorageError>(self.reach(get).await)
        };
        let (write, read_back) = tokio::join!(write, read_back);
        futures::future::join(self.delete_probe(&written), self.delete_probe(&read)).await;
        let read_back = read_back?;
        let reached: Vec<&str> = [(&write, "write"), (&read_back, "read")]
            .into_iter()
            .filter_map(|(reach, what)| matches!(reach, Reach::Reached).then_some(what))
            .collect();
        if !reached.is_empty() {
            return Err(StorageError::Config { message: self.reach_message(&reached.join(" and ")) });
        }
        for (reach, what) in [(write, "write"), (read_back, "read")] {
            if let Reach::Unknown(cause) = reach {
                tracing::warn!(
                    "could not show that the workers' credentials ({WORKER_OPTIONS_KEY}) cannot {what} `{}`: {cause}",
                    self.control_folder()
                );
            }
        }
        Ok(())
    }

    /// What one request with the workers' credentials shows, within the storage timeout.
    async fn reach<T>(&self, request: impl Future<Output = object_store::Result<T>>) -> Reach {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(_)) => Reach::Reached,
            Ok(Err(object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })) => {
                Reach::Denied
            }
            Ok(Err(other)) => Reach::Unknown(Cause::new(other, self.description.secrets.clone()).to_string()),
            Err(_) => Reach::Unknown(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Deletes a probe with the service's credentials; one left behind is a temporary the sweeper removes.
    async fn delete_probe(&self, key: &str) {
        if let Err(error) = self.timed("deleting a probe", self.store.delete(&self.path(key))).await {
            tracing::debug!("the probe `{key}` is left for the sweeper: {error}");
        }
    }

    /// The control folder as a store policy names it: `prefix/_control/`.
    fn control_folder(&self) -> String {
        format!("{}{}/", self.key_prefix(), crate::layout::CONTROL)
    }

    /// Why the workers' credentials are refused: they can `what` the control folder.
    fn reach_message(&self, what: &str) -> String {
        format!(
            "the workers' credentials ({WORKER_OPTIONS_KEY}) can {what} `{folder}` in `{bucket}` at {location}: any \
             query could then forge the service's commit tokens and download links, or rewrite its records. Deny \
             those credentials `{folder}*` (the README shows the S3 bucket policy, Azure role assignment and GCS \
             IAM condition that do it), or configure worker_storage_options with credentials that are denied it",
            folder = self.control_folder(),
            bucket = self.description.bucket,
            location = self.description.location,
        )
    }
}
