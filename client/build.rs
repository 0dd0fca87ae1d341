//! Compiles the service's protos (the workspace's `proto/`) in pure Rust (protox, no system
//! `protoc`): clients and messages only.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "integrationhub/v1/resources.proto",
    "integrationhub/v1/installed_apps.proto",
    "integrationhub/v1/integrations.proto",
    "integrationhub/v1/audit.proto",
    "integrationhub/v1/webhooks.proto",
    "integrationhub/v1/access.proto",
];

/// Messages that carry credentials.
const REDACTED_DEBUG: [&str; 9] = [
    // The state and code of an authorization, and the URL that carries the state.
    ".integrationhub.v1.CompleteInstalledAppAuthorizationRequest",
    ".integrationhub.v1.StartInstalledAppAuthorizationResponse",
    ".integrationhub.v1.CreateInstalledAppRequest",
    ".integrationhub.v1.UpdateInstalledAppRequest",
    ".integrationhub.v1.CreateIntegrationRequest",
    ".integrationhub.v1.Credentials",
    ".integrationhub.v1.ResolveIntegrationCredentialsResponse",
    ".integrationhub.v1.CreateWebhookSubscriptionResponse",
    ".integrationhub.v1.RotateWebhookSecretResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_source_info(true).include_imports(true);
    for proto in PROTOS {
        compiler.open_file(proto)?;
    }
    tonic_prost_build::configure()
        // Their Debug is written by hand (src/redact.rs): credential values print redacted.
        .skip_debug(REDACTED_DEBUG)
        .build_client(true)
        .build_server(false)
        .build_transport(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
