"""`etude microbench`: every cell measured or reported failed, ordered percentiles, CSV and plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from etude.services.cli import main as etude_main
from etude.services.inference.microbench import (
    CSV_COLUMNS,
    CellResult,
    MicrobenchSettings,
    format_table,
    percentile_ms,
    plot_p90,
    resolve_models,
    run_microbench,
    write_csv,
)
from etude.services.inference.models import MODEL_NAMES, MODELS, ModelEntry

TINY = MicrobenchSettings(
    models=("gru4rec", "noop"),
    catalog_sizes=(100, 1000),
    runtimes=("eager", "jit"),
    requests=5,
    warmup=2,
)


@pytest.fixture(scope="module")
def tiny_results() -> list[CellResult]:
    return run_microbench(TINY)


def test_every_cell_is_measured_with_ordered_percentiles(tiny_results: list[CellResult]) -> None:
    cells = {(r.model, r.catalog_size, r.runtime, r.device) for r in tiny_results}
    assert cells == {
        (model, size, runtime, "cpu")
        for model in ("gru4rec", "noop")
        for size in (100, 1000)
        for runtime in ("eager", "jit")
    }
    for result in tiny_results:
        assert result.ok, result.error
        assert result.requests == 5
        assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms
        assert result.encoder_p50_ms > 0 and result.scoring_p50_ms > 0
    dims = {r.catalog_size: r.embedding_dim for r in tiny_results}
    assert dims == {100: 4, 1000: 6}  # the fourth-root policy


def test_the_csv_has_one_row_per_cell_and_the_plot_is_a_png(
    tiny_results: list[CellResult], tmp_path: Path
) -> None:
    with write_csv(tiny_results, tmp_path / "microbench.csv").open() as table:
        reader = csv.DictReader(table)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    assert len(rows) == 8
    for row in rows:
        assert float(row["p50_ms"]) <= float(row["p90_ms"]) <= float(row["p99_ms"])
        assert row["error"] == ""
    png = plot_p90(tiny_results, tmp_path / "microbench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_a_failing_model_is_reported_with_its_reason_and_the_bench_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(
        MODELS, "broken", ModelEntry("cannot be built", "etude.services.inference.models.nothing:build")
    )
    settings = MicrobenchSettings(
        models=("broken", "gru4rec"), catalog_sizes=(50,), runtimes=("eager",), requests=3
    )
    broken, gru4rec = run_microbench(settings)
    assert not broken.ok
    assert broken.error == "ModuleNotFoundError: No module named 'etude.services.inference.models.nothing'"
    assert math.isnan(broken.p90_ms)
    assert gru4rec.ok and gru4rec.p90_ms > 0
    table = format_table([broken, gru4rec])
    assert "failed: ModuleNotFoundError" in table.splitlines()[1]
    with write_csv([broken, gru4rec], tmp_path / "mixed.csv").open() as output:
        rows = list(csv.DictReader(output))
    assert (rows[0]["p90_ms"], rows[0]["error"]) == ("", broken.error)
    # A plot of the cells that did run, the failed one left out.
    assert plot_p90([broken, gru4rec], tmp_path / "mixed.png").stat().st_size > 0


def test_a_device_that_is_not_there_fails_its_cells_only() -> None:
    settings = MicrobenchSettings(
        models=("noop",), catalog_sizes=(30,), runtimes=("eager",), devices=("cpu", "cuda:99"), requests=2
    )
    on_cpu, elsewhere = run_microbench(settings)
    assert on_cpu.ok
    assert not elsewhere.ok and elsewhere.error


def test_all_means_every_registered_model_noop_included() -> None:
    assert resolve_models(["all"]) == list(MODEL_NAMES)
    assert "noop" in resolve_models(["all"])
    assert resolve_models(["gru4rec", "all"])[0] == "gru4rec"
    with pytest.raises(ValueError, match="'gru4rc' is not one of"):
        resolve_models(["gru4rc"])


def test_percentiles_are_nearest_rank_observed_values() -> None:
    latencies_ns = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    assert [percentile_ms(latencies_ns, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile_ms([7_000_000], 99) == 7.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"requests": 0}, "requests must be >= 1"),
        ({"runtimes": ("eager", "fast")}, "'fast' is not one of"),
        ({"catalog_sizes": (0,)}, "catalog_sizes must be >= 1"),
        ({"alpha_length": 1.0}, "alpha_length must be > 1"),
        ({"models": ()}, "models must not be empty"),
        ({"devices": ("gpu",)}, "'gpu' is not a torch device"),
    ],
)
def test_invalid_settings_are_refused_naming_the_setting(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MicrobenchSettings(**{"models": ("noop",), **changes})  # type: ignore[arg-type]


def test_etude_microbench_prints_the_table_and_writes_csv_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "microbench", "--models", "noop", "--catalog-sizes", "100,1000", "--runtime", "eager",
        "--requests", "3", "--warmup", "1", "--output", str(tmp_path),
    ]  # fmt: skip
    assert etude_main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["model", "device", "runtime"]
    assert sum(line.startswith("noop") for line in out.splitlines()) == 2
    assert (tmp_path / "microbench.csv").exists() and (tmp_path / "microbench.png").exists()


def test_etude_microbench_refuses_an_unknown_model_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    assert etude_main(["microbench", "--models", "gru4rc", "--output", "/nonexistent"]) == 2
    assert "'gru4rc' is not one of" in capsys.readouterr().err
