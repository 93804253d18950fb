"""Runs an experiment: for each trial deploy the inference service, drive the load, store results.

The trial logic is shared by every target; a Driver only knows how to bring services up and
down (local child processes, Kubernetes objects), a LoadGeneratorClient how to run a load test.
Every store write runs off the event loop (AsyncResultStore), in the order it was made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import structlog

from etude.provenance import current_environment
from etude.v1 import controller_pb2, experiment_pb2, loadgen_pb2

from ..report.slo import RATE_TOLERANCE, evaluate_run
from ..report.summary import summary_table
from ..results.documents import experiment_text, to_dict
from ..results.errors import ResultsError, ResultsUnwritable
from ..results.layout import Layout
from ..results.store import AsyncResultStore, ResultStore
from ..workload.trial import log_speedup, workload_spec
from .drivers.driver import Driver
from .drivers.owner import CURRENT_OWNER, ExperimentOwner
from .drivers.processes import ServiceStartError
from .loadgen_client import LoadGeneratorClient, LoadRunError, connect_loadgen
from .matrix import estimated_load_s, expand_trials
from .merge import ProgressMerger, instance_dir, instance_run_id, merge_runs
from .model_info import model_info, record_model_info, record_server_memory
from .resources import ResourceSampler, attach_to_series
from .search import SearchSettings, search_max_rate

_log = structlog.get_logger()

# How long a broken-off load waits for the driver to name a service that died with it.
LOSS_EXPLANATION_S = 3.0
# How long past the end of its load a trial may take to drain and summarise.
RUN_MARGIN_S = 60.0
# How often what the services write locally (records, logs) is synced into the store while an
# experiment runs, besides at the end of each trial: a crash loses at most this much of them.
SYNC_INTERVAL_S = 30.0

EventCallback = Callable[[controller_pb2.ExperimentEvent], None]
Summary = loadgen_pb2.LoadSummary


class ServiceLost(RuntimeError):
    """A service of the trial stopped serving while its load ran; the message says how."""


INTERRUPTED_ERROR = "interrupted: the controller stopped while it ran; resubmit to measure it"
State = experiment_pb2.TrialState


def new_experiment(
    spec: experiment_pb2.ExperimentSpec, store: ResultStore | AsyncResultStore
) -> controller_pb2.Experiment:
    """A queued experiment for a resolved spec, with its trials pending and an id of its own."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    experiment_id = f"{spec.name}-{stamp}-{int(now * 1000) % 1000:03d}"
    experiment = controller_pb2.Experiment(
        experiment_id=experiment_id,
        state=controller_pb2.EXPERIMENT_STATE_QUEUED,
        spec=spec,
        results_uri=store.uri(experiment_id),
        created_unix_ms=int(now * 1000),
        environment=current_environment(),
        estimated_load_s=estimated_load_s(spec),
    )
    for trial in expand_trials(spec):
        experiment.trials.add(trial=trial, state=State.TRIAL_STATE_PENDING)
    return experiment


