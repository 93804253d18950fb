"""Whether an experiment spec is valid, and the spec with every default made explicit.

Called wherever a spec is accepted (`etude run`/`etude search`, SubmitExperiment). It lives
here, above the services it names (the inference model registry, the workload presets), so
that the shared base (etude/spec.py: parsing) imports nothing from the services.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from etude import defaults
from etude.limits import (
    MAX_RATE_PER_S,
    MAX_SESSION_ITEMS,
    MAX_TRIALS,
    SPEC_LIMITS,
    LimitExceeded,
    check_limits,
    trial_count,
)
from etude.provenance import current_environment
from etude.spec import SpecError, read_spec_file
from etude.v1 import experiment_pb2, workload_pb2

from ..inference.models import MODELS
from ..inference.options import EMBEDDING_POLICIES, PRECISION_NAMES, RUNTIMES, resolve_embedding_dim
from ..inference.shard_mapping import STRATEGIES
from ..inference.shardable import ModelNotShardable, require_shardable
from ..inference.sizing import estimated_catalog_bytes
from ..loadgen.footprint import instances_needed
from ..loadgen.spec import TRANSPORTS
from ..workload.generator import PRESETS, InvalidWorkloadSpec, ScipyPowerLaw

DEVICES = ("cpu", "cuda")
WORKLOAD_SOURCES = (defaults.WORKLOAD_SOURCE, "replay")
# How a replay is paced: at the load profile's ramping rate, or by the log's own timestamps.
REPLAY_PACES = ("ramp", "log")
# The fields of WorkloadStats that describe a replayed log (none applies to synthetic sessions).
_REPLAY_FIELDS = (
    "path", "session_column", "item_column", "timestamp_column", "no_header", "pace", "speedup",
)  # fmt: skip
TARGETS = ("local", "kubernetes")
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# The rest of the machine's memory goes to the loadgen, the workload service and the OS.
LOCAL_MEMORY_SHARE = 0.8


def load_spec(path: str | Path, target: str = "") -> experiment_pb2.ExperimentSpec:
    """Reads, parses, validates and completes the spec file at `path`; a `target` given (the
    `--target` flag) replaces the file's before validation."""
    spec = read_spec_file(path)
    if target:
        spec.target = target
    return resolve(spec)


def resolve(spec: experiment_pb2.ExperimentSpec) -> experiment_pb2.ExperimentSpec:
    """Validates `spec` and returns a copy with every default made explicit (a model file's
    embedding width read from the file, once its contract is checked)."""
    validate(spec)
    full = with_defaults(spec)
    _check_model_files(full)
    _check_replay_log(full)
    return full


def _check_replay_log(spec: experiment_pb2.ExperimentSpec) -> None:
    """Indexes a replayed log now, as the workload service will: a missing, unreadable or empty
    log, or a wrong column, is refused with the reason before any trial; and every catalog must
    hold the log's N distinct items (they become ids 1..N)."""
    if spec.workload.source != "replay":
        return
    from ..workload.fit import ClickLogError
    from ..workload.gcs_log import local_click_log
    from ..workload.replay import ReplayRequest, index_click_log, require_catalog_covers
    from ..workload.trial import replay_source

    source = ReplayRequest.from_proto(
        workload_pb2.WorkloadSpec(catalog_size=1, replay=replay_source(spec.workload))
    ).source
    try:
        # A gs:// log is downloaded for the check and deleted once indexed (the index is apart).
        with tempfile.TemporaryDirectory(prefix="etude-replay-check-") as folder:
            index = index_click_log(local_click_log(source, Path(folder)))
    except ClickLogError as error:
        raise SpecError(f"workload.{error.field}", str(error)) from None
    try:
        for position, catalog_size in enumerate(spec.catalog_sizes):
            try:
                require_catalog_covers(index, catalog_size, source.path)
            except InvalidWorkloadSpec as error:
                raise SpecError(f"catalog_sizes[{position}]", str(error)) from None
    finally:
        index.close()


