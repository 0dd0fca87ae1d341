//! What server reflection describes: the API, `grpc.health.v1`, and the `google.rpc` types
//! that errors carry in `grpc-status-details-bin` (`Status`, `ErrorInfo`, `BadRequest`, ...),
//! so that grpcurl and `buf curl` print error details as JSON instead of base64.

use tonic_reflection::server::Builder;

/// The encoded descriptor sets reflection serves. Together they are closed under imports
/// (a test checks it): a client that asks for a file also gets every file it imports.
pub const DESCRIPTOR_SETS: &[&[u8]] = &[
    crate::pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    // google.rpc's status and error details with what they import (google/protobuf/any.proto,
    // duration.proto), as tonic-types encodes them (the types errors are made of), under
    // the file names `status.proto` and `error_details.proto` (clients find them by symbol).
    tonic_types::pb::FILE_DESCRIPTOR_SET,
];

/// A reflection builder with every descriptor set registered; `build_v1()` or
/// `build_v1alpha()` it. (A file in several sets is served once, from the first.)
pub fn builder() -> Builder<'static> {
    DESCRIPTOR_SETS
        .iter()
        .fold(Builder::configure(), |builder, set| {
            builder.register_encoded_file_descriptor_set(set)
        })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use prost::Message;
    use prost_types::{FileDescriptorProto, FileDescriptorSet};

    use super::DESCRIPTOR_SETS;

    fn files() -> HashMap<String, FileDescriptorProto> {
        let mut files = HashMap::new();
        for encoded in DESCRIPTOR_SETS {
            let set = FileDescriptorSet::decode(*encoded).expect("a valid descriptor set");
            for file in set.file {
                files.entry(file.name().to_owned()).or_insert(file);
            }
        }
        files
    }

    #[test]
    fn every_imported_file_is_served() {
        let files = files();
        let mut missing = BTreeSet::new();
        for file in files.values() {
            for dependency in &file.dependency {
                if !files.contains_key(dependency) {
                    missing.insert(format!("{} (imported by {})", dependency, file.name()));
                }
            }
        }
        assert!(missing.is_empty(), "not served: {missing:?}");
    }

    #[test]
    fn the_error_detail_types_are_served() {
        let messages: BTreeSet<String> = files()
            .values()
            .flat_map(|file| {
                file.message_type
                    .iter()
                    .map(move |m| format!("{}.{}", file.package(), m.name()))
            })
            .collect();
        for name in [
            "google.rpc.Status",
            "google.rpc.ErrorInfo",
            "google.rpc.BadRequest",
            "google.rpc.PreconditionFailure",
            "google.rpc.RetryInfo",
            "google.rpc.ResourceInfo",
            "google.protobuf.Any",
            "google.protobuf.Duration",
        ] {
            assert!(messages.contains(name), "{name} is not served");
        }
    }
}
