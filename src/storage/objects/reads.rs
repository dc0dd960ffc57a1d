//! Reads of committed files from an object store: a byte range streamed in bounded chunks, of exactly the
//! version the file's pin names.

use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStore};

use super::ObjectStorage;
use crate::{
    model::{ManifestFile, ResultId},
    storage::{Cause, FileRead, READ_CHUNK, StorageError, check_range},
};

impl ObjectStorage {
    /// See [`Backend::read_range`](crate::storage::Backend::read_range): one GET with `If-Match` the pinned
    /// entity tag (and the pinned version where the bucket keeps versions); the entity tag answered is
    /// compared too.
    pub(super) async fn read_file(
        &self,
        id: &ResultId,
        file: &ManifestFile,
        range: Range<u64>,
    ) -> Result<FileRead, StorageError> {
        let key = format!("{id}/{}", file.path);
        let object = self.path(&key);
        let pinned = self.pinned(file.pin.as_ref());
        let changed = || StorageError::Changed { key: key.clone() };
        // An empty range needs the size alone; any other is read, and a store answers a range that ends
        // past the object with the bytes it has, so the size it reports decides.
        if range.is_empty() {
            let options = GetOptions { head: true, ..pinned };
            let meta = self.read_pinned(&key, "reading a file", self.store.get_opts(&object, options)).await?.meta;
            if !Self::matches(file.pin.as_ref(), &meta) {
                return Err(changed());
            }
            check_range(&key, &range, meta.size)?;
            return Ok(FileRead { size: meta.size, chunks: Box::pin(futures::stream::empty()) });
        }
        let options = GetOptions { range: Some(GetRange::Bounded(range.clone())), ..pinned.clone() };
        let got = match self.read_pinned(&key, "reading a file", self.store.get_opts(&object, options)).await {
            Ok(got) => got,
            Err(error @ (StorageError::NotFound { .. } | StorageError::Changed { .. })) => return Err(error),
            Err(error) => {
                // A store refuses a range that starts past the object: its size tells that from a failure.
                let options = GetOptions { head: true, ..pinned };
                if let Ok(got) = self.read_pinned(&key, "reading a file", self.store.get_opts(&object, options)).await {
                    check_range(&key, &range, got.meta.size)?;
                }
                return Err(error);
            }
        };
        if !Self::matches(file.pin.as_ref(), &got.meta) {
            return Err(changed());
        }
        let size = got.meta.size;
        check_range(&key, &range, size)?;
        let (location, secrets) = (self.description.location.clone(), self.description.secrets.clone());
        let chunks = got.into_stream().map(move |chunk| {
            chunk.map_err(|e| StorageError::Unavailable {
                location: location.clone(),
                operation: "reading a file",
                cause: Cause::new(e, secrets.clone()),
            })
        });
        Ok(FileRead { size, chunks: Box::pin(rechunk(chunks)) })
    }
}

/// `chunks`, none longer than [`READ_CHUNK`] bytes.
fn rechunk(
    chunks: impl futures::Stream<Item = Result<Bytes, StorageError>> + Send + 'static,
) -> impl futures::Stream<Item = Result<Bytes, StorageError>> + Send + 'static {
    chunks.flat_map(|chunk| {
        let pieces: Vec<Result<Bytes, StorageError>> = match chunk {
            Ok(mut bytes) => {
                let mut pieces = Vec::with_capacity(bytes.len().div_ceil(READ_CHUNK).max(1));
                while bytes.len() > READ_CHUNK {
                    pieces.push(Ok(bytes.split_to(READ_CHUNK)));
                }
                pieces.push(Ok(bytes));
                pieces
            }
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pieces)
    })
}
