//! The `integration-hub` binary: parse the command line, build, run.

use anyhow::Context;
use clap::Parser;

use integration_hub::auth::{MintClaims, mint_hs256};
use integration_hub::config::{AuditCommand, Cli, Command, LogFormat};
use integration_hub::domain::audit_chain;
use integration_hub::domain::rotation::{describe_counts, rotate_keys};
use integration_hub::startup::{Application, jwt_secret, key_ring, open_database, verifier_config};
use integration_hub::telemetry;

/// mimalloc, not glibc's malloc: a call allocates and frees many small buffers on two or
/// more threads (BENCHMARKS.md, "Reads the cache cannot answer").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    integration_hub::store::configure_sqlite_process();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let format = args.log_format.unwrap_or(if args.dev {
                LogFormat::Pretty
            } else {
                LogFormat::Json
            });
            let telemetry = telemetry::init(format)?;
            let app = Application::build(*args).await?;
            let result = app.run_until_stopped(shutdown_signal()).await;
            telemetry.shutdown();
            result
        }
        Command::Migrate(database) => {
            let _telemetry = telemetry::init(LogFormat::Json)?;
            let store = open_database(&database, 2).await?;
            store.migrate().await.context("migration failed")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token(args) => {
            if !args.dev && args.auth.jwt_hs256_secret.is_none() {
                anyhow::bail!(
                    "give --dev (the development secret) or INTEGRATION_HUB_JWT_HS256_SECRET"
                );
            }
            let secret = jwt_secret(&args.auth, &args.database.data_dir, args.dev)?
                .context("minting needs an HS256 secret")?;
            let config = verifier_config(&args.auth, Some(secret.clone()))?;
            let token = mint_hs256(
                secret.as_bytes(),
                &MintClaims {
                    subject: args.subject,
                    team: args.team,
                    roles: vec![args.role],
                    issuer: config.issuer.clone(),
                    audience: config.audience.clone(),
                    ttl_secs: args.ttl_secs,
                    team_claim: config.team_claim.clone(),
                    roles_claim: config.roles_claim.clone(),
                },
            )
            .map_err(|e| anyhow::anyhow!("cannot mint a token: {e}"))?;
            println!("{token}");
            Ok(())
        }
        Command::RotateKeys(args) => {
            let _telemetry = telemetry::init(LogFormat::Json)?;
            let keys = key_ring(&args.encryption_keys, args.min_key_version)?;
            let store = open_database(&args.database, 2).await?;
            let summary = rotate_keys(&store, &keys, args.batch_size)
                .await
                .map_err(anyhow::Error::new)
                .context("key rotation stopped; run it again to resume")?;
            store.close().await;
            // The summary holds counts only.
            println!("{summary}");
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} stored values could not be opened and remain on an older key (their rows are in the log)",
                    summary.failed
                );
            }
            if summary.changed_concurrently > 0 {
                anyhow::bail!(
                    "{} values kept changing during the run; run rotate-keys again",
                    summary.changed_concurrently
                );
            }
            if !summary.remaining.is_empty() {
                anyhow::bail!(
                    "values remain on an older key ({}); run rotate-keys again once every replica has the newest key",
                    describe_counts(&summary.remaining)
                );
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Export(args)) => {
            let _telemetry = telemetry::init(LogFormat::Json)?;
            let store = open_database(&args.database, 2).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = 0;
            loop {
                let rows = store
                    .audit_between(args.team.as_deref(), (args.since, args.until), after, 1000)
                    .await
                    .map_err(anyhow::Error::new)
                    .context("cannot read the audit log")?;
                for row in &rows {
                    use std::io::Write as _;
                    writeln!(out, "{}", audit_chain::export_line(row))?;
                }
                match rows.last() {
                    Some(row) => after = row.seq,
                    None => break,
                }
            }
            std::io::Write::flush(&mut out)?;
            store.close().await;
            Ok(())
        }
        Command::Audit(AuditCommand::Verify(args)) => {
            let _telemetry = telemetry::init(LogFormat::Json)?;
            let keys = key_ring(&args.encryption_keys, None)?;
            let store = open_database(&args.database, 2).await?;
            let report = audit_chain::verify(&store, &keys, args.team.as_deref())
                .await
                .map_err(anyhow::Error::new)
                .context("cannot read the audit log")?;
            store.close().await;
            println!(
                "teams {}, verified {}, not sealed yet {}, from before the chain {}, findings {}",
                report.teams, report.verified, report.pending, report.legacy, report.found
            );
            for finding in &report.findings {
                println!("{finding}");
            }
            if report.found > 0 {
                anyhow::bail!("the audit chain does not verify: {} findings", report.found);
            }
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
