//! Every page of a Resolve: a stream of pages, or every location collected.

use futures_util::{Stream, TryStreamExt, stream};

use crate::{
    Client, Error,
    proto::{FileType, Location, ResolveRequest, ResolveResponse, ResultStatus},
};

/// Every page of a Resolve together.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The result's status, as the first page answered it.
    pub status: Option<ResultStatus>,
    /// The format of the files.
    pub file_type: FileType,
    /// Every location, in the committed order (empty unless the result is committed).
    pub locations: Vec<Location>,
}

impl Client {
    /// Each page of a Resolve, following `next_page_token` from `request`'s `page_token` (empty: the first
    /// page) to the last page. Each page is one call, retried and bounded by the deadline as
    /// [`Client::resolve`] is; the stream ends after the first error.
    pub fn resolve_pages(&self, request: ResolveRequest) -> impl Stream<Item = Result<ResolveResponse, Error>> + Send {
        let client = self.clone();
        stream::try_unfold(Some(request), move |next| {
            let client = client.clone();
            async move {
                let Some(request) = next else { return Ok(None) };
                let page = client.resolve(request.clone()).await?;
                let next = match page.next_page_token.as_str() {
                    "" => None,
                    token if token == request.page_token => {
                        return Err(Error::Protocol(format!(
                            "the service answered next_page_token {token:?} for that very page of {}",
                            request.result_id
                        )));
                    }
                    token => Some(ResolveRequest { page_token: token.to_owned(), ..request }),
                };
                Ok(Some((page, next)))
            }
        })
    }

    /// Every location of a result, page after page (set `request.page_size` to bound each answer's size; 0
    /// answers every location in one page).
    pub async fn resolve_all(&self, request: ResolveRequest) -> Result<Resolved, Error> {
        let mut resolved = Resolved { status: None, file_type: FileType::Unspecified, locations: Vec::new() };
        let mut pages = std::pin::pin!(self.resolve_pages(request));
        while let Some(page) = pages.try_next().await? {
            if resolved.status.is_none() {
                resolved.file_type = page.file_type();
                resolved.status = page.status;
            }
            resolved.locations.extend(page.locations);
        }
        Ok(resolved)
    }
}
