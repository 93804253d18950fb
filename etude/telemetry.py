"""OpenTelemetry set-up for the entry points, and the per-request sampling decision.

Library modules ask `request_tracing()` once (None: tracing is off) and build spans only for
requests it samples. `configure_tracing` installs an SDK tracer provider when spans have
somewhere to go: an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`; the standard OTEL_* variables
for service name and headers apply) and/or an OTLP JSON lines file (`ETUDE_TRACE_FILE`, how an
experiment records traces into its result store). Otherwise nothing is installed and no request
pays for tracing at all.

Sampling is decided once per request at its root: the load generator (or whoever starts the
trace) draws with the root ratio, and every service after it follows the W3C traceparent's
sampled flag. An unsampled request builds no span object anywhere: the caller sends a
traceparent with the sampled flag clear, written as a string, and the server reads that flag
before touching the tracer. The root ratio comes from the standard `OTEL_TRACES_SAMPLER` /
`OTEL_TRACES_SAMPLER_ARG` (always_on, always_off, traceidratio and their parentbased_ forms;
a request carrying a traceparent always follows it), else from `ETUDE_TRACE_SAMPLE_RATIO`, else
1% when recording to a file and 100% with only an endpoint (the SDK's own default).
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace

_log = structlog.get_logger()

TRACE_FILE_ENV = "ETUDE_TRACE_FILE"
TRACE_SAMPLE_RATIO_ENV = "ETUDE_TRACE_SAMPLE_RATIO"
# Requests traced when an experiment records traces to its result store and nothing says otherwise.
DEFAULT_TRACE_SAMPLE_RATIO = 0.01
TRACEPARENT = "traceparent"

_ALWAYS_ON = ("always_on", "parentbased_always_on")
_ALWAYS_OFF = ("always_off", "parentbased_always_off")
_RATIO = ("traceidratio", "parentbased_traceidratio")


@dataclass(frozen=True)
class RequestTracing:
    """What a service needs to trace requests: where spans go and how often a root is sampled."""

    tracer_provider: trace.TracerProvider
    # Fraction of requests that arrive without a traceparent (or start here) that are traced.
    root_sample_ratio: float

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def sample_root(self) -> bool:
        """The head-sampling decision for a request that carries no decision of its own."""
        ratio = self.root_sample_ratio
        return ratio >= 1.0 or (ratio > 0.0 and random.random() < ratio)


_request_tracing: RequestTracing | None = None


def request_tracing() -> RequestTracing | None:
    """The process's request tracing as `configure_tracing` installed it; None when off."""
    return _request_tracing


def unsampled_traceparent() -> str:
    """A W3C traceparent that tells the next service this request is not sampled.

    Random ids, as the spec asks, but no span behind them: building one costs about a
    microsecond, against ~12 us for a non-recording span from the SDK.
    """
    return f"00-{random.getrandbits(128) or 1:032x}-{random.getrandbits(64) or 1:016x}-00"


def traceparent_sampled(traceparent: str) -> bool | None:
    """The sampled flag of a version-00 traceparent; None when it is malformed (then ignored)."""
    if len(traceparent) != 55 or traceparent[2] != "-" or traceparent[52] != "-":
        return None
    try:
        return bool(int(traceparent[53:55], 16) & 1)
    except ValueError:
        return None


def root_sample_ratio(environ: Mapping[str, str], *, recording_to_file: bool) -> float:
    """The root sampling ratio the environment asks for (see the module docstring)."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in _ALWAYS_ON:
        return 1.0
    if sampler in _ALWAYS_OFF:
        return 0.0
    if sampler in _RATIO:
        # The OpenTelemetry spec's default argument for the ratio samplers is 1.0.
        return _ratio("OTEL_TRACES_SAMPLER_ARG", environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    if sampler:
        _log.warning("trace_sampler_unsupported", sampler=sampler, hint="using the root ratio instead")
    if TRACE_SAMPLE_RATIO_ENV in environ:
        return _ratio(TRACE_SAMPLE_RATIO_ENV, environ[TRACE_SAMPLE_RATIO_ENV])
    return DEFAULT_TRACE_SAMPLE_RATIO if recording_to_file else 1.0


def _ratio(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} = {text!r} must be a number in 0..1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} = {text!r} must be in 0..1")
    return value


def build_tracer_provider(service_name: str, exporters: Sequence[Any], *, batch: bool = True) -> Any:
    """An SDK tracer provider sending every span it is given to `exporters`.

    Its sampler is ParentBased(ALWAYS_ON): the decision was already taken at the request's root
    (`RequestTracing.sample_root` or the caller's traceparent) before any span was started, and
    a batch span, a root of its own, exists only because a sampled request is in the batch.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    for exporter in exporters:
        # The batch processor exports from its own thread: the event loop never writes spans.
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider


def configure_tracing(service_name: str) -> bool:
    """Installs the global tracer provider for this process; True when spans are exported."""
    global _request_tracing
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    trace_file = os.environ.get(TRACE_FILE_ENV, "")
    if not endpoint and not trace_file:
        return False
    ratio = root_sample_ratio(os.environ, recording_to_file=bool(trace_file))
    if ratio == 0.0 and not endpoint:
        # Nothing would ever be sampled here, and no caller's trace has anywhere to go.
        return False
    exporters: list[Any] = []
    try:
        if trace_file:
            exporters.append(OtlpJsonLinesExporter(Path(trace_file)))
        if endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
    except ImportError:
        _log.warning(
            "otlp_exporter_missing",
            endpoint=endpoint,
            trace_file=trace_file,
            hint="pip install opentelemetry-exporter-otlp-proto-grpc",
        )
        return False
    provider = build_tracer_provider(service_name, exporters)
    trace.set_tracer_provider(provider)
    _request_tracing = RequestTracing(provider, ratio)
    _log.info(
        "tracing_configured", endpoint=endpoint or None, trace_file=trace_file or None, root_ratio=ratio
    )
    return True


class OtlpJsonLinesExporter:
    """Writes spans as OTLP JSON, one ExportTraceServiceRequest per line (the OTLP file format).

    Ids are hex strings and enums integers, as OTLP/JSON requires (protobuf's own JSON mapping
    would write ids in base64). Called from the batch processor's thread.
    """

    def __init__(self, path: Path) -> None:
        # Imported here so that a process without tracing never loads the encoder.
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        self._encode = encode_spans
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from google.protobuf import json_format
        from opentelemetry.sdk.trace.export import SpanExportResult

        document = json_format.MessageToDict(self._encode(spans), use_integers_for_enums=True)
        _hex_ids(document)
        line = json.dumps(document, separators=(",", ":")) + "\n"
        try:
            with self._lock, self.path.open("a") as handle:
                handle.write(line)
        except OSError as error:
            _log.warning("trace_file_write_failed", path=str(self.path), error=str(error))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(document: dict[str, Any]) -> None:
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_fields(span)
                for link in span.get("links", ()):
                    _hex_fields(link)


def _hex_fields(entry: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        if name in entry:
            entry[name] = base64.b64decode(entry[name]).hex()
