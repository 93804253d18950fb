"""A team names its own model file in a spec: the contract is checked before any trial, the file
is served by the trial's inference service, and a bad file is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from etude.services.controller.drivers.local import LocalDriver
from etude.services.controller.options import inference_options
from etude.services.controller.runner import ExperimentRunner, new_experiment
from etude.services.controller.validation import resolve
from etude.services.inference.model_file import export_model
from etude.services.results.store import LocalResultStore

from etude.spec import SpecError, parse_spec_dict
from etude.v1 import experiment_pb2


def _spec(model_path: str, **changes: object) -> experiment_pb2.ExperimentSpec:
    return parse_spec_dict(
        {
            "name": "own-model",
            "models": [{"name": "our-gru", "model_path": model_path}],
            "catalog_sizes": [500],
            "runtimes": ["eager"],
            "workload": {"exponents": {"alpha_length": 2.0, "alpha_clicks": 2.0}},
            "load": {"target_rate_per_s": 20, "ramp_duration_s": 1, "hold_duration_s": 1},
            **changes,
        }
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "our-gru.pt"
    export_model("gru4rec", 500, path, embedding_dim=12)
    return path


async def test_an_exported_model_file_runs_as_a_trial_of_its_own(model_file: Path, tmp_path: Path) -> None:
    spec = resolve(_spec(str(model_file), results=str(tmp_path)))
    assert spec.models[0].embedding_dim == 12  # read from the file's table
    store = LocalResultStore(tmp_path)
    experiment = new_experiment(spec, store)
    (trial,) = experiment.trials
    options = inference_options(trial.trial, spec)
    assert options["model_path"] == str(model_file) and "model" not in options
    await ExperimentRunner(experiment, LocalDriver(startup_timeout_s=120), store).run()
    (result,) = experiment.trials
    assert result.trial.trial_id == "our-gru-c500-cpu-eager"
    assert result.state == experiment_pb2.TRIAL_STATE_SUCCEEDED, result.error
    assert result.summary.requests_ok > 0


def test_a_file_that_is_not_torchscript_is_refused_before_any_trial(tmp_path: Path) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a model")
    with pytest.raises(SpecError) as refused:
        resolve(_spec(str(bogus)))
    assert refused.value.field == "models[0].model_path" and "not a TorchScript file" in str(refused.value)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as refused:
        resolve(_spec(str(tmp_path / "missing.pt")))
    assert refused.value.field == "models[0].model_path" and "does not exist" in str(refused.value)


def test_each_catalog_size_must_be_the_files_own(model_file: Path) -> None:
    with pytest.raises(SpecError) as refused:
        resolve(_spec(str(model_file), catalog_sizes=[500, 1000]))
    assert refused.value.field == "catalog_sizes[1]" and "holds 500" in str(refused.value)


def test_the_kubernetes_target_needs_a_model_file_in_cloud_storage(model_file: Path) -> None:
    with pytest.raises(SpecError) as refused:
        resolve(_spec(str(model_file), target="kubernetes"))
    assert refused.value.field == "models[0].model_path" and "gs://" in str(refused.value)
