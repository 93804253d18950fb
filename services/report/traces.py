"""The latency split from an experiment's sampled traces, and how closely it agrees with records.csv.

During an experiment every service writes its sampled spans as OTLP JSON lines (one
ExportTraceServiceRequest per line): the inference service of a trial into the trial's folder,
the load generator (one per experiment) into logs/. A traced request is a client span (from
its intended send time to its answer) with the inference service's server span under it, and
that span's "inference.queued" and "inference.model" children. Its parts are the report's
SPLIT_PARTS, measured by the spans instead of the timing fields; the client span carries the
generator's intended send time, so each traced request joins its own row of records.csv.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..results.layout import RECORDS_FILE, Layout, in_folder
from ..results.records import RecordColumns, parse_records
from ..results.store import ResultStore
from .analysis import SPLIT_PARTS, LatencySplit, split_of, split_parts_us

# OTLP's Span.SpanKind values.
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
RECOMMEND_SPAN = "etude.v1.RecommenderService/Recommend"
QUEUED_SPAN = "inference.queued"
MODEL_SPAN = "inference.model"
GRPC_OK = 0

SEND_DELAY, NETWORK, SERVER_OTHER, QUEUEING, INFERENCE = SPLIT_PARTS


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span of an OTLP JSON trace file; times in ns since the epoch."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)

    @property
    def duration_us(self) -> int:
        return (self.end_ns - self.start_ns) // 1000


@dataclass(frozen=True, slots=True)
class TracedRequest:
    """A request seen by both the client and the server spans, split into SPLIT_PARTS (us)."""

    trace_id: str
    session_id: str
    click_index: int
    intended_send_ns: int | None  # the load generator's clock (records.csv), when recorded
    ok: bool
    latency_from_intended_us: int
    parts_us: dict[str, int]


@dataclass(frozen=True)
class TraceSplit:
    """The trace-based split of a run and its agreement with the timing fields."""

    spans: int
    unreadable_lines: int
    traced: int  # requests with a client and a server span
    matched: int  # traced OK answers joined with an OK row of the run's records.csv
    split: LatencySplit | None  # from the spans of the matched requests
    # Per part, |trace - timing| over the matched requests (ms): median and maximum.
    median_difference_ms: dict[str, float]
    max_difference_ms: dict[str, float]

    def agreement(self) -> str:
        """How closely the two splits agree, in words."""
        if not self.matched:
            return "no traced request matched a row of records.csv"
        worst = max(self.max_difference_ms, key=lambda part: self.max_difference_ms[part])
        return (
            f"{self.matched} traced requests matched their records.csv rows; per request, every part "
            f"agrees within {self.max_difference_ms[worst]:.3f} ms (largest: {worst}; median "
            f"difference {max(self.median_difference_ms.values()):.3f} ms or less)"
        )


def parse_spans(text: str) -> tuple[list[SpanRecord], int]:
    """The spans of an OTLP JSON lines file and the number of lines that could not be read
    (a service killed while writing leaves a truncated last line)."""
    spans: list[SpanRecord] = []
    unreadable = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            spans.extend(_spans_of(document))
        except (ValueError, KeyError, TypeError):
            unreadable += 1
    return spans, unreadable


def _spans_of(document: dict[str, Any]) -> Iterable[SpanRecord]:
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                yield SpanRecord(
                    trace_id=span["traceId"],
                    span_id=span["spanId"],
                    parent_span_id=span.get("parentSpanId", ""),
                    name=span["name"],
                    kind=int(span.get("kind", 0)),
                    start_ns=int(span["startTimeUnixNano"]),
                    end_ns=int(span["endTimeUnixNano"]),
                    attributes={a["key"]: _any_value(a.get("value", {})) for a in span.get("attributes", ())},
                    links=tuple((link["traceId"], link["spanId"]) for link in span.get("links", ())),
                )


def _any_value(value: dict[str, Any]) -> Any:
    """An OTLP AnyValue as a Python value (int64 values are strings in OTLP JSON)."""
    if "intValue" in value:
        return int(value["intValue"])
    for key in ("stringValue", "doubleValue", "boolValue"):
        if key in value:
            return value[key]
    return None


def traced_requests(spans: Sequence[SpanRecord]) -> list[TracedRequest]:
    """Requests with a client span and the server span under it, split into SPLIT_PARTS."""
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        if span.parent_span_id:
            children[span.parent_span_id].append(span)
    requests = []
    for client in spans:
        if client.kind != SPAN_KIND_CLIENT or client.name != RECOMMEND_SPAN:
            continue
        server = next((s for s in children[client.span_id] if s.kind == SPAN_KIND_SERVER), None)
        if server is None:
            continue
        under_server = {span.name: span for span in children[server.span_id]}
        queued = under_server.get(QUEUED_SPAN)
        model = under_server.get(MODEL_SPAN)
        queue_us = queued.duration_us if queued is not None else 0
        inference_us = model.duration_us if model is not None else 0
        send_delay_us = int(client.attributes.get("etude.send_delay_us", 0))
        from_actual_us = client.duration_us - send_delay_us
        intended = client.attributes.get("etude.intended_send_ns")
        requests.append(
            TracedRequest(
                trace_id=client.trace_id,
                session_id=str(client.attributes.get("etude.session_id", "")),
                click_index=int(client.attributes.get("etude.click_index", -1)),
                intended_send_ns=int(intended) if intended is not None else None,
                ok=client.attributes.get("rpc.grpc.status_code") == GRPC_OK,
                latency_from_intended_us=client.duration_us,
                parts_us={
                    SEND_DELAY: send_delay_us,
                    NETWORK: max(from_actual_us - server.duration_us, 0),
                    SERVER_OTHER: max(server.duration_us - queue_us - inference_us, 0),
                    QUEUEING: queue_us,
                    INFERENCE: inference_us,
                },
            )
        )
    return requests


def timing_parts(records: RecordColumns) -> dict[tuple[str, int, int], dict[str, int]]:
    """SPLIT_PARTS (us) of every OK row of records.csv from its timing fields, keyed by
    (session id, click index, intended send ns): analysis.split_parts_us's arithmetic."""
    ok = records.select(records.ok)
    parts = {part: values.tolist() for part, values in split_parts_us(ok).items()}
    keys = zip(ok.session_id.tolist(), ok.click_index.tolist(), ok.intended_send_ns.tolist(), strict=True)
    return {key: {part: parts[part][row] for part in SPLIT_PARTS} for row, key in enumerate(keys)}