def _check_model_files(spec: experiment_pb2.ExperimentSpec) -> None:
    """Loads every model file of `spec` and probes its contract now, before any trial: a file
    that cannot be served is refused with the reason, and each catalog size must be the file's."""
    from ..inference.model_file import ModelFileError, load_model_file

    for index, model in enumerate(spec.models):
        if not model.model_path:
            continue
        try:
            loaded = load_model_file(model.model_path)
        except ModelFileError as error:
            raise SpecError(f"models[{index}].model_path", str(error)) from None
        for size_index, catalog_size in enumerate(spec.catalog_sizes):
            if catalog_size != loaded.catalog_size:
                raise SpecError(
                    f"catalog_sizes[{size_index}]",
                    f"{catalog_size:,} items, but models[{index}].model_path ({model.model_path}) holds"
                    f" {loaded.catalog_size:,}: a model file is served at its own catalog size",
                )
        model.embedding_dim = loaded.embedding_dim


def validate(spec: experiment_pb2.ExperimentSpec) -> None:
    """Raises SpecError for the first invalid field, naming its path and the allowed values."""
    if not _NAME_PATTERN.match(spec.name):
        raise SpecError(
            "name",
            f"{spec.name!r} must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit",
        )
    if not spec.models:
        raise SpecError("models", "name at least one model")
    known_models = MODELS.keys()
    for index, model in enumerate(spec.models):
        if model.model_path:
            if not _NAME_PATTERN.match(model.name):
                raise SpecError(
                    f"models[{index}].name",
                    f"{model.name!r}: a model file's label must be 1-40 characters of a-z, 0-9 and '-'",
                )
            if spec.target == "kubernetes" and not model.model_path.startswith("gs://"):
                raise SpecError(
                    f"models[{index}].model_path",
                    f"{model.model_path!r}: the kubernetes target's pods read model files from "
                    "gs://bucket/object, not from this machine's disk",
                )
        elif model.name not in known_models:
            raise SpecError(f"models[{index}].name", f"{model.name!r} is not one of {sorted(known_models)}")
        if model.embedding_dim < 0:
            raise SpecError(f"models[{index}].embedding_dim", "must be >= 0 (0 applies embedding_policy)")
    if not spec.catalog_sizes:
        raise SpecError("catalog_sizes", "name at least one catalog size")
    for index, size in enumerate(spec.catalog_sizes):
        if size < 1:
            raise SpecError(f"catalog_sizes[{index}]", f"{size} must be >= 1")
    _check_choice("embedding_policy", spec.embedding_policy, EMBEDDING_POLICIES)
    _validate_workload(spec.workload, spec.target)
    for index, option in enumerate(spec.hardware):
        path = f"hardware[{index}]"
        if not _NAME_PATTERN.match(option.name):
            raise SpecError(f"{path}.name", f"{option.name!r} must be 1-40 characters of a-z, 0-9 and '-'")
        _check_choice(f"{path}.device", option.device, DEVICES)
        if option.monthly_cost_usd < 0:
            raise SpecError(f"{path}.monthly_cost_usd", "must be >= 0")
        if option.replicas < 0:
            raise SpecError(f"{path}.replicas", "must be >= 0 (0 means 1)")
        if option.replicas > 1 and spec.target in ("", "local"):
            raise SpecError(f"{path}.replicas", "the local target runs exactly one replica")
        if option.cpu_threads < 0:
            raise SpecError(
                f"{path}.cpu_threads", "must be >= 0 (0: the cores but one, shared by the executors)"
            )
        if option.executors < 0:
            raise SpecError(f"{path}.executors", "must be >= 0 (0 means 1)")
        _validate_catalog_shards(spec, option, path)
    names = [option.name for option in spec.hardware]
    if len(set(names)) != len(names):
        raise SpecError("hardware", f"names must be unique, got {names}")
    for index, runtime in enumerate(spec.runtimes):
        _check_choice(f"runtimes[{index}]", runtime, RUNTIMES, allow_empty=False)
    for index, precision in enumerate(spec.precisions):
        _check_choice(f"precisions[{index}]", precision, PRECISION_NAMES, allow_empty=False)
    if len(set(spec.precisions)) != len(spec.precisions):
        raise SpecError("precisions", f"must not repeat a value, got {list(spec.precisions)}")
    _validate_batching(spec.batching)
    _validate_load(spec)
    _validate_slo(spec.slo)
    _validate_search(spec)
    if spec.repetitions < 0:
        raise SpecError("repetitions", "must be >= 0 (0 means 1)")
    if spec.loadgen_instances < 0:
        raise SpecError("loadgen_instances", "must be >= 0 (0 picks them from the rate)")
    _check_choice("target", spec.target, TARGETS)
    _check_choice("loadgen_transport", spec.loadgen_transport, TRANSPORTS)
    _validate_limits(spec)
    if spec.target == "kubernetes":
        _check_overlays(spec)


