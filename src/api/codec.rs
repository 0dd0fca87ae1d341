//! The codec of every service and client: protobuf (prost), with a smaller first buffer for
//! what a response encodes. tonic allocates that buffer when a response starts and a stream
//! keeps it for its whole life, so each idle watch stream held 8 KiB for it; it grows as a
//! message needs (a large page reserves more once per call).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The first size of a response's encoding buffer (tonic's default is 8 KiB).
pub const ENCODE_BUFFER_BYTES: usize = 512;
/// How much a streaming response encodes before it writes out (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// The `codec_path` of the generated code (`build.rs`).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(
            ENCODE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}
