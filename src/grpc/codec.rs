//! The protobuf codec of the contract: prost's, except that a request that does not decode (a string that
//! is not UTF-8, a truncated field, a wrong wire type) is the caller's mistake, INVALID_ARGUMENT, and not
//! INTERNAL. Answers that do not decode (on the client side) stay INTERNAL: they are not the caller's doing.

use std::{any::TypeId, marker::PhantomData};

use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::proto;

/// The codec named by the generated code (`build.rs`).
#[derive(Debug, Clone)]
pub struct ContractCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ContractCodec<T, U> {
    fn default() -> Self {
        Self { _messages: PhantomData }
    }
}

impl<T, U> Codec for ContractCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { inner: ProstCodec::<T, U>::default().decoder() }
    }
}

/// prost's decoder, its failures on a request made INVALID_ARGUMENT.
#[derive(Debug)]
pub struct RequestDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default + 'static> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| match status.code() == Code::Internal && is_request::<U>() {
            true => Status::invalid_argument(format!("the request is not a valid message: {}", status.message())),
            false => status,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// Whether `U` is one of the contract's requests.
fn is_request<U: 'static>() -> bool {
    [
        TypeId::of::<proto::AllocateRequest>(),
        TypeId::of::<proto::CommitRequest>(),
        TypeId::of::<proto::ResolveRequest>(),
        TypeId::of::<proto::AbortRequest>(),
        TypeId::of::<proto::ReleaseRequest>(),
        TypeId::of::<proto::RenewRequest>(),
        TypeId::of::<proto::WatchRequest>(),
    ]
    .contains(&TypeId::of::<U>())
}