def trace_split(spans: Sequence[SpanRecord], records: RecordColumns, unreadable_lines: int = 0) -> TraceSplit:
    """The split of the traced OK requests of the run whose records.csv holds `records`.

    Only requests that join a row of that file count (a search's probes share one trace file;
    the row's intended send time tells them apart), and each is compared with its own row.
    """
    requests = traced_requests(spans)
    timing = timing_parts(records)
    from_traces: dict[str, list[int]] = {part: [] for part in SPLIT_PARTS}
    differences: dict[str, list[int]] = {part: [] for part in SPLIT_PARTS}
    for request in requests:
        if not request.ok or request.intended_send_ns is None:
            continue
        row = timing.get((request.session_id, request.click_index, request.intended_send_ns))
        if row is None:
            continue
        for part in SPLIT_PARTS:
            from_traces[part].append(request.parts_us[part])
            differences[part].append(abs(request.parts_us[part] - row[part]))
    matched = len(from_traces[SPLIT_PARTS[0]])
    split: LatencySplit | None = None
    if matched:
        split = split_of({part: np.asarray(values) for part, values in from_traces.items()})
    return TraceSplit(
        spans=len(spans),
        unreadable_lines=unreadable_lines,
        traced=len(requests),
        matched=matched,
        split=split,
        median_difference_ms={
            part: float(np.median(values)) / 1000.0 if values else 0.0 for part, values in differences.items()
        },
        max_difference_ms={part: max(values, default=0) / 1000.0 for part, values in differences.items()},
    )


def analyse_trial_traces(
    store: ResultStore, layout: Layout, trial_id: str, run_folder: str
) -> TraceSplit | None:
    """The trace split of one run of a trial (`run_folder`: the trial's folder, or a probe folder
    inside it), from the trial's inference traces and the experiment's load-generator traces;
    None when the experiment recorded no traces for it. Blocking reads."""
    sources = (layout.inference_traces(trial_id), layout.loadgen_traces())
    records = in_folder(run_folder, RECORDS_FILE)
    if not all(store.exists(path) for path in (*sources, records)):
        return None
    spans: list[SpanRecord] = []
    unreadable = 0
    for path in sources:
        parsed, bad = parse_spans(store.read_text(path))
        spans += parsed
        unreadable += bad
    return trace_split(spans, parse_records(store.read_text(records), store.uri(records)), unreadable)