def _check_overlays(spec: experiment_pb2.ExperimentSpec) -> None:
    """Every hardware option deploys with an overlay: found now, not when its trial deploys
    after the others ran."""
    from .drivers.manifests import KubernetesDeployError, kustomize_dir, overlay_for, overlays

    try:
        available = overlays(kustomize_dir())
        for index, option in enumerate(spec.hardware):
            try:
                overlay_for(option, available)
            except KubernetesDeployError as error:
                raise SpecError(f"hardware[{index}].name", str(error)) from None
    except KubernetesDeployError as error:
        raise SpecError("target", str(error)) from None


def _validate_limits(spec: experiment_pb2.ExperimentSpec) -> None:
    """Upper bounds and finiteness of every number (etude/limits.py), a matrix of affordable
    size, and, on the local target, catalogs whose tables fit this machine's memory."""
    try:
        check_limits(spec, SPEC_LIMITS)
    except LimitExceeded as error:
        raise SpecError(error.field, error.reason) from None
    axes = (spec.models, spec.catalog_sizes, spec.hardware, spec.runtimes, spec.precisions)
    trials = trial_count(*(len(axis) for axis in axes), spec.repetitions)
    if trials > MAX_TRIALS:
        raise SpecError(
            "repetitions",
            f"the matrix (models x catalog sizes x hardware x runtimes x precisions x repetitions)"
            f" has {trials:,}"
            f" trials; at most {MAX_TRIALS:,} per experiment",
        )
    if spec.target not in ("", "local"):
        return  # the cluster's nodes, not this machine, hold the model
    memory_bytes = current_environment().memory_bytes
    for index, catalog_size in enumerate(spec.catalog_sizes):
        for model in spec.models:
            policy = spec.embedding_policy or defaults.EMBEDDING_POLICY
            dim = resolve_embedding_dim(catalog_size, model.embedding_dim, policy)
            needed = estimated_catalog_bytes(model.name, catalog_size, dim)
            if memory_bytes and needed > LOCAL_MEMORY_SHARE * memory_bytes:
                raise SpecError(
                    f"catalog_sizes[{index}]",
                    f"{model.name} at {catalog_size:,} items (d = {dim}) needs about"
                    f" {needed / 2**30:,.1f} GiB for its item tables; this machine has"
                    f" {memory_bytes / 2**30:,.1f} GiB"
                    f" (at most {LOCAL_MEMORY_SHARE:.0%} of it for one model)",
                )


def _check_choice(field: str, value: str, allowed: tuple[str, ...], *, allow_empty: bool = True) -> None:
    if (value or not allow_empty) and value not in allowed:
        raise SpecError(field, f"{value!r} is not one of {list(allowed)}")


