//! Where a client downloads each file of a committed result, in the mode it asked: store URLs or paths
//! (`direct`), or links to the service (`proxy`, `redirect`) minted with the commit secret's link key.

use std::{sync::OnceLock, time::Duration};

use super::{Error, Results};
use crate::{
    link::{LinkKeys, LinkMode},
    model::{DownloadMode, ManifestFile, RelPath, ResultId},
    storage::{Backend, Download, UrlDownloads},
};

/// Links minted on the calling task; more are minted on the blocking pool (about 2 µs each).
const INLINE_LINKS: usize = 256;

/// How the service's own download links are made.
#[derive(Debug)]
pub(super) struct LinkSettings {
    /// The mode of a Resolve that asks none.
    pub mode: DownloadMode,
    /// The URL clients reach the service at, without a trailing `/`: configured, or set once the listener's
    /// address is known.
    pub base: OnceLock<String>,
}

impl<B: Backend> Results<B> {
    /// Sets the URL clients reach the service at, when `download_base_url` does not; the first one set stays.
    pub fn set_download_base(&self, base: &str) {
        let _ = self.links.base.set(base.trim_end_matches('/').to_owned());
    }

    /// Whether proxy and redirect links can be made (the service knows the URL clients reach it at).
    pub fn has_download_base(&self) -> bool {
        self.links.base.get().is_some()
    }

    /// The configured download mode.
    pub fn download_mode(&self) -> DownloadMode {
        self.links.mode
    }

    /// Where to download the committed `files` of result `id` in `mode` (`None`: the configured one); store
    /// URLs and proxy links stay valid `url_ttl`.
    pub(super) async fn locations(
        &self,
        id: &ResultId,
        files: &[&ManifestFile],
        url_ttl: Duration,
        mode: Option<DownloadMode>,
    ) -> Result<Vec<Download>, Error> {
        let mode = match (mode.unwrap_or(self.links.mode), self.storage.url_downloads()) {
            (DownloadMode::Direct | DownloadMode::Redirect, UrlDownloads::NeedsKey(option)) => {
                return Err(Error::UrlsNeedKey { option });
            }
            // A file on the shared filesystem has no store URL to redirect to: the service serves it.
            (DownloadMode::Redirect, UrlDownloads::LocalPaths) => DownloadMode::Proxy,
            (mode, _) => mode,
        };
        let base = match mode {
            DownloadMode::Direct => return Ok(self.storage.downloads(id, files, url_ttl).await?),
            DownloadMode::Proxy | DownloadMode::Redirect => self.links.base.get().ok_or(Error::NoDownloadBase)?.clone(),
        };
        // As for a presigned URL: valid from the current second for one second more than asked.
        let expires_at = self.now().whole_seconds().saturating_add(url_ttl.saturating_add(Duration::from_secs(1)));
        let (link_mode, expires_at) = match mode {
            DownloadMode::Redirect => (LinkMode::Redirect, None),
            _ => (LinkMode::Proxy { expires: expires_at.millis() / 1000 }, Some(expires_at)),
        };
        let mint = move |id: &ResultId, paths: &[&RelPath], keys: &LinkKeys| -> Vec<Download> {
            paths.iter().map(|path| Download { url: keys.mint(&base, id, path, link_mode), expires_at }).collect()
        };
        let paths: Vec<&RelPath> = files.iter().map(|file| &file.path).collect();
        let paths = paths.as_slice();
        let me = match self.me.upgrade() {
            Some(me) if paths.len() > INLINE_LINKS => me,
            _ => return Ok(mint(id, paths, self.tokens.links())),
        };
        let (id, paths): (ResultId, Vec<RelPath>) = (id.clone(), paths.iter().map(|p| (*p).clone()).collect());
        let minted = tokio::task::spawn_blocking(move || {
            let paths: Vec<&RelPath> = paths.iter().collect();
            mint(&id, &paths, me.tokens.links())
        });
        Ok(minted.await.unwrap_or_default())
    }
}