class ExperimentRunner:
    """Runs the trials of one experiment in order, keeping `experiment` and the store up to date."""

    def __init__(
        self,
        experiment: controller_pb2.Experiment,
        driver: Driver,
        store: ResultStore,
        on_event: EventCallback = lambda event: None,
    ) -> None:
        self.experiment = experiment
        self.driver = driver
        self.store = AsyncResultStore(store)
        self.layout = Layout(experiment.experiment_id)
        self.on_event = on_event
        # None: one ramp per trial, as the spec's load says; else an SLO search per trial.
        spec = experiment.spec
        self.search = SearchSettings.from_spec(spec.search) if spec.HasField("search") else None
        # Set before cancelling run() when the controller stops (not the user): the experiment
        # and its running trial end INTERRUPTED rather than CANCELLED.
        self.interrupted = False
        self._syncing: asyncio.Task[None] | None = None
        # host:port of the experiment's workload service ("" when the driver runs none).
        self._workload_endpoint = ""

    async def run(self) -> controller_pb2.Experiment:
        experiment = self.experiment
        # What the driver starts from here on is recorded as this experiment's (drivers/owner.py).
        CURRENT_OWNER.set(ExperimentOwner(experiment.experiment_id, self.store))
        experiment.state = controller_pb2.EXPERIMENT_STATE_RUNNING
        instances = max(1, experiment.spec.loadgen_instances)
        try:
            await self.store.write_json(self.layout.spec_file, to_dict(experiment.spec))
            await self._save()
            log_dir = await self.store.local_dir(self.layout.logs)
            self._syncing = asyncio.create_task(self._sync_periodically(), name="sync-results")
            async with AsyncExitStack() as stack:
                services = await stack.enter_async_context(AsyncExitStack())
                loadgens = await self._start_services(services, log_dir, instances)
                for result in experiment.trials:
                    if dead := await self.driver.dead_services():
                        # A load generator or the workload service lost in the last trial:
                        # fresh ones for the next.
                        _log.warning("replacing_services", dead=dead)
                        await services.aclose()
                        loadgens = await self._start_services(services, log_dir, instances)
                    await self._run_trial(result, loadgens)
        except asyncio.CancelledError:
            if self.interrupted:
                await self._finish(controller_pb2.EXPERIMENT_STATE_INTERRUPTED, INTERRUPTED_ERROR)
            else:
                await self._finish(controller_pb2.EXPERIMENT_STATE_CANCELLED, "cancelled")
            raise
        except ResultsUnwritable as error:
            # A full or read-only store: no later trial could keep its results either.
            _log.error("experiment_failed", experiment_id=experiment.experiment_id, error=str(error))
            for result in experiment.trials:
                if result.state in (State.TRIAL_STATE_DEPLOYING, State.TRIAL_STATE_RUNNING):
                    result.state, result.error = State.TRIAL_STATE_FAILED, str(error)
            await self._finish(controller_pb2.EXPERIMENT_STATE_FAILED, str(error))
            return experiment
        except Exception as error:
            _log.exception("experiment_failed", experiment_id=experiment.experiment_id)
            await self._finish(controller_pb2.EXPERIMENT_STATE_FAILED, f"{type(error).__name__}: {error}")
            return experiment
        failed = [r.trial.trial_id for r in experiment.trials if r.state == State.TRIAL_STATE_FAILED]
        if failed:
            await self._finish(controller_pb2.EXPERIMENT_STATE_FAILED, f"trials failed: {', '.join(failed)}")
        else:
            await self._finish(controller_pb2.EXPERIMENT_STATE_SUCCEEDED, "")
        return experiment

    async def _start_services(
        self, stack: AsyncExitStack, log_dir: Path, instances: int
    ) -> list[LoadGeneratorClient]:
        """The experiment's workload service, then its load generators (which stream from it)."""
        self._workload_endpoint = await stack.enter_async_context(self.driver.workload_service(log_dir))
        loadgens: list[LoadGeneratorClient] = []
        for index in range(instances):
            endpoint = await stack.enter_async_context(self.driver.loadgen_service(log_dir, index))
            loadgens.append(await stack.enter_async_context(connect_loadgen(endpoint)))
        return loadgens

    async def _run_trial(
        self, result: experiment_pb2.TrialResult, loadgens: list[LoadGeneratorClient]
    ) -> None:
        experiment, trial = self.experiment, result.trial
        trial_dir = self.layout.trial(trial.trial_id)
        trial_file = self.layout.trial_file(trial.trial_id)
        result.results_uri = self.store.uri(trial_dir)
        await self._set_state(result, State.TRIAL_STATE_DEPLOYING)
        records_dir = await self.store.local_dir(trial_dir)
        try:
            async with self.driver.inference_service(trial, experiment.spec, records_dir) as endpoint:
                record_model_info(result, await model_info(endpoint))
                await self._set_state(result, State.TRIAL_STATE_RUNNING)
                if self.search is None:
                    summary = await self._drive_load(
                        trial, endpoint, records_dir, loadgens, experiment.spec.load, trial.trial_id
                    )
                    result.summary.CopyFrom(summary)
                    result.slo_met, result.slo_verdict = await asyncio.to_thread(
                        evaluate_run, experiment.spec, summary, records_dir
                    )
                else:
                    await self._search(self.search, result, endpoint, loadgens)
                # Once the load has run: each server's peak covers building and serving.
                record_server_memory(result, await model_info(endpoint))
            result.state = State.TRIAL_STATE_SUCCEEDED
        except asyncio.CancelledError:
            if self.interrupted:
                result.state, result.error = State.TRIAL_STATE_INTERRUPTED, INTERRUPTED_ERROR
            else:
                result.state, result.error = State.TRIAL_STATE_CANCELLED, "cancelled while running"
            # Shielded: the write must land although this task is being cancelled.
            await asyncio.shield(self.store.write_json(trial_file, to_dict(result)))
            raise
        except (ServiceStartError, ServiceLost, LoadRunError, OSError, ValueError) as error:
            result.state = State.TRIAL_STATE_FAILED
            result.error = _describe(error)
            _log.error("trial_failed", trial_id=trial.trial_id, error=result.error)
        try:
            await self.store.write_json(trial_file, to_dict(result))
        except ResultsUnwritable as error:
            # A result that cannot be kept is not a result; a failure keeps its first reason.
            if result.state != State.TRIAL_STATE_FAILED:
                result.state, result.error = State.TRIAL_STATE_FAILED, str(error)
            raise
        await self._sync()
        await self._set_state(result, result.state)

    async def _search(
        self,
        settings: SearchSettings,
        result: experiment_pb2.TrialResult,
        endpoint: str,
        loadgens: list[LoadGeneratorClient],
    ) -> None:
        """Probes constant rates against the deployed service; keeps every probe's records."""
        spec, trial = self.experiment.spec, result.trial
        probed: list[experiment_pb2.SearchProbe] = []

        async def probe(rate_per_s: float) -> experiment_pb2.SearchProbe:
            probe_spec = experiment_pb2.ExperimentSpec()
            probe_spec.CopyFrom(spec)
            probe_spec.load.target_rate_per_s = probe_spec.slo.rate_per_s = rate_per_s
            probe_dir = await self.store.local_dir(
                self.layout.probe(trial.trial_id, len(probed) + 1, rate_per_s)
            )
            run_id = f"{trial.trial_id}@{rate_per_s:g}/s"
            summary = await self._drive_load(trial, endpoint, probe_dir, loadgens, probe_spec.load, run_id)
            met, verdict = await asyncio.to_thread(evaluate_run, probe_spec, summary, probe_dir)
            probed.append(
                experiment_pb2.SearchProbe(
                    rate_per_s=rate_per_s, slo_met=met, verdict=verdict, summary=summary
                )
            )
            return probed[-1]

        best, probes = await search_max_rate(settings, spec.slo.rate_per_s, probe)
        result.probes.extend(probes)
        result.max_sustained_rate_per_s = best
        best_probes = [p for p in probes if p.slo_met and p.rate_per_s == best]
        result.summary.CopyFrom((best_probes or probes)[-1].summary)
        result.slo_met = best >= spec.slo.rate_per_s * (1 - RATE_TOLERANCE)
        tried = ", ".join(f"{p.rate_per_s:g}{' ok' if p.slo_met else ' missed'}" for p in probes)
        result.slo_verdict = (
            f"sustains {best:g} req/s within p{spec.slo.percentile:g} <= {spec.slo.latency_ms:g} ms "
            f"(required {spec.slo.rate_per_s:g}{'' if result.slo_met else ', MISSED'}); probes: {tried}"
        )

    async def _drive_load(
        self,
        trial: experiment_pb2.Trial,
        endpoint: str,
        records_dir: Path,
        loadgens: list[LoadGeneratorClient],
        profile: loadgen_pb2.LoadProfile,
        run_id: str,
    ) -> loadgen_pb2.LoadSummary:
        pid = self.driver.inference_pid()
        if pid is None:
            return await self._drive_loadgens(trial, endpoint, records_dir, loadgens, profile, run_id)
        sampler = ResourceSampler(pid)
        async with sampler.sampling() as samples:
            summary = await self._drive_loadgens(trial, endpoint, records_dir, loadgens, profile, run_id)
        try:
            await asyncio.to_thread(attach_to_series, records_dir, samples)
        except (ResultsError, OSError) as error:
            _log.warning("resources_not_attached", run_id=run_id, error=str(error))
        return summary

    async def _drive_loadgens(
        self,
        trial: experiment_pb2.Trial,
        endpoint: str,
        records_dir: Path,
        loadgens: list[LoadGeneratorClient],
        profile: loadgen_pb2.LoadProfile,
        run_id: str,
    ) -> loadgen_pb2.LoadSummary:
        if len(loadgens) == 1:
            async with self.driver.loadgen_records(records_dir) as loadgen_records_dir:
                return await self._while_services_serve(
                    self._run_load(trial, endpoint, loadgen_records_dir, loadgens[0], profile, run_id)
                )
        return await self._while_services_serve(
            self._drive_instances(trial, endpoint, records_dir, loadgens, profile, run_id)
        )

    async def _while_services_serve(self, load: Awaitable[Summary]) -> Summary:
        """Runs `load` while the driver's services serve; a service lost stops the load at once
        and fails the trial with the reason (MLPerf's rule: a run that lost its system under
        test is not a result). What the load generator wrote until then stays."""
        running = asyncio.ensure_future(load)
        lost = asyncio.ensure_future(self.driver.service_lost())
        try:
            await asyncio.wait({running, lost}, return_when=asyncio.FIRST_COMPLETED)
            if running.done() and running.exception() is not None and not lost.done():
                # A load that broke off (UNAVAILABLE) is often the first news of a death: let the
                # driver say which service died and how before reporting the RPC error.
                await asyncio.wait({lost}, timeout=LOSS_EXPLANATION_S)
            if lost.done():
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                raise ServiceLost(lost.result())
            return running.result()
        finally:
            for task in (running, lost):
                task.cancel()
            await asyncio.gather(running, lost, return_exceptions=True)

    async def _drive_instances(
        self,
        trial: experiment_pb2.Trial,
        endpoint: str,
        records_dir: Path,
        loadgens: list[LoadGeneratorClient],
        profile: loadgen_pb2.LoadProfile,
        run_id: str,
    ) -> loadgen_pb2.LoadSummary:
        """Runs the load on every instance at once, each at the rate / N (same ramp, so the sum
        follows the profile) on sessions of its own, and merges their files into `records_dir`."""
        instances = len(loadgens)
        share = loadgen_pb2.LoadProfile()
        share.CopyFrom(profile)
        share.target_rate_per_s = profile.target_rate_per_s / instances
        merger = ProgressMerger(instances, run_id, self._progress)
        folders = [instance_dir(records_dir, index) for index in range(instances)]

        async def run_instance(index: int) -> loadgen_pb2.LoadSummary:
            try:
                async with self.driver.loadgen_records(folders[index], index) as loadgen_records_dir:
                    return await self._run_load(
                        trial, endpoint, loadgen_records_dir, loadgens[index], share,
                        instance_run_id(run_id, index), session_partition=index,
                        session_partition_count=instances,
                        on_progress=lambda progress: merger.add(index, progress),
                    )  # fmt: skip
            finally:
                merger.finish(index)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(run_instance(index)) for index in range(instances)]
        except* Exception as errors:
            # The first failure fails the trial as it would with one instance (the rest are
            # cancelled by it); _run_trial knows its type, not an ExceptionGroup's.
            raise errors.exceptions[0] from None
        summaries = [task.result() for task in tasks]
        return await asyncio.to_thread(merge_runs, folders, summaries, records_dir, run_id)

    async def _run_load(
        self,
        trial: experiment_pb2.Trial,
        endpoint: str,
        records_dir: str,
        loadgen: LoadGeneratorClient,
        profile: loadgen_pb2.LoadProfile,
        run_id: str,
        session_partition: int = 0,
        session_partition_count: int = 1,
        on_progress: Callable[[loadgen_pb2.TickProgress], None] | None = None,
    ) -> loadgen_pb2.LoadSummary:
        workload = workload_spec(trial, self.experiment.spec)
        # Instances of one run replay different sessions over the same catalog popularity (a
        # replay: each its own part of the log).
        workload.session_partition = session_partition
        if workload.HasField("replay"):
            workload.session_partition_count = session_partition_count
        load_spec = loadgen_pb2.LoadSpec(
            target=endpoint,
            profile=profile,
            workload=workload,
            workload_endpoint=self._workload_endpoint,
            records_dir=records_dir,
            run_id=run_id,
            transport=self.experiment.spec.loadgen_transport,
            log_speedup=log_speedup(self.experiment.spec.workload),
        )
        deadline_s = (
            profile.ramp_duration_s
            + profile.hold_duration_s
            + profile.request_timeout_ms / 1000
            + RUN_MARGIN_S
        )
        return await loadgen.run(load_spec, deadline_s, on_progress or self._progress)

    def _progress(self, progress: loadgen_pb2.TickProgress) -> None:
        self.on_event(
            controller_pb2.ExperimentEvent(experiment_id=self.experiment.experiment_id, progress=progress)
        )

    async def _set_state(self, result: experiment_pb2.TrialResult, state: int) -> None:
        result.state = state  # type: ignore[assignment]
        await self._save()
        self.on_event(
            controller_pb2.ExperimentEvent(experiment_id=self.experiment.experiment_id, trial=result)
        )

    async def _sync(self) -> None:
        """Syncs the experiment's local files (records, logs) into the store, off the event loop.
        A failure is logged, not raised: the files stay staged and the next sync retries them."""
        try:
            await self.store.sync(self.layout.root)
        except Exception:
            _log.exception("results_sync_failed", experiment_id=self.experiment.experiment_id)

    async def _sync_periodically(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            await self._sync()

    async def _finish(self, state: int, error: str) -> None:
        experiment = self.experiment
        if self._syncing is not None:
            self._syncing.cancel()
        for result in experiment.trials:
            if result.state in (
                State.TRIAL_STATE_PENDING,
                State.TRIAL_STATE_DEPLOYING,
                State.TRIAL_STATE_RUNNING,
            ):
                result.state = State.TRIAL_STATE_CANCELLED
        experiment.state = state  # type: ignore[assignment]
        experiment.error = error
        experiment.finished_unix_ms = int(time.time() * 1000)
        try:
            # Shielded: when the experiment is being cancelled, its final state must still land.
            await asyncio.shield(self._save())
            await asyncio.shield(
                self.store.write_text(self.layout.summary_table, summary_table(experiment) + "\n")
            )
            await self._sync()  # the report reads the trials' records and series from the store
            await self._write_report()
        except ResultsUnwritable as error:
            # The state is final in memory (GetExperiment, watchers, `etude run`'s exit status).
            _log.error("final_state_not_stored", experiment_id=experiment.experiment_id, error=str(error))
        finally:
            # Also when cancelled again while the report is written: watchers wait for this event.
            self.on_event(
                controller_pb2.ExperimentEvent(experiment_id=experiment.experiment_id, finished=experiment)
            )

    async def _write_report(self) -> None:
        """report.md and report.html, off the event loop; a failure is logged, never raised: the
        results are already stored and the report can be rebuilt with `etude report`."""
        experiment_id = self.experiment.experiment_id
        try:
            from ..report.report import write_report

            await asyncio.to_thread(write_report, self.store.blocking, experiment_id)
        except Exception:
            _log.exception("report_failed", experiment_id=experiment_id)

    async def _save(self) -> None:
        """experiment.json as the experiment stands now (its snapshot taken before the write)."""
        await self.store.write_text(self.layout.experiment_file, experiment_text(self.experiment))


def _describe(error: Exception) -> str:
    if isinstance(error, LoadRunError):
        return str(error)
    return f"{type(error).__name__}: {error}"
