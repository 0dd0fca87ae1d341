//! The codec of every service and client: protobuf (prost), with a small first encoding
//! buffer for the watch streams. tonic allocates that buffer when a response starts, and a
//! stream keeps it for its whole life, so each idle watch stream held 8 KiB for it; a watch
//! message grows it as it needs. Unary responses keep tonic's 8 KiB: they live for one call,
//! and a page of integrations would otherwise grow it several times.

use std::any::TypeId;
use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::pb;

/// The first size of a watch stream's encoding buffer (tonic's default is 8 KiB).
pub const STREAM_ENCODE_BUFFER_BYTES: usize = 512;
/// How much a streaming response encodes before it writes out (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// Whether `T` is what a watch stream sends (every server-streaming method's response; a
/// test holds this list to the protos).
fn streamed<T: 'static>() -> bool {
    let t = TypeId::of::<T>();
    t == TypeId::of::<pb::WatchIntegrationEventsResponse>()
        || t == TypeId::of::<pb::WatchInstalledAppEventsResponse>()
        || t == TypeId::of::<pb::WatchAuditEventsResponse>()
}

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
        let settings = if streamed::<T>() {
            BufferSettings::new(STREAM_ENCODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
        } else {
            BufferSettings::default()
        };
        ProstCodec::<T, U>::raw_encoder(settings)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every server-streaming method of the protos sends a type the codec treats as streamed,
    /// and a unary response is not one.
    #[test]
    fn every_streaming_response_gets_the_small_buffer() {
        let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set");
        let outputs: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| &file.service)
            .flat_map(|service| &service.method)
            .filter(|method| method.server_streaming())
            .map(|method| method.output_type().to_owned())
            .collect();
        assert_eq!(outputs.len(), 3, "{outputs:?}");
        for output in outputs {
            let known = match output.as_str() {
                ".integrationhub.v1.WatchIntegrationEventsResponse" => {
                    streamed::<pb::WatchIntegrationEventsResponse>()
                }
                ".integrationhub.v1.WatchInstalledAppEventsResponse" => {
                    streamed::<pb::WatchInstalledAppEventsResponse>()
                }
                ".integrationhub.v1.WatchAuditEventsResponse" => {
                    streamed::<pb::WatchAuditEventsResponse>()
                }
                other => panic!("a streaming response the codec does not know: {other}"),
            };
            assert!(known, "{output} is not treated as streamed");
        }
        assert!(!streamed::<pb::Integration>());
    }
}