def _validate_workload(workload: experiment_pb2.WorkloadStats, target: str) -> None:
    _check_choice("workload.source", workload.source, WORKLOAD_SOURCES)
    if workload.max_session_length < 0:
        raise SpecError(
            "workload.max_session_length",
            f"{workload.max_session_length} must be in 1..{MAX_SESSION_ITEMS}, "
            f"or 0 for {defaults.MAX_SESSION_LENGTH}",
        )
    if workload.source == "replay":
        _validate_replay(workload, target)
        return
    for name in _REPLAY_FIELDS:
        if getattr(workload, name):
            raise SpecError(f"workload.{name}", "applies to source: replay only (this workload is synthetic)")
    given = [
        name
        for name in ("exponents", "powerlaw_fits")
        if workload.HasField(name)  # type: ignore[arg-type]
    ] + (["preset"] if workload.preset else [])
    if len(given) != 1:
        raise SpecError(
            "workload",
            "give exactly one of exponents (alpha_length, alpha_clicks), powerlaw_fits or preset;"
            f" got {given or 'none'}",
        )
    if workload.preset and workload.preset not in PRESETS:
        raise SpecError("workload.preset", f"{workload.preset!r} is not one of {sorted(PRESETS)}")
    if workload.HasField("exponents"):
        for name in ("alpha_length", "alpha_clicks"):
            value = getattr(workload.exponents, name)
            if not value > 1.0:
                raise SpecError(f"workload.exponents.{name}", f"{value} must be > 1 (a power-law exponent)")
    if workload.HasField("powerlaw_fits"):
        for name in ("session_lengths", "click_counts"):
            fit = getattr(workload.powerlaw_fits, name)
            try:
                ScipyPowerLaw(fit.a, fit.loc, fit.scale).validate(f"workload.powerlaw_fits.{name}")
            except InvalidWorkloadSpec as error:
                raise SpecError(error.field, str(error).split(": ", 1)[-1]) from error


def _validate_replay(workload: experiment_pb2.WorkloadStats, target: str) -> None:
    """A replay names its log and how to pace it, and none of the synthetic statistics."""
    statistics = [
        name
        for name in ("exponents", "powerlaw_fits")
        if workload.HasField(name)  # type: ignore[arg-type]
    ] + (["preset"] if workload.preset else [])
    if statistics:
        raise SpecError(
            f"workload.{statistics[0]}",
            "a replay takes its sessions from the log: give no exponents, powerlaw_fits or preset",
        )
    if not workload.path:
        raise SpecError("workload.path", "source: replay needs the path of a click log (CSV or TSV)")
    if target == "kubernetes" and not workload.path.startswith("gs://"):
        raise SpecError(
            "workload.path",
            f"{workload.path!r}: the kubernetes target's workload pod reads click logs from "
            "gs://bucket/object, not from this machine's disk",
        )
    _check_choice("workload.pace", workload.pace, REPLAY_PACES)
    if workload.pace == "log" and not workload.timestamp_column:
        raise SpecError(
            "workload.timestamp_column",
            "pace: log sends each click at its time in the log: name the log's timestamp column",
        )
    if workload.speedup and workload.pace != "log":
        raise SpecError("workload.speedup", "applies to pace: log only")


def _validate_batching(batching: experiment_pb2.Batching) -> None:
    if batching.max_batch_size < 0:
        raise SpecError("batching.max_batch_size", f"must be >= 0 (0 means {defaults.MAX_BATCH_SIZE})")
    if batching.max_batch_delay_ms < 0:
        raise SpecError("batching.max_batch_delay_ms", "must be >= 0")
    if batching.max_queue_size < 0:
        raise SpecError("batching.max_queue_size", "must be >= 0 (0 means 4 x max_batch_size)")


def _validate_load(spec: experiment_pb2.ExperimentSpec) -> None:
    load = spec.load
    if not load.target_rate_per_s > 0:
        raise SpecError("load.target_rate_per_s", f"{load.target_rate_per_s} must be > 0")
    if load.ramp_duration_s < 0 or load.hold_duration_s < 0:
        field = "load.ramp_duration_s" if load.ramp_duration_s < 0 else "load.hold_duration_s"
        raise SpecError(field, "must be >= 0")
    if load.ramp_duration_s + load.hold_duration_s < 1:
        raise SpecError("load.hold_duration_s", "ramp_duration_s + hold_duration_s must be >= 1 second")
    if load.request_timeout_ms < 0:
        raise SpecError("load.request_timeout_ms", f"must be >= 0 (0 means {defaults.REQUEST_TIMEOUT_MS})")
    smallest_catalog = min(spec.catalog_sizes)
    if not 0 <= load.k <= smallest_catalog:
        raise SpecError(
            "load.k",
            f"{load.k} must be in 1..{smallest_catalog} (the smallest catalog), or 0 for {defaults.TOP_K}",
        )
    if load.k == 0 and smallest_catalog < defaults.TOP_K:
        raise SpecError("load.k", f"the default k = {defaults.TOP_K} exceeds catalog size {smallest_catalog}")
    _validate_candidates(spec)


