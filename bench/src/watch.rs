//! Watch streams on raw HTTP/2. Messages are not decoded into proto types: each one is
//! scanned for its top-level fields (events = 1, checkpoint = 3), so the subscribers cost the
//! shared CPUs as little as possible and what is measured is the server.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use h2::RecvStream;
use h2::client::SendRequest;
use integration_hub::pb;

use crate::unary::{frame, grpc_status, request_head};

const WATCH: &str = "/integrationhub.v1.IntegrationService/WatchIntegrationEvents";

/// One message of a watch stream, scanned.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scanned {
    pub events: usize,
    pub checkpoint: bool,
}

/// An open watch stream.
pub struct Watch {
    body: RecvStream,
    buf: BytesMut,
}

/// Opens a live watch of the caller's team and waits for its first message (a checkpoint).
pub async fn open(
    send: &mut SendRequest<Bytes>,
    addr: SocketAddr,
    token: &str,
) -> anyhow::Result<Watch> {
    let head = request_head(addr, WATCH, Some(token))?;
    std::future::poll_fn(|cx| send.poll_ready(cx)).await?;
    let (response, mut stream) = send.send_request(head.request(), false)?;
    stream.send_data(frame(&pb::WatchIntegrationEventsRequest::default()), true)?;
    let response = response.await?;
    if response.status() != http::StatusCode::OK {
        bail!("watch answered HTTP {}", response.status());
    }
    if let Some(Err(error)) = grpc_status(response.headers()) {
        bail!("watch refused: {error}");
    }
    let mut watch = Watch {
        body: response.into_body(),
        buf: BytesMut::new(),
    };
    let first = watch
        .next()
        .await?
        .context("the watch ended before its first message")?;
    if !first.checkpoint {
        bail!("a live watch must start with a checkpoint");
    }
    Ok(watch)
}

impl Watch {
    /// The next message, or `None` when the stream ended with OK.
    pub async fn next(&mut self) -> anyhow::Result<Option<Scanned>> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let message = self.buf.split_to(len);
                    return scan(&message).map(Some);
                }
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                None => {
                    let trailers = self.body.trailers().await?.unwrap_or_default();
                    return match grpc_status(&trailers) {
                        Some(Ok(())) | None => Ok(None),
                        Some(Err(error)) => bail!("the watch ended: {error}"),
                    };
                }
            }
        }
    }
}

/// Counts the events of one `WatchIntegrationEventsResponse` and reads its checkpoint flag.
fn scan(mut message: &[u8]) -> anyhow::Result<Scanned> {
    use prost::encoding::decode_varint;
    let mut scanned = Scanned::default();
    while message.has_remaining() {
        let key = decode_varint(&mut message)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let value = decode_varint(&mut message)?;
                if field == 3 {
                    scanned.checkpoint = value != 0;
                }
            }
            2 => {
                let len = usize::try_from(decode_varint(&mut message)?)?;
                if len > message.len() {
                    bail!("truncated field");
                }
                if field == 1 {
                    scanned.events += 1;
                }
                message.advance(len);
            }
            1 => message.advance(8.min(message.len())),
            5 => message.advance(4.min(message.len())),
            other => bail!("unexpected wire type {other}"),
        }
    }
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_counts_events_and_reads_the_checkpoint_flag() {
        let message = pb::WatchIntegrationEventsResponse {
            events: vec![pb::IntegrationEvent::default(); 3],
            cursor: "c".into(),
            checkpoint: false,
        };
        let bytes = prost::Message::encode_to_vec(&message);
        let scanned = scan(&bytes).expect("scan");
        assert_eq!(scanned.events, 3);
        assert!(!scanned.checkpoint);
        let checkpoint = pb::WatchIntegrationEventsResponse {
            checkpoint: true,
            cursor: "c".into(),
            ..Default::default()
        };
        let scanned = scan(&prost::Message::encode_to_vec(&checkpoint)).expect("scan");
        assert_eq!(scanned.events, 0);
        assert!(scanned.checkpoint);
    }
}
