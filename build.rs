//! Compiles the protos in pure Rust (protox, no system `protoc`) and writes the descriptor set
//! that the reflection service serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "integrationhub/v1/resources.proto",
    "integrationhub/v1/installed_apps.proto",
    "integrationhub/v1/integrations.proto",
    "integrationhub/v1/audit.proto",
    "integrationhub/v1/webhooks.proto",
    "integrationhub/v1/access.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    for proto in PROTOS {
        compiler.open_file(proto)?;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds ignores file_descriptor_set_path, so the set for reflection is written here.
    std::fs::write(
        out_dir.join("integrationhub_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Protobuf with a smaller first encoding buffer (see src/api/codec.rs).
        .codec_path("crate::api::codec::LeanCodec")
        // Written by hand so a page can be sent as bytes encoded before (src/api/list_page.rs).
        .extern_path(
            ".integrationhub.v1.ListIntegrationsResponse",
            "crate::api::list_page::ListIntegrationsResponse",
        )
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