def _validate_candidates(spec: experiment_pb2.ExperimentSpec) -> None:
    """A re-ranking load: lists no longer than the smallest catalog, for models that re-rank."""
    count = spec.load.candidates_per_request
    if count == 0:
        return
    smallest_catalog = min(spec.catalog_sizes)
    if not 0 < count <= smallest_catalog:
        raise SpecError(
            "load.candidates_per_request",
            f"{count} must be in 1..{smallest_catalog} (the smallest catalog), or 0 for the full catalog",
        )
    for index, model in enumerate(spec.models):
        refused = None if model.model_path else MODELS[model.name].candidates_refused
        if refused is not None:
            raise SpecError(
                "load.candidates_per_request",
                f"models[{index}] cannot re-rank candidates: {refused}; serve it in an experiment"
                " without candidates_per_request",
            )


def _validate_slo(slo: experiment_pb2.ServiceLevelObjective) -> None:
    if slo.percentile and not 0 < slo.percentile < 100:
        raise SpecError("slo.percentile", f"{slo.percentile} must be in (0, 100)")
    if slo.latency_ms < 0:
        raise SpecError("slo.latency_ms", "must be > 0")
    if slo.rate_per_s < 0:
        raise SpecError("slo.rate_per_s", "must be >= 0 (0 means the load's target rate)")


def _validate_search(spec: experiment_pb2.ExperimentSpec) -> None:
    """Signs here; upper bounds and finiteness with the other limits (etude/limits.py)."""
    if not spec.HasField("search"):
        return
    search = spec.search
    for name in ("start_rate_per_s", "max_rate_per_s", "precision"):
        if getattr(search, name) < 0:
            raise SpecError(f"search.{name}", f"{getattr(search, name):g} must be >= 0 (0 means the default)")
    if search.max_probes < 0:
        raise SpecError("search.max_probes", f"{search.max_probes} must be >= 0 (0 means 10)")
    start = search.start_rate_per_s or spec.slo.rate_per_s or spec.load.target_rate_per_s
    if search.max_rate_per_s and search.max_rate_per_s < start:
        raise SpecError(
            "search.max_rate_per_s",
            f"{search.max_rate_per_s:g} must be >= the first rate probed ({start:g}: search.start_rate_per_s,"
            " else the SLO's rate)",
        )


