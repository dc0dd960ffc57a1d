//! Pins on an object store: what a Commit records of each file (its entity tag and, where the bucket keeps
//! versions, its version id), how a read names that version, and whether the bucket keeps versions at all.

use futures::StreamExt;
use object_store::{GetOptions, ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};

use super::ObjectStorage;
use crate::{
    model::{ManifestFile, Pin, ResultId},
    storage::{EntryKind, PIN_HEADS, SinkEntry, StorageError},
};

impl ObjectStorage {
    /// Whether the bucket keeps versions, found with the create-only probe at `key`, whose first write
    /// answered `first` as its version: written over, the probe's first version must still read back its first
    /// bytes. A store whose writes answer no version does not keep them, nor does one whose URLs cannot name a
    /// version (Azure, here). Two more requests at start-up, on a store that answers versions.
    pub(super) async fn keeps_versions(&self, key: &str, first: Option<String>, first_bytes: &[u8]) -> bool {
        let (Some(first), Some(_)) = (first, self.description.version_param) else { return false };
        let path = self.path(key);
        let overwrite = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
        let written = self.store.put_opts(&path, PutPayload::from_static(b"overwritten probe"), overwrite);
        match self.timed("probing for versions", written).await {
            Ok(second) if second.version.as_deref() != Some(first.as_str()) => {}
            _ => return false,
        }
        let read = async {
            let options = GetOptions { version: Some(first), ..Default::default() };
            self.store.get_opts(&path, options).await?.bytes().await
        };
        matches!(self.timed("probing for versions", read).await, Ok(bytes) if bytes.as_ref() == first_bytes)
    }

    /// The pin of an object as the store describes it now: its entity tag, and its version where the bucket
    /// keeps versions.
    pub(super) fn pin_of(&self, meta: &ObjectMeta) -> Option<Pin> {
        let version = meta.version.clone().filter(|_| self.versions);
        (meta.e_tag.is_some() || version.is_some()).then(|| Pin::Object { e_tag: meta.e_tag.clone(), version })
    }

    /// Whether `entry` lacks what a Commit pins: an entity tag, or a version where the bucket keeps them.
    fn needs_head(&self, entry: &SinkEntry) -> bool {
        entry.kind == EntryKind::File
            && match &entry.pin {
                Some(Pin::Object { e_tag, version }) => e_tag.is_none() || (self.versions && version.is_none()),
                Some(Pin::File { .. }) | None => true,
            }
    }

    /// See [`Backend::complete_pins`](crate::storage::Backend::complete_pins).
    pub(super) async fn pin_entries(
        &self,
        id: &ResultId,
        entries: Vec<SinkEntry>,
    ) -> Result<Vec<SinkEntry>, StorageError> {
        if !entries.iter().any(|entry| self.needs_head(entry)) {
            return Ok(entries);
        }
        let heads = futures::stream::iter(entries)
            .map(|mut entry| async move {
                if !self.needs_head(&entry) {
                    return Ok(Some(entry));
                }
                match self.timed("reading a file's version", self.store.head(&self.file_path(id, &entry.path))).await {
                    Ok(meta) => {
                        entry.size_bytes = meta.size;
                        entry.pin = self.pin_of(&meta);
                        Ok(Some(entry))
                    }
                    // Gone since the listing: as if listed a moment later.
                    Err(StorageError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(PIN_HEADS);
        let pinned: Vec<Result<Option<SinkEntry>, StorageError>> = heads.collect().await;
        pinned.into_iter().filter_map(Result::transpose).collect()
    }

    /// What reads exactly the version `pin` names: `If-Match` its entity tag, and its version where the
    /// bucket keeps versions.
    pub(super) fn pinned(&self, pin: Option<&Pin>) -> GetOptions {
        match pin {
            Some(Pin::Object { e_tag, version }) => GetOptions {
                if_match: e_tag.clone(),
                version: version.clone().filter(|_| self.versions),
                ..Default::default()
            },
            Some(Pin::File { .. }) | None => GetOptions::default(),
        }
    }

    /// Whether the object the store answered (`meta`) is the version `pin` names. Some stores ignore
    /// `If-Match`, so the entity tag answered is compared too: one the store no longer gives is not a match.
    pub(super) fn matches(pin: Option<&Pin>, meta: &ObjectMeta) -> bool {
        match pin {
            None => true,
            Some(Pin::Object { e_tag, version }) => {
                e_tag.as_ref().is_none_or(|e_tag| meta.e_tag.as_deref().map(opaque) == Some(opaque(e_tag)))
                    && version.as_ref().is_none_or(|version| meta.version.as_ref().is_none_or(|v| v == version))
            }
            // A filesystem's pin on an object: never the same object.
            Some(Pin::File { .. }) => false,
        }
    }

    /// One HEAD (of the pinned version, with `If-Match`): see
    /// [`Backend::check_file`](crate::storage::Backend::check_file). Some stores (Azure) answer a failed
    /// `If-Match` of a missing object before its absence: a second, plain HEAD then tells the two apart.
    pub(super) async fn check_object(&self, id: &ResultId, file: &ManifestFile) -> Result<(), StorageError> {
        let key = format!("{id}/{}", file.path);
        let options = GetOptions { head: true, ..self.pinned(file.pin.as_ref()) };
        let checked = self.read_pinned(&key, "checking a file", self.store.get_opts(&self.path(&key), options)).await;
        let meta = match checked {
            Ok(got) => got.meta,
            Err(StorageError::Changed { key }) => {
                self.timed("checking a file", self.store.head(&self.path(&key))).await?;
                return Err(StorageError::Changed { key });
            }
            Err(error) => return Err(error),
        };
        match meta.size == file.size_bytes && Self::matches(file.pin.as_ref(), &meta) {
            true => Ok(()),
            false => Err(StorageError::Changed { key }),
        }
    }

    /// The object path of the file `path` of `id`'s sink.
    pub(super) fn file_path(&self, id: &ResultId, path: &str) -> Path {
        self.path(&format!("{id}/{path}"))
    }

    /// Runs the read `future` of the pinned file at `key` within the timeout: a failed `If-Match` is
    /// [`StorageError::Changed`] (where a write's failed precondition is [`StorageError::AlreadyExists`]).
    pub(super) async fn read_pinned<T>(
        &self,
        key: &str,
        operation: &'static str,
        future: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Err(object_store::Error::Precondition { .. })) => Err(StorageError::Changed { key: key.to_owned() }),
            Ok(result) => result.map_err(|e| self.error(operation, e)),
            Err(_) => Err(StorageError::Timeout { location: self.description.location.clone(), timeout: self.timeout }),
        }
    }
}

/// An entity tag's opaque text: without its quotes (a store may quote it in one answer and not in another:
/// Azure lists it bare and answers a GET with it quoted).
fn opaque(e_tag: &str) -> &str {
    let e_tag = e_tag.strip_prefix("W/").unwrap_or(e_tag);
    e_tag.strip_prefix('"').and_then(|tag| tag.strip_suffix('"')).unwrap_or(e_tag)
}
