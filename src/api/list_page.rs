//! `ListIntegrationsResponse`, written by hand (`build.rs` maps the proto's message here) so
//! the service can answer with a page whose integrations it encoded before: a page the read
//! cache answers again is sent as the bytes encoded the first time, not converted and encoded
//! once more (half of a cached List's server time went to that). On the wire it is the
//! proto's message, field for field; a test holds its fields to the descriptor set and its
//! bytes to what prost derives for the same message.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use super::convert;
use crate::domain::model::Integration;
use crate::pb;

/// Field numbers of the proto's `ListIntegrationsResponse`.
const INTEGRATIONS: u32 = 1;
const NEXT_PAGE_TOKEN: u32 = 2;
const EVENT_CURSOR: u32 = 3;

/// Response of ListIntegrations.
#[derive(Clone, PartialEq, Default)]
pub struct ListIntegrationsResponse {
    /// The integrations of this page (empty in an answer built by [`Self::encoded`]).
    pub integrations: Vec<pb::Integration>,
    /// Token for the next page; empty on the last page.
    pub next_page_token: String,
    /// The event cursor as of this listing: watch from it to see every change after it.
    pub event_cursor: String,
    /// The integrations as field 1 on the wire, sent in their place.
    encoded: Option<Bytes>,
}

impl ListIntegrationsResponse {
    /// An answer whose integrations are `encoded` ([`encode_integrations`]).
    pub fn encoded(encoded: Bytes, next_page_token: String, event_cursor: String) -> Self {
        ListIntegrationsResponse {
            integrations: Vec::new(),
            next_page_token,
            event_cursor,
            encoded: Some(encoded),
        }
    }
}

impl ListIntegrationsResponse {
    /// Turns integrations sent as bytes back into messages, so that integrations merged into
    /// this answer are sent after them instead of being dropped.
    fn take_encoded(&mut self) -> Result<(), DecodeError> {
        let Some(encoded) = self.encoded.take() else {
            return Ok(());
        };
        let before = ListIntegrationsResponse::decode(encoded)?;
        self.integrations.splice(0..0, before.integrations);
        Ok(())
    }
}

/// `items` as the integrations of a `ListIntegrationsResponse` on the wire: each converted
/// to its message and encoded as field 1, one at a time.
pub fn encode_integrations(items: &[Integration]) -> Bytes {
    let mut buf = Vec::with_capacity(items.len() * 256);
    for item in items {
        encoding::message::encode(INTEGRATIONS, &convert::integration(item), &mut buf);
    }
    Bytes::from(buf)
}

