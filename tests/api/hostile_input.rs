//! Hostile input answers INVALID_ARGUMENT, never INTERNAL: a NUL in any string of any request
//! (found by walking the served descriptors, so a new field is tested without a line here).

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use integration_hub::pb;

use crate::fixtures::{TEAM, violated_fields};
use crate::helpers::{TestApp, authed, token};
use crate::storage_test;

/// Passes encoded messages through, so any method can be called with hand-made bytes.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        *self
    }
    fn decoder(&mut self) -> RawCodec {
        *self
    }
}

/// Calls `path` with `body`; a streaming method answers with its status or its first message.
pub async fn call_raw(
    channel: &Channel,
    token: &str,
    path: &str,
    streaming: bool,
    body: Vec<u8>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = path.parse().expect("method path");
    let request = authed(token, body);
    if streaming {
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        let first = tokio::time::timeout(std::time::Duration::from_millis(300), stream.message());
        match first.await {
            Ok(message) => message.map(drop),
            Err(_) => Ok(()),
        }
    } else {
        grpc.unary(request, path, RawCodec).await.map(drop)
    }
}

fn messages() -> Vec<(String, DescriptorProto)> {
    fn add(out: &mut Vec<(String, DescriptorProto)>, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for nested in &m.nested_type {
            add(out, &name, nested);
        }
        out.push((name, m.clone()));
    }
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = Vec::new();
    for file in &set.file {
        for m in &file.message_type {
            add(&mut out, &format!(".{}", file.package()), m);
        }
    }
    out
}

/// Every served method of the hub: its path, whether it streams, its input type.
pub fn methods() -> Vec<(String, bool, String)> {
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = Vec::new();
    for file in set
        .file
        .iter()
        .filter(|f| f.package() == "integrationhub.v1")
    {
        for service in &file.service {
            for method in &service.method {
                out.push((
                    format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    method.server_streaming(),
                    method.input_type().to_owned(),
                ));
            }
        }
    }
    out
}

