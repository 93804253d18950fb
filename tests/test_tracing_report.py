"""The trace-based latency split the report shows, from OTLP JSON lines files and records.csv,
and the trace files a real `etude serve inference` process writes when the driver asks it to."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import grpc
import pytest
from etude.services.controller.drivers.processes import ChildService
from etude.services.report.analysis import SPLIT_PARTS
from etude.services.report.document import Bullets, Table
from etude.services.report.sections import _trace_split_blocks
from etude.services.report.traces import (
    analyse_trial_traces,
    parse_spans,
    trace_split,
    traced_requests,
)
from etude.services.report.trials import TrialReport
from etude.services.results.layout import INFERENCE_TRACE_FILE, LOADGEN_TRACE_FILE, Layout
from etude.services.results.records import RECORD_FIELDS, parse_records
from etude.services.results.store import LocalResultStore

from etude.telemetry import TRACE_FILE_ENV, TRACE_SAMPLE_RATIO_ENV
from etude.v1 import experiment_pb2, recommender_pb2, recommender_pb2_grpc

SEND_DELAY, NETWORK, SERVER_OTHER, QUEUEING, INFERENCE = SPLIT_PARTS
EPOCH = 1_700_000_000_000_000_000
RECOMMEND = "etude.v1.RecommenderService/Recommend"


def attribute(key: str, value: object) -> dict[str, object]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def span(
    trace_id: str,
    span_id: str,
    parent: str,
    name: str,
    kind: int,
    start_us: int,
    end_us: int,
    **attrs: object,
) -> dict[str, object]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(EPOCH + start_us * 1000),
        "endTimeUnixNano": str(EPOCH + end_us * 1000),
        "attributes": [attribute(key.replace("__", "."), value) for key, value in attrs.items()],
    }


def line(service: str, spans: list[dict[str, object]]) -> str:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [attribute("service.name", service)]},
                    "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
                }
            ]
        }
    )


def one_request(
    n: int,
    intended_ns: int,
    *,
    send_delay_us: int,
    client_us: int,
    server_us: int,
    queue_us: int,
    model_us: int,
) -> tuple[str, str]:
    """(loadgen line, inference line) of one traced request; times relative to 0 (us)."""
    trace_id, client_id, server_id = f"{n:032x}", f"{n:015x}1", f"{n:015x}2"
    server_start = send_delay_us + 100
    client = span(
        trace_id, client_id, "", "etude.v1.RecommenderService/Recommend", 3, 0, client_us,
        etude__session_id=f"s{n}", etude__click_index=0, etude__intended_send_ns=intended_ns,
        etude__send_delay_us=send_delay_us, rpc__grpc__status_code=0,
    )  # fmt: skip
    model_start = server_start + queue_us
    server = [
        span(trace_id, server_id, client_id, RECOMMEND, 2, server_start, server_start + server_us),
        span(trace_id, f"{n:015x}3", server_id, "inference.queued", 1, server_start, model_start),
        span(trace_id, f"{n:015x}4", server_id, "inference.model", 1, model_start, model_start + model_us),
    ]
    return line("etude-loadgen", [client]), line("etude-inference", server)


def records_csv(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, RECORD_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({field: row.get(field, 0) for field in RECORD_FIELDS})
    return out.getvalue()


def record(
    n: int,
    intended_ns: int,
    *,
    intended_us: int,
    actual_us: int,
    server_us: int,
    queue_us: int,
    model_us: int,
) -> dict[str, object]:
    return {
        "session_id": f"s{n}", "click_index": 0, "intended_send_ns": intended_ns, "status": "OK",
        "latency_from_intended_us": intended_us, "latency_from_actual_us": actual_us,
        "server_total_us": server_us, "queue_us": queue_us, "inference_us": model_us,
    }  # fmt: skip


def test_trace_split_joins_each_traced_request_with_its_row_and_measures_the_difference() -> None:
    loadgen_lines, inference_lines, rows = [], [], []
    for n in range(1, 5):
        intended_ns = 10_000 * n
        client_line, server_line = one_request(
            n,
            intended_ns,
            send_delay_us=50 * n,
            client_us=3000 + 50 * n,
            server_us=2000,
            queue_us=1200,
            model_us=500,
        )
        loadgen_lines.append(client_line)
        inference_lines.append(server_line)
        # The timing fields say the same, except the server total (30 us shorter: measured
        # before the answer was built) and a 10 us shorter latency for request 4.
        shorter = 10 if n == 4 else 0
        rows.append(
            record(
                n,
                intended_ns,
                intended_us=3000 + 50 * n - shorter,
                actual_us=3000 - shorter,
                server_us=1970,
                queue_us=1200,
                model_us=500,
            )
        )
    rows.append(
        record(99, 1, intended_us=1, actual_us=1, server_us=1, queue_us=0, model_us=0)
    )  # untraced row
    spans, unreadable = parse_spans("\n".join([*loadgen_lines, *inference_lines, '{"truncat']))
    assert unreadable == 1

    result = trace_split(spans, parse_records(records_csv(rows)), unreadable)

    assert (result.traced, result.matched) == (4, 4)
    assert result.split is not None
    assert result.split.p50_ms[QUEUEING] == pytest.approx(1.2)
    assert result.split.p50_ms[INFERENCE] == pytest.approx(0.5)
    assert result.split.p50_ms[SERVER_OTHER] == pytest.approx(0.3)
    assert result.split.p50_ms[NETWORK] == pytest.approx(1.0)
    assert result.split.p90_ms[SEND_DELAY] == pytest.approx(0.185)
    assert result.max_difference_ms[QUEUEING] == 0.0 and result.max_difference_ms[INFERENCE] == 0.0
    assert result.max_difference_ms[SERVER_OTHER] == pytest.approx(0.03)
    assert result.max_difference_ms[NETWORK] == pytest.approx(0.03)  # 30 us, and 40 us - 10 us
    assert "4 traced requests matched" in result.agreement()
    assert "0.030 ms" in result.agreement()


def test_a_traced_request_of_another_run_is_not_matched() -> None:
    client_line, server_line = one_request(
        1, 5, send_delay_us=0, client_us=100, server_us=50, queue_us=10, model_us=10
    )
    spans, _ = parse_spans(client_line + "\n" + server_line)
    other_run = record(1, 6, intended_us=100, actual_us=100, server_us=50, queue_us=10, model_us=10)
    result = trace_split(spans, parse_records(records_csv([other_run])))
    assert (result.traced, result.matched, result.split) == (1, 0, None)
    assert result.agreement() == "no traced request matched a row of records.csv"


def test_a_server_span_without_its_client_span_is_no_traced_request() -> None:
    _, server_line = one_request(1, 5, send_delay_us=0, client_us=100, server_us=50, queue_us=10, model_us=10)
    assert traced_requests(parse_spans(server_line)[0]) == []


def test_the_report_reads_the_trace_files_of_a_trial_and_of_a_search_probe(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    layout = Layout("exp")
    trial_id = "noop-c100-local-cpu-eager-1"
    trial, probe = layout.trial(trial_id), layout.probe(trial_id, 1, 100)
    assert probe == "exp/trials/noop-c100-local-cpu-eager-1/probes/01-100"
    client_line, server_line = one_request(
        1, 5, send_delay_us=0, client_us=100, server_us=50, queue_us=10, model_us=10
    )
    row = record(1, 5, intended_us=100, actual_us=100, server_us=50, queue_us=10, model_us=10)
    assert analyse_trial_traces(store, layout, trial_id, trial) is None  # no trace files: no section
    store.write_text(f"exp/logs/{LOADGEN_TRACE_FILE}", client_line + "\n")
    store.write_text(f"{trial}/{INFERENCE_TRACE_FILE}", server_line + "\n")
    store.write_text(f"{probe}/records.csv", records_csv([row]))
    store.write_text(f"{trial}/records.csv", records_csv([]))

    assert analyse_trial_traces(store, layout, trial_id, trial).matched == 0  # type: ignore[union-attr]
    result = analyse_trial_traces(store, layout, trial_id, probe)
    assert result is not None and result.matched == 1


def test_the_report_section_states_how_closely_the_splits_agree() -> None:
    client_line, server_line = one_request(
        1, 5, send_delay_us=0, client_us=100, server_us=50, queue_us=10, model_us=10
    )
    spans, _ = parse_spans(client_line + "\n" + server_line)
    row = record(1, 5, intended_us=100, actual_us=100, server_us=48, queue_us=10, model_us=10)
    result = experiment_pb2.TrialResult(trial=experiment_pb2.Trial(trial_id="t1"))
    blocks = _trace_split_blocks(
        [TrialReport(result, traces=trace_split(spans, parse_records(records_csv([row]))))]
    )
    (table,) = [block for block in blocks if isinstance(block, Table)]
    assert table.rows[0][0] == "t1" and table.rows[0][1] == "1" and table.rows[0][-1] == "0.002"
    (notes,) = [block for block in blocks if isinstance(block, Bullets)]
    assert "agrees within 0.002 ms" in notes.items[0]


async def test_an_inference_process_told_a_trace_file_writes_the_callers_sampled_trace(
    tmp_path: Path,
) -> None:
    trace_file = tmp_path / "trial" / INFERENCE_TRACE_FILE
    child = ChildService(
        "inference",
        ["--model", "noop", "--catalog-size", "50", "--max-batch-delay-ms", "0"],
        tmp_path / "inference.log",
        env={TRACE_FILE_ENV: str(trace_file), TRACE_SAMPLE_RATIO_ENV: "0.01"},
    )
    trace_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736
    try:
        endpoint = await child.start(startup_timeout_s=120)
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            request = recommender_pb2.RecommendRequest(session_id="s", item_ids=[1, 2], k=3)
            await stub.Recommend(
                request, metadata=(("traceparent", f"00-{trace_id:032x}-00f067aa0ba902b7-01"),)
            )
            await stub.Recommend(
                request, metadata=(("traceparent", f"00-{trace_id + 1:032x}-00f067aa0ba902b7-00"),)
            )
    finally:
        await child.stop(grace_s=10)  # the exporter flushes at exit
    text = trace_file.read_text()
    assert '"etude-inference"' in text
    spans, unreadable = parse_spans(text)
    assert unreadable == 0
    assert {s.trace_id for s in spans if s.name != "inference.batch"} == {f"{trace_id:032x}"}
    assert {s.name for s in spans} == {
        "etude.v1.RecommenderService/Recommend", "inference.queued", "inference.model", "inference.batch",
    }  # fmt: skip