impl Message for ListIntegrationsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.encoded {
            Some(encoded) => buf.put_slice(encoded),
            None => {
                for integration in &self.integrations {
                    encoding::message::encode(INTEGRATIONS, integration, buf);
                }
            }
        }
        if !self.next_page_token.is_empty() {
            encoding::string::encode(NEXT_PAGE_TOKEN, &self.next_page_token, buf);
        }
        if !self.event_cursor.is_empty() {
            encoding::string::encode(EVENT_CURSOR, &self.event_cursor, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const STRUCT: &str = "ListIntegrationsResponse";
        let (field, merged) = match tag {
            INTEGRATIONS => (
                "integrations",
                self.take_encoded().and_then(|()| {
                    encoding::message::merge_repeated(wire_type, &mut self.integrations, buf, ctx)
                }),
            ),
            NEXT_PAGE_TOKEN => (
                "next_page_token",
                encoding::string::merge(wire_type, &mut self.next_page_token, buf, ctx),
            ),
            EVENT_CURSOR => (
                "event_cursor",
                encoding::string::merge(wire_type, &mut self.event_cursor, buf, ctx),
            ),
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            e.push(STRUCT, field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        let integrations = match &self.encoded {
            Some(encoded) => encoded.len(),
            None => encoding::message::encoded_len_repeated(INTEGRATIONS, &self.integrations),
        };
        let text = |tag, value: &String| {
            if value.is_empty() {
                0
            } else {
                encoding::string::encoded_len(tag, value)
            }
        };
        integrations
            + text(NEXT_PAGE_TOKEN, &self.next_page_token)
            + text(EVENT_CURSOR, &self.event_cursor)
    }

    fn clear(&mut self) {
        *self = ListIntegrationsResponse::default();
    }
}

impl std::fmt::Debug for ListIntegrationsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListIntegrationsResponse")
            .field("integrations", &self.integrations)
            .field("next_page_token", &self.next_page_token)
            .field("event_cursor", &self.event_cursor)
            .field("encoded_bytes", &self.encoded.as_ref().map(Bytes::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use prost_types::field_descriptor_proto::{Label, Type};

    use super::*;

    /// What prost derives for the proto's message, to hold the hand-written one to.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Derived {
        #[prost(message, repeated, tag = "1")]
        integrations: Vec<pb::Integration>,
        #[prost(string, tag = "2")]
        next_page_token: String,
        #[prost(string, tag = "3")]
        event_cursor: String,
    }

    fn integration(id: &str, config: &[(&str, &str)]) -> pb::Integration {
        pb::Integration {
            name: format!("teams/t1/integrations/{id}"),
            installed_app: "teams/t1/installedApps/a1".into(),
            display_name: format!("display {id}"),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: 2,
            etag: "W/\"3\"".into(),
            ..Default::default()
        }
    }

    /// The proto's fields are the ones this file writes: numbers, names, types.
    #[test]
    fn the_fields_are_the_protos() {
        let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set");
        let message = set
            .file
            .iter()
            .filter(|file| file.package() == "integrationhub.v1")
            .flat_map(|file| &file.message_type)
            .find(|m| m.name() == "ListIntegrationsResponse")
            .expect("the proto declares ListIntegrationsResponse");
        let fields: Vec<_> = message
            .field
            .iter()
            .map(|f| (f.number(), f.name(), f.r#type(), f.label(), f.type_name()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (
                    INTEGRATIONS as i32,
                    "integrations",
                    Type::Message,
                    Label::Repeated,
                    ".integrationhub.v1.Integration"
                ),
                (
                    NEXT_PAGE_TOKEN as i32,
                    "next_page_token",
                    Type::String,
                    Label::Optional,
                    ""
                ),
                (
                    EVENT_CURSOR as i32,
                    "event_cursor",
                    Type::String,
                    Label::Optional,
                    ""
                ),
            ]
        );
        assert!(message.oneof_decl.is_empty());
    }

    /// Built from messages or from bytes encoded before, it sends what prost derives for the
    /// same values, and both decode to those values.
    #[test]
    fn it_encodes_and_decodes_as_the_derived_message() {
        let items = vec![
            integration("i1", &[("channel", "#ops"), ("b", "")]),
            integration("i2", &[]),
        ];
        for (token, cursor) in [("", ""), ("next", "cursor"), ("", "cursor")] {
            let derived = Derived {
                integrations: items.clone(),
                next_page_token: token.into(),
                event_cursor: cursor.into(),
            };
            let plain = ListIntegrationsResponse {
                integrations: items.clone(),
                next_page_token: token.into(),
                event_cursor: cursor.into(),
                encoded: None,
            };
            let mut field = Vec::new();
            for item in &items {
                encoding::message::encode(INTEGRATIONS, item, &mut field);
            }
            let pre = ListIntegrationsResponse::encoded(field.into(), token.into(), cursor.into());
            let expected = derived.encode_to_vec();
            for sent in [&plain, &pre] {
                let bytes = sent.encode_to_vec();
                assert_eq!(bytes, expected);
                assert_eq!(sent.encoded_len(), expected.len());
                let back = ListIntegrationsResponse::decode(bytes.as_slice()).expect("decodes");
                assert_eq!(back, plain);
            }
        }
        // Integrations merged into an answer built from bytes are sent after those.
        let mut field = Vec::new();
        encoding::message::encode(INTEGRATIONS, &items[0], &mut field);
        let mut merged = ListIntegrationsResponse::encoded(field.into(), "".into(), "".into());
        merged
            .merge(
                Derived {
                    integrations: vec![items[1].clone()],
                    ..Default::default()
                }
                .encode_to_vec()
                .as_slice(),
            )
            .expect("merges");
        assert_eq!(merged.integrations, items);
        let sent = Derived::decode(merged.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(sent.integrations, items);
        // Fields it does not know are skipped, as derived messages skip them.
        let mut unknown = Derived::default().encode_to_vec();
        encoding::string::encode(9, &"later".to_string(), &mut unknown);
        let back = ListIntegrationsResponse::decode(unknown.as_slice()).expect("decodes");
        assert_eq!(back, ListIntegrationsResponse::default());
        // A malformed field is an error that names it, never a panic.
        let bad = [0x0a, 0x05, 0x01];
        let err = ListIntegrationsResponse::decode(&bad[..]).expect_err("truncated");
        assert!(err.to_string().contains("integrations"), "{err}");
    }
}