fn field_bytes(number: i32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(
        number as u32,
        prost::encoding::WireType::LengthDelimited,
        &mut out,
    );
    prost::encoding::encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

/// A request with one string holding a NUL: its encoding and the field the answer must name.
struct Case {
    bytes: Vec<u8>,
    field: String,
}

/// Every string field reachable in `message`, each as a case with a NUL in it (a map gives
/// one case for its key and one for its value).
fn cases(all: &[(String, DescriptorProto)], message: &str, path: &str, depth: usize) -> Vec<Case> {
    let Some((_, descriptor)) = all.iter().find(|(n, _)| n == message) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if depth > 4 {
        return out;
    }
    for field in &descriptor.field {
        let name = if path.is_empty() {
            field.name().to_owned()
        } else {
            format!("{path}.{}", field.name())
        };
        match field.r#type() {
            Type::String => out.push(Case {
                bytes: field_bytes(field.number(), b"a\0b"),
                field: name,
            }),
            Type::Message => {
                let entry = all
                    .iter()
                    .find(|(n, _)| n == field.type_name())
                    .is_some_and(|(_, m)| m.options.as_ref().is_some_and(|o| o.map_entry()));
                if entry {
                    let key = [field_bytes(1, b"k\0"), field_bytes(2, b"v")].concat();
                    let value = [field_bytes(1, b"k"), field_bytes(2, b"v\0")].concat();
                    for entry in [key, value] {
                        out.push(Case {
                            bytes: field_bytes(field.number(), &entry),
                            field: name.clone(),
                        });
                    }
                } else {
                    for inner in cases(all, field.type_name(), &name, depth + 1) {
                        out.push(Case {
                            bytes: field_bytes(field.number(), &inner.bytes),
                            field: inner.field,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

async fn a_nul_in_any_string_of_any_request_is_invalid_argument_naming_it(app: TestApp) {
    let all = messages();
    let admin = token(TEAM, "admin", "ada");
    let service = token(TEAM, "service", "svc");
    let mut tried = 0;
    for (path, streaming, input) in methods() {
        for case in cases(&all, &input, "", 0) {
            let mut answer =
                call_raw(&app.channel, &admin, &path, streaming, case.bytes.clone()).await;
            if matches!(&answer, Err(s) if s.code() == Code::PermissionDenied) {
                answer = call_raw(&app.channel, &service, &path, streaming, case.bytes).await;
            }
            let status = answer.expect_err(&format!("{path} {}: accepted", case.field));
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{path} {}: {status:?}",
                case.field
            );
            assert_eq!(
                violated_fields(&status),
                std::slice::from_ref(&case.field),
                "{path}: {status:?}"
            );
            assert!(!status.message().contains('\0'));
            tried += 1;
        }
    }
    // The walk reaches the fields the issue named and the ones inside messages and maps.
    assert!(tried >= 40, "only {tried} string fields found");
}
storage_test!(a_nul_in_any_string_of_any_request_is_invalid_argument_naming_it);

async fn a_nul_in_the_audit_actor_filter_is_not_an_internal_error(app: TestApp) {
    let mut audit = app.audit.clone();
    let admin = token(TEAM, "admin", "ada");
    let status = audit
        .list_audit_events(authed(
            &admin,
            pb::ListAuditEventsRequest {
                actor: "da\0na".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a NUL in the actor filter");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(&status), ["actor"]);
}
storage_test!(a_nul_in_the_audit_actor_filter_is_not_an_internal_error);

/// What an error's trailers weigh on the wire: `grpc-message` percent-encoded and
/// `grpc-status-details-bin` in base64 (the status message again, and the details).
fn trailer_bytes(status: &tonic::Status) -> usize {
    let message: usize = status
        .message()
        .bytes()
        .map(|b| {
            if (b' '..=b'~').contains(&b) && b != b'%' {
                1
            } else {
                3
            }
        })
        .sum();
    let details = status.details().len().div_ceil(3) * 4;
    message + details
}

fn assert_small(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    let size = trailer_bytes(status);
    assert!(size < 8 * 1024, "trailers of {size} bytes");
    let listed = violated_fields(status).len();
    assert!((1..=20).contains(&listed), "{listed} violations listed");
}

async fn an_error_stays_small_however_many_fields_are_wrong(app: TestApp) {
    let dev = token(TEAM, "developer", "dana");
    let mut integrations = app.integrations.clone();
    let mut apps = app.apps.clone();

    let mut create = crate::fixtures::own_integration_request("slack", "Job", "xoxb-1");
    let config = &mut create.integration.as_mut().expect("integration").config;
    for i in 0..10_000 {
        config.insert(format!("unknown_{i}_{}", "k".repeat(40)), "v".into());
    }
    let status = integrations
        .create_integration(authed(&dev, create))
        .await
        .expect_err("10,000 unknown config keys");
    assert_small(&status);
    assert!(
        status.message().contains("more violations not listed"),
        "{}",
        status.message()
    );

    // Many bad fields at once, with long keys of control and non-ASCII characters (each
    // percent-encoded in grpc-message at three times its size).
    let mut create = crate::fixtures::app_request("slack", &"\u{7}".repeat(3000), "t");
    let app_fields = create.installed_app.as_mut().expect("app");
    app_fields.connected_to = "é\n".repeat(5000);
    create.request_id = "\u{1b}[31m".repeat(500);
    for i in 0..1_500 {
        create
            .credentials
            .insert(format!("{i}{}", "\u{1b}é".repeat(100)), "\u{7}".repeat(50));
    }
    let status = apps
        .create_installed_app(authed(&dev, create))
        .await
        .expect_err("many bad fields");
    assert_small(&status);

    let mut update = crate::fixtures::rename_integration_request(
        &format!("teams/{TEAM}/integrations/x"),
        "Renamed",
    );
    update.update_mask = Some(prost_types::FieldMask {
        paths: (0..20_000).map(|i| format!("bogus_{i}")).collect(),
    });
    let status = integrations
        .update_integration(authed(&dev, update))
        .await
        .expect_err("20,000 bad mask paths");
    assert_small(&status);
}
storage_test!(an_error_stays_small_however_many_fields_are_wrong);
