//! Telemetry in one place: the tracing subscriber (JSON lines in production, pretty in
//! development; `RUST_LOG` filters, default `info`), and OpenTelemetry export over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard `OTEL_*` variables apply: service name,
//! resource attributes, sampler). The W3C trace context of incoming calls is continued.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{JsonFields, JsonVisitor, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Flushes and stops span export when the service stops.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered; call once at shutdown.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "flushing spans at shutdown failed");
        }
    }
}

fn otlp_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    // The endpoint, headers and timeout come from the OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT is invalid: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("integration-hub");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The JSON log lines' span fields, as `tracing_subscriber`'s `JsonFields` writes them,
/// except that a field recorded on a span after it was created is appended to the span's
/// JSON object instead of that object being parsed and written again (which `JsonFields`
/// does: every call's span records its caller's team, role and status code after it is
/// created, so parsing it again was paid on every call; BENCHMARKS.md has what it cost). A field recorded
/// twice appears twice in the span's object; the event formatter reads that object into a
/// map, where the later value wins.
pub struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        JsonFields::new().format_fields(writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut added = String::new();
        let mut visitor = JsonVisitor::new(&mut added);
        fields.record(&mut visitor);
        visitor.finish()?;
        append_object(&mut current.fields, &added);
        Ok(())
    }
}

/// Appends the members of JSON object `added` to JSON object `current` (either may be
/// empty or `{}`).
fn append_object(current: &mut String, added: &str) {
    let members = added
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_default();
    if members.is_empty() {
        return;
    }
    match current.strip_suffix('}') {
        Some(open) if open.trim_end() != "{" => {
            current.truncate(open.len());
            current.push(',');
        }
        _ => {
            current.clear();
            current.push('{');
        }
    }
    current.push_str(members);
    current.push('}');
}

/// Installs the global subscriber (a second call, in tests, keeps the first).
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = otlp_provider()?;
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("integration-hub")));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // Colours only on a terminal: a log file or collector gets no escape sequence of ours, so
    // one found there came from somewhere else.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .fmt_fields(SpanFields),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt).try_init(),
    };
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn appending_keeps_one_json_object() {
        let mut current = String::new();
        append_object(&mut current, "{}");
        assert_eq!(current, "");
        append_object(&mut current, r#"{"a":1}"#);
        assert_eq!(current, r#"{"a":1}"#);
        append_object(&mut current, r#"{"b":"x}\"y","c":true}"#);
        let parsed: serde_json::Value = serde_json::from_str(&current).expect("json");
        assert_eq!(parsed, serde_json::json!({"a": 1, "b": "x}\"y", "c": true}));
        let mut empty_object = "{}".to_owned();
        append_object(&mut empty_object, r#"{"d":2}"#);
        assert_eq!(empty_object, r#"{"d":2}"#);
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fields_recorded_later_are_on_the_log_lines_of_the_span() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .fmt_fields(SpanFields)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "rpc",
                request_id = "r-1",
                team = tracing::field::Empty,
                role = tracing::field::Empty,
                code = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("team", "acme");
            span.record("role", "viewer");
            span.record("code", "UNKNOWN");
            span.record("code", "OK");
            tracing::info!(answer = 42, "done");
        });
        let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["answer"], 42);
        assert_eq!(
            line["span"],
            serde_json::json!({
                "name": "rpc",
                "request_id": "r-1",
                "team": "acme",
                "role": "viewer",
                "code": "OK",
            }),
            "{text}"
        );
    }
}