def with_defaults(spec: experiment_pb2.ExperimentSpec) -> experiment_pb2.ExperimentSpec:
    """A copy of `spec` with every implicit default written out, as it is stored with the results."""
    full = experiment_pb2.ExperimentSpec()
    full.CopyFrom(spec)
    full.embedding_policy = full.embedding_policy or defaults.EMBEDDING_POLICY
    full.workload.source = full.workload.source or defaults.WORKLOAD_SOURCE
    full.workload.max_session_length = full.workload.max_session_length or defaults.MAX_SESSION_LENGTH
    if full.workload.source == "replay":
        full.workload.pace = full.workload.pace or "ramp"
        if not full.workload.path.startswith("gs://"):
            # The workload service may run elsewhere than where the spec was written: absolute.
            full.workload.path = str(Path(full.workload.path).expanduser().resolve())
    if full.workload.preset:
        lengths, clicks = PRESETS[full.workload.preset]
        fits = full.workload.powerlaw_fits
        fits.session_lengths.a, fits.session_lengths.loc, fits.session_lengths.scale = (
            lengths.a, lengths.loc, lengths.scale,
        )  # fmt: skip
        fits.click_counts.a, fits.click_counts.loc, fits.click_counts.scale = (
            clicks.a,
            clicks.loc,
            clicks.scale,
        )
    if not full.hardware:
        full.hardware.add(name=defaults.HARDWARE_NAME, device=defaults.DEVICE)
    for option in full.hardware:
        option.replicas = option.replicas or 1
    if not full.runtimes:
        full.runtimes.append(defaults.RUNTIME)
    if not full.precisions:
        full.precisions.append(defaults.PRECISION)
    full.loadgen_transport = full.loadgen_transport or defaults.LOADGEN_TRANSPORT
    batching = full.batching
    batching.max_batch_size = batching.max_batch_size or defaults.MAX_BATCH_SIZE
    if not batching.HasField("max_batch_delay_ms"):
        batching.max_batch_delay_ms = defaults.MAX_BATCH_DELAY_MS
    batching.max_queue_size = (
        batching.max_queue_size or defaults.QUEUE_SIZE_PER_BATCH * batching.max_batch_size
    )
    full.load.request_timeout_ms = full.load.request_timeout_ms or defaults.REQUEST_TIMEOUT_MS
    full.load.k = full.load.k or defaults.TOP_K
    full.slo.percentile = full.slo.percentile or defaults.SLO_PERCENTILE
    full.slo.latency_ms = full.slo.latency_ms or defaults.SLO_LATENCY_MS
    full.slo.rate_per_s = full.slo.rate_per_s or full.load.target_rate_per_s
    full.repetitions = full.repetitions or 1
    if full.HasField("search"):
        search = full.search
        search.start_rate_per_s = search.start_rate_per_s or full.slo.rate_per_s
        search.max_rate_per_s = search.max_rate_per_s or min(
            defaults.SEARCH_CEILING_FACTOR * search.start_rate_per_s, MAX_RATE_PER_S
        )
        search.precision = search.precision or defaults.SEARCH_PRECISION
        search.max_probes = search.max_probes or defaults.SEARCH_MAX_PROBES
    if not full.loadgen_instances:
        # Auto: enough load generators that none spends more than its core budget at the rate.
        cost_us = defaults.LOADGEN_CPU_US_PER_REQUEST[full.loadgen_transport]
        full.loadgen_instances = instances_needed(full.load.target_rate_per_s, cost_us)
    full.target = full.target or defaults.TARGET
    full.results = full.results or defaults.RESULTS
    return full


def _validate_catalog_shards(
    spec: experiment_pb2.ExperimentSpec, option: experiment_pb2.HardwareOption, path: str
) -> None:
    """A sharded option: a strategy the shards know, models the shards can score, no more shards
    than items."""
    _check_choice(f"{path}.shard_strategy", option.shard_strategy, STRATEGIES)
    if option.catalog_shards < 0:
        raise SpecError(f"{path}.catalog_shards", "must be >= 0 (0 and 1: one server holds the catalog)")
    if option.catalog_shards < 2:
        if option.shard_strategy:
            raise SpecError(f"{path}.shard_strategy", "applies only with catalog_shards >= 2")
        return
    for index, model in enumerate(spec.models):
        if model.model_path:
            raise SpecError(
                f"{path}.catalog_shards", f"models[{index}] is a model file: only registry models shard"
            )
        try:
            require_shardable(model.name)
        except ModelNotShardable as error:
            raise SpecError(f"{path}.catalog_shards", f"models[{index}]: {error}") from None
    for index, size in enumerate(spec.catalog_sizes):
        if size < option.catalog_shards:
            raise SpecError(
                f"{path}.catalog_shards",
                f"{option.catalog_shards} shards for catalog_sizes[{index}] = {size} items",
            )
    if option.shard_strategy == "popular" and not spec.workload.HasField("exponents"):
        raise SpecError(
            f"{path}.shard_strategy",
            "popular needs the workload's exponents.alpha_clicks (its hot items are the synthetic "
            "workload's most clicked)",
        )
