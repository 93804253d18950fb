"""The Kubernetes target: a trial's services as objects rendered from deploy/kustomize, applied
through the Kubernetes API, watched until ready, and deleted when the trial ends (also on failure).

The inference service is a Deployment behind a headless Service (one per trial, named after the
trial); a trial with catalog shards adds a StatefulSet of shards behind a headless Service of its
own (components/catalog-shards), and its inference Deployment is the router over them. The load
generator is a Job behind a headless Service (one per experiment, or one per instance when
spec.loadgen_instances asks for several); the workload service the load generators stream from
is a Deployment behind a headless Service (one per experiment). The records
the load generator writes in its pod are copied back through `exec` after each run. The objects
themselves are rendered in manifests.py. Over 500 lines because it is one class around one API
client: creating, watching, tearing down, copying records and port-forwarding share its state.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import secrets
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from etude import defaults
from etude.v1 import experiment_pb2

from ...results.layout import service_log_file
from ...results.started import StartedProcess
from .manifests import (
    CATALOG_SHARDS_COMPONENT,
    INSTANCE_LABEL,
    MANAGED_BY,
    STATEFULSET_NAME_MAX,
    DeployConflict,
    DeployForbidden,
    KubernetesDeployError,
    PodFailed,
    inference_objects,
    kubectl_path,
    kustomize_dir,
    labelled_for_experiment,
    leftover_selector,
    loadgen_objects,
    object_name,
    overlay_for,
    overlays,
    render_manifests,
    render_with_catalog_shards,
    route_to_shards,
    shard_addresses,
    shard_objects,
    shard_port,
    workload_objects,
)
from .owner import CURRENT_OWNER

_log = structlog.get_logger()

# The load generator's emptyDir (deploy/kustomize/base/loadgen-job.yaml).
RECORDS_MOUNT = "/var/lib/etude/records"
# Container states that will not get better by waiting.
FATAL_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# Runs in the load generator's pod: the records folder as base64 of a tar.gz on stdout, then
# removed, so the pod's emptyDir does not fill up over many trials.
_COPY_OUT_SCRIPT = (
    "import base64,io,os,shutil,sys,tarfile\n"
    "d=sys.argv[1];b=io.BytesIO()\n"
    "with tarfile.open(fileobj=b,mode='w:gz') as t:\n"
    "    os.path.isdir(d) and t.add(d,arcname='.')\n"
    "shutil.rmtree(d,ignore_errors=True)\n"
    "sys.stdout.write(base64.b64encode(b.getvalue()).decode())\n"
)


@dataclass(frozen=True)
class _Kind:
    """How the driver creates, reads and deletes one kind of object, and the RBAC it takes."""

    kind: str
    group: str  # "" for the core API group
    resource: str


_DEPLOYMENT = _Kind("Deployment", "apps", "deployments")
_SERVICE = _Kind("Service", "", "services")
_JOB = _Kind("Job", "batch", "jobs")
_STATEFULSET = _Kind("StatefulSet", "apps", "statefulsets")
# What stop_leftovers looks for: every kind the driver creates.
_KINDS = (_DEPLOYMENT, _STATEFULSET, _JOB, _SERVICE)


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message", "")) or str(error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(error, "reason", error))


def forbidden(error: Any, verb: str, kind: _Kind, namespace: str) -> DeployForbidden:
    group = kind.group or '"" (core)'
    return DeployForbidden(
        f"forbidden: the controller may not {verb} {kind.resource} in namespace {namespace!r}: grant "
        f"verb {verb!r} on resource {kind.resource!r} of API group {group} in a Role bound to its "
        f"identity (deploy/kustomize/overlays/platform/role.yaml lists what it needs); "
        f"the API said: {_api_message(error)}"
    )


async def _to_completion(work: Awaitable[None]) -> None:
    """Awaits `work` to its end even if the caller is cancelled meanwhile (cleanup must finish);
    the cancellation is passed on afterwards."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


class KubernetesDriver:
    """Deploys each trial's services on a cluster; everything created is deleted on exit."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str | None = None,
        image: str | None = None,
        api_client: Any = None,
        kubeconfig: str | None = None,
        base_dir: Path | None = None,
        startup_timeout_s: float = defaults.STARTUP_TIMEOUT_S,
        poll_interval_s: float = 2.0,
        request_timeout_s: float = 30.0,
        on_conflict: Literal["replace", "fail"] = "replace",
        loadgen_access: Literal["service", "port-forward"] | None = None,
    ) -> None:
        from kubernetes import client

        self._kubeconfig = kubeconfig
        self.api_client = api_client if api_client is not None else _load_api_client(kubeconfig)
        self.namespace = namespace or _default_namespace(kubeconfig if api_client is None else None)
        self.image = image
        self.base_dir = base_dir or kustomize_dir()
        self.startup_timeout_s = startup_timeout_s
        self.poll_interval_s = poll_interval_s
        self.request_timeout_s = request_timeout_s
        self.on_conflict = on_conflict
        # In the cluster the Service's DNS name reaches the load generator; outside it, a port-forward.
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        self.loadgen_access = loadgen_access or ("service" if in_cluster else "port-forward")
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self._rendered: dict[str, list[dict[str, Any]]] = {}
        # The pod of each running load generator, by instance (several: spec.loadgen_instances).
        self._loadgen_pods: dict[int, str] = {}
        # Objects (by instance label) whose pods serve now: what service_lost() watches.
        self._serving: dict[str, str] = {}

    # -- the Driver protocol -------------------------------------------------------------------

    @asynccontextmanager
    async def inference_service(
        self, trial: experiment_pb2.Trial, spec: experiment_pb2.ExperimentSpec, log_dir: Path
    ) -> AsyncIterator[str]:
        """Yields host:port of the trial's headless Service once every replica is ready; with
        catalog shards, the router's, created once every shard is ready (all deleted with it)."""
        overlay = overlay_for(trial.hardware, overlays(self.base_dir))
        sharded = trial.hardware.catalog_shards >= 2
        rendered = await (self._render_sharded(overlay) if sharded else self._render(f"overlays/{overlay}"))
        name = object_name("etude-inf", trial.trial_id, f"{spec.name}/{trial.trial_id}")
        deployment, service = inference_objects(rendered, name, self.namespace, trial, spec, self.image)
        async with AsyncExitStack() as shards:
            if sharded:
                addresses = await shards.enter_async_context(
                    self._catalog_shards(rendered, trial, spec, log_dir)
                )
                route_to_shards(deployment, addresses)
            what = f"inference service of trial {trial.trial_id} (Deployment {self.namespace}/{name})"
            _log.info(
                "k8s_deploying", trial_id=trial.trial_id, name=name, overlay=overlay, namespace=self.namespace
            )
            async with self._replicas_serving(
                _DEPLOYMENT, deployment, service, what, log_dir, service_log_file("inference")
            ):
                yield f"{name}.{self.namespace}.svc.cluster.local:{defaults.INFERENCE_PORT}"

    @asynccontextmanager
    async def _catalog_shards(
        self,
        rendered: list[dict[str, Any]],
        trial: experiment_pb2.Trial,
        spec: experiment_pb2.ExperimentSpec,
        log_dir: Path,
    ) -> AsyncIterator[list[str]]:
        """Yields the shards' addresses (in shard order) once every shard pod is ready; the
        StatefulSet and its Service are deleted on exit, each pod's log saved as shard-I.log."""
        name = object_name(
            "etude-shd", trial.trial_id, f"{spec.name}/{trial.trial_id}", max_length=STATEFULSET_NAME_MAX
        )
        statefulset, service = shard_objects(rendered, name, self.namespace, trial, spec, self.image)
        count = statefulset["spec"]["replicas"]
        what = f"catalog shards of trial {trial.trial_id} (StatefulSet {self.namespace}/{name})"
        _log.info("k8s_deploying_shards", trial_id=trial.trial_id, name=name, shards=count)
        async with self._replicas_serving(
            _STATEFULSET,
            statefulset,
            service,
            what,
            log_dir,
            _shard_log_file,
            pod_role=lambda pod_name: f"shard {pod_name.rpartition('-')[2]} of {count}: ",
        ):
            yield shard_addresses(name, self.namespace, count, shard_port(service))

    @asynccontextmanager
    async def workload_service(self, log_dir: Path) -> AsyncIterator[str]:
        """Yields the in-cluster host:port of the experiment's workload service once its pod is
        ready (the load generators reach it by its Service's name; the controller never does)."""
        rendered = await self._render("base")
        name = f"etude-workload-{secrets.token_hex(4)}"
        deployment, service = workload_objects(rendered, name, self.namespace, self.image)
        what = f"workload service (Deployment {self.namespace}/{name})"
        async with self._replicas_serving(
            _DEPLOYMENT, deployment, service, what, log_dir, service_log_file("workload")
        ):
            yield f"{name}.{self.namespace}.svc.cluster.local:{defaults.WORKLOAD_PORT}"

    @asynccontextmanager
    async def loadgen_service(self, log_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        """Yields an endpoint of the experiment's load generator (a Job's pod) once it is ready;
        each `instance` of several is a Job and Service of its own, its log saved as loadgen-i.log."""
        rendered = await self._render("base")
        name = f"etude-loadgen-{secrets.token_hex(4)}"
        job, service = loadgen_objects(rendered, name, self.namespace, self.image)
        created: list[tuple[_Kind, str]] = []
        forward: asyncio.subprocess.Process | None = None
        try:
            await self._create(_SERVICE, service, created)
            await self._create(_JOB, job, created)
            what = f"load generator (Job {self.namespace}/{name})"
            await self._wait_until_ready(what, name, lambda: self._job_ready(name, instance))
            if self.loadgen_access == "service":
                endpoint = f"{name}.{self.namespace}.svc.cluster.local:{defaults.LOADGEN_PORT}"
            else:
                forward, endpoint = await self._port_forward(
                    self._loadgen_pods[instance], defaults.LOADGEN_PORT
                )
            self._serving[name] = what
            yield endpoint
        finally:
            self._serving.pop(name, None)
            if forward is not None and forward.returncode is None:
                forward.terminate()
                await forward.wait()
            log_file = service_log_file("loadgen", instance)
            await _to_completion(self._tear_down(created, name, log_dir, log_file))
            self._loadgen_pods.pop(instance, None)

    @asynccontextmanager
    async def loadgen_records(self, local_dir: Path, instance: int = 0) -> AsyncIterator[str]:
        """Yields the records folder inside the load generator's pod; on exit its files are
        copied into `local_dir` (the result store's folder for the run) and removed from the pod."""
        remote = f"{RECORDS_MOUNT}/{secrets.token_hex(6)}"
        try:
            yield remote
        finally:
            await _to_completion(self._copy_records(remote, local_dir, instance))

    async def service_lost(self) -> str:
        """Polls the pods of every serving object: a container that restarts, a pod that fails,
        ends or vanishes is a loss (reason and log tail), judged against their state at the start."""
        watched = dict(self._serving)
        baseline = {name: await self._pod_restarts(name) for name in watched}
        while True:
            await asyncio.sleep(self.poll_interval_s)
            for name, what in watched.items():
                pods = await self._pods(name)
                for pod in pods:
                    if reason := pod_failure(pod) or _pod_ended(pod):
                        return f"{what}: {reason}{await self._log_tail(pod)}"
                restarts = {pod.metadata.name: _restarts(pod) for pod in pods}
                for pod_name, before in baseline[name].items():
                    if pod_name not in restarts:
                        return f"{what}: pod {pod_name} is gone (deleted or evicted)"
                    if restarts[pod_name] > before:
                        pod = next(p for p in pods if p.metadata.name == pod_name)
                        return f"{what}: pod {pod_name} restarted{await self._log_tail(pod)}"

    def inference_pid(self) -> int | None:
        """None: the pods run on other hosts. Their CPU and memory are on each inference pod's
        /metrics (process_cpu_seconds_total, process_resident_memory_bytes) for Prometheus; the
        trial's series.csv leaves the resource columns empty."""
        return None

    async def dead_services(self) -> list[str]:
        dead = []
        for name, what in self._serving.items():
            pods = await self._pods(name)
            if not pods or any(pod_failure(pod) or _pod_ended(pod) for pod in pods):
                dead.append(what)
        return dead

    async def stop_leftovers(self, experiment_id: str, started: list[StartedProcess]) -> list[str]:
        """Deletes every object Etude created for `experiment_id` (by its label) that is still
        there: what a controller that died mid-trial left; `started` (local processes) is ignored."""
        stopped: list[str] = []
        selector = leftover_selector(experiment_id)
        for kind in _KINDS:
            try:
                found = await self._call(
                    self._api_function("list", kind), self.namespace, label_selector=selector
                )
            except Exception as error:
                _log.error("k8s_leftovers_not_listed", kind=kind.kind, error=str(error))
                continue
            for item in found.items or []:
                name = item.metadata.name
                try:
                    await self._delete(kind, name)
                except Exception as error:
                    _log.error("k8s_delete_failed", kind=kind.kind, name=name, error=str(error))
                    continue
                stopped.append(f"{kind.kind} {self.namespace}/{name}")
                _log.warning("k8s_leftover_deleted", kind=kind.kind, name=name, experiment_id=experiment_id)
        return stopped

    async def _pod_restarts(self, name: str) -> dict[str, int]:
        return {pod.metadata.name: _restarts(pod) for pod in await self._pods(name)}

    # -- API calls -----------------------------------------------------------------------------

    async def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.request_timeout_s)
        return await asyncio.to_thread(function, *args, **kwargs)

    async def _render(self, relative: str) -> list[dict[str, Any]]:
        if relative not in self._rendered:
            self._rendered[relative] = await asyncio.to_thread(render_manifests, self.base_dir / relative)
        return self._rendered[relative]

    async def _render_sharded(self, overlay: str) -> list[dict[str, Any]]:
        key = f"overlays/{overlay}+{CATALOG_SHARDS_COMPONENT}"
        if key not in self._rendered:
            self._rendered[key] = await asyncio.to_thread(render_with_catalog_shards, self.base_dir, overlay)
        return self._rendered[key]

    def _api_function(self, verb: str, kind: _Kind) -> Callable[..., Any]:
        """The client's `{verb}_namespaced_{kind}` method (create, read, list or delete)."""
        api = {"Deployment": self.apps, "StatefulSet": self.apps, "Service": self.core, "Job": self.batch}
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind.kind).lower()  # StatefulSet -> stateful_set
        return getattr(api[kind.kind], f"{verb}_namespaced_{snake}")

    @asynccontextmanager
    async def _replicas_serving(
        self,
        kind: _Kind,
        workload: dict[str, Any],
        service: dict[str, Any],
        what: str,
        log_dir: Path,
        log_file: str | Callable[[str], str],
        pod_role: Callable[[str], str] = lambda pod_name: "",
    ) -> AsyncIterator[None]:
        """Creates `service` and `workload` (a Deployment or StatefulSet of the same name), and
        serves (watched by service_lost) once all its replicas are ready; both are deleted on
        exit, the pods' logs saved as `log_file` says."""
        name = workload["metadata"]["name"]
        replicas = workload["spec"]["replicas"]
        created: list[tuple[_Kind, str]] = []
        try:
            await self._create(_SERVICE, service, created)
            await self._create(kind, workload, created)
            await self._wait_until_ready(
                what, name, lambda: self._replicas_ready(kind, name, replicas), pod_role=pod_role
            )
            self._serving[name] = what
            yield
        finally:
            self._serving.pop(name, None)
            await _to_completion(self._tear_down(created, name, log_dir, log_file))

    async def _create(self, kind: _Kind, body: dict[str, Any], created: list[tuple[_Kind, str]]) -> None:
        """Creates `body`; a leftover of the same name (409) is deleted and created again when it
        is Etude's and `on_conflict` is "replace", else the trial fails saying what to delete."""
        from kubernetes.client.exceptions import ApiException

        if (owner := CURRENT_OWNER.get()) is not None:
            body = labelled_for_experiment(body, owner.experiment_id)
        name = body["metadata"]["name"]
        # Recorded before the call, so that a cancellation while it is in flight still deletes
        # it; forgotten again when the API refuses it (a 409's object is not ours to delete).
        created.append((kind, name))
        try:
            await self._call(self._api_function("create", kind), self.namespace, body)
            return
        except ApiException as error:
            created.remove((kind, name))
            if error.status == 403:
                raise forbidden(error, "create", kind, self.namespace) from error
            if error.status != 409:
                raise KubernetesDeployError(
                    f"creating {kind.kind} {self.namespace}/{name}: {error.status} {_api_message(error)}"
                ) from error
        await self._replace_leftover(kind, body, created)

    async def _replace_leftover(
        self, kind: _Kind, body: dict[str, Any], created: list[tuple[_Kind, str]]
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        where = f"{kind.kind} {self.namespace}/{name}"
        if self.on_conflict == "fail":
            raise DeployConflict(
                f"{where} already exists (left over from an earlier run?): delete it with "
                f"`kubectl delete {kind.resource} {name} -n {self.namespace}`, or let the driver replace it"
            )
        try:
            existing = await self._call(self._api_function("read", kind), name, self.namespace)
        except ApiException as error:
            if error.status == 403:
                raise forbidden(error, "get", kind, self.namespace) from error
            raise KubernetesDeployError(f"reading the existing {where}: {_api_message(error)}") from error
        labels = existing.metadata.labels or {}
        if any(labels.get(key) != value for key, value in MANAGED_BY.items()):
            raise DeployConflict(
                f"{where} already exists and was not created by Etude (no "
                f"app.kubernetes.io/managed-by=etude-controller label): refusing to replace it"
            )
        _log.warning("k8s_replacing_leftover", kind=kind.kind, name=name, namespace=self.namespace)
        await self._delete(kind, name)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:  # deletion is asynchronous: create again once the old object is gone
            created.append((kind, name))
            try:
                await self._call(self._api_function("create", kind), self.namespace, body)
                return
            except ApiException as error:
                created.remove((kind, name))
                if error.status == 403:
                    raise forbidden(error, "create", kind, self.namespace) from error
                if error.status != 409 or time.monotonic() > deadline:
                    raise KubernetesDeployError(
                        f"creating {where} after deleting a leftover: {error.status} {_api_message(error)}"
                    ) from error
            await asyncio.sleep(self.poll_interval_s)

    async def _delete(self, kind: _Kind, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            # Background propagation: a Job's pods are otherwise orphaned (the API's default).
            await self._call(
                self._api_function("delete", kind),
                name,
                self.namespace,
                body=client.V1DeleteOptions(propagation_policy="Background"),
                # What a DELETE returns differs by kind (the object, or a Status): not needed.
                _preload_content=False,
            )
        except ApiException as error:
            if error.status == 404:
                return
            if error.status == 403:
                raise forbidden(error, "delete", kind, self.namespace) from error
            raise

    # -- readiness -----------------------------------------------------------------------------

    async def _wait_until_ready(
        self,
        what: str,
        name: str,
        is_ready: Callable[[], Awaitable[bool]],
        pod_role: Callable[[str], str] = lambda pod_name: "",
    ) -> None:
        """Polls until `is_ready`; fails at once for a pod that cannot recover (`pod_role` says
        which part it plays, e.g. "shard 1 of 4: "), and on timeout with what the pods were doing
        (unschedulable, pulling the image, ...)."""
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            pods = await self._pods(name)
            for pod in pods:
                failure = pod_failure(pod)
                if failure:
                    role = pod_role(pod.metadata.name)
                    raise PodFailed(f"{what} failed: {role}{failure}{await self._log_tail(pod)}")
            if await is_ready():
                _log.info("k8s_ready", what=what)
                return
            if time.monotonic() > deadline:
                states = "; ".join(pod_state(pod) for pod in pods) or "no pod was created"
                raise KubernetesDeployError(f"{what} not ready after {self.startup_timeout_s:g} s: {states}")
            await asyncio.sleep(self.poll_interval_s)

    async def _pods(self, name: str) -> list[Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            found = await self._call(
                self.core.list_namespaced_pod, self.namespace, label_selector=f"{INSTANCE_LABEL}={name}"
            )
        except ApiException as error:
            if error.status == 403:
                raise DeployForbidden(
                    f"forbidden: the controller may not list pods in namespace {self.namespace!r}: grant "
                    f"verb 'list' on resource 'pods' of API group \"\" (core) in a Role bound to its "
                    f"identity; the API said: {_api_message(error)}"
                ) from error
            raise KubernetesDeployError(f"listing pods of {name}: {_api_message(error)}") from error
        return list(found.items or [])

    async def _replicas_ready(self, kind: _Kind, name: str, replicas: int) -> bool:
        """Whether a Deployment's or StatefulSet's ready replicas reach `replicas`."""
        found = await self._read(kind, name)
        status = found.status
        return status is not None and (status.ready_replicas or 0) >= replicas

    async def _job_ready(self, name: str, instance: int = 0) -> bool:
        job = await self._read(_JOB, name)
        if job.status is not None and (job.status.failed or 0) > 0:
            raise PodFailed(f"load generator Job {self.namespace}/{name} failed")
        for pod in await self._pods(name):
            if (
                pod.status is not None
                and pod.status.phase == "Running"
                and _condition(pod, "Ready") == "True"
            ):
                self._loadgen_pods[instance] = pod.metadata.name
                return True
        return False

    async def _read(self, kind: _Kind, name: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return await self._call(self._api_function("read", kind), name, self.namespace)
        except ApiException as error:
            if error.status == 403:
                raise forbidden(error, "get", kind, self.namespace) from error
            raise KubernetesDeployError(
                f"reading {kind.kind} {self.namespace}/{name}: {error.status} {_api_message(error)}"
            ) from error

    async def _log_tail(self, pod: Any, lines: int = 15) -> str:
        """The last lines of a crashed container's log, for the trial's error; "" if unreadable."""
        try:
            text = await self._call(
                self.core.read_namespaced_pod_log,
                pod.metadata.name,
                self.namespace,
                tail_lines=lines,
                previous=True,
            )
        except Exception:
            return ""
        return f"; last lines of its log:\n{text}" if text else ""

    # -- teardown ------------------------------------------------------------------------------

    async def _tear_down(
        self,
        created: list[tuple[_Kind, str]],
        name: str,
        log_dir: Path,
        log_file: str | Callable[[str], str],
    ) -> None:
        """Saves the pods' logs into `log_dir` (`log_file`, a replica past the first as NAME-i.log;
        or the file `log_file` names for each pod's name), then deletes every object created
        (newest first).
        Errors are logged, never raised: they must not hide the trial's own outcome."""
        if not created:
            return
        try:
            await self._save_logs(name, log_dir, log_file)
        except Exception as error:
            _log.warning("k8s_logs_not_saved", name=name, error=str(error))
        for kind, object_name_ in reversed(created):
            try:
                await self._delete(kind, object_name_)
                _log.info("k8s_deleted", kind=kind.kind, name=object_name_, namespace=self.namespace)
            except Exception as error:
                _log.error("k8s_delete_failed", kind=kind.kind, name=object_name_, error=str(error))

    async def _save_logs(self, name: str, log_dir: Path, log_file: str | Callable[[str], str]) -> None:
        pods = await self._pods(name)
        for index, pod in enumerate(pods):
            text = await self._call(self.core.read_namespaced_pod_log, pod.metadata.name, self.namespace)
            if callable(log_file):
                path = log_dir / log_file(pod.metadata.name)
            else:
                path = log_dir / (log_file if index == 0 else log_file.replace(".log", f"-{index}.log"))
            await asyncio.to_thread(_write_text, path, text or "")

    # -- records and port-forward --------------------------------------------------------------

    async def _copy_records(self, remote: str, local_dir: Path, instance: int = 0) -> None:
        pod = self._loadgen_pods.get(instance, "")
        if not pod:
            _log.warning("k8s_records_not_copied", reason="no load generator pod", remote=remote)
            return
        archive = await asyncio.to_thread(self._exec_copy_out, pod, remote)
        await asyncio.to_thread(extract_records, archive, local_dir)

    def _exec_copy_out(self, pod: str, remote: str) -> str:
        from kubernetes.stream import stream

        session = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container="loadgen",
            command=["python", "-c", _COPY_OUT_SCRIPT, remote],
            stderr=True, stdin=False, stdout=True, tty=False,
            _preload_content=False,
        )  # fmt: skip
        session.run_forever(timeout=self.request_timeout_s * 10)
        output = session.read_stdout() or ""
        errors = session.read_stderr() or ""
        if session.returncode not in (0, None):
            raise KubernetesDeployError(f"copying records out of pod {pod}: {errors.strip()}")
        return str(output)

    async def _port_forward(self, pod: str, port: int) -> tuple[asyncio.subprocess.Process, str]:
        """`kubectl port-forward` to the pod (the controller runs outside the cluster)."""
        argv = [kubectl_path(), "port-forward", "-n", self.namespace, f"pod/{pod}", f":{port}"]
        if self._kubeconfig:
            argv += ["--kubeconfig", self._kubeconfig]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), self.request_timeout_s)
        except TimeoutError:
            line = b""
        found = re.search(rb"127\.0\.0\.1:(\d+)", line)
        if not found:
            process.terminate()
            error = await process.stderr.read() if process.stderr else b""
            raise KubernetesDeployError(f"kubectl port-forward to {pod}: {error.decode(errors='replace')}")
        return process, f"127.0.0.1:{int(found.group(1))}"


def pod_failure(pod: Any) -> str:
    """Why a pod cannot become ready, or "" while it still may."""
    status = pod.status
    if status is None:
        return ""
    name = pod.metadata.name
    if status.phase == "Failed":
        return f"pod {name} failed: {status.reason or ''} {status.message or ''}".rstrip()
    for container in (status.init_container_statuses or []) + (status.container_statuses or []):
        waiting = container.state.waiting if container.state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING_REASONS:
            detail = f"pod {name} container {container.name}: {waiting.reason}"
            if waiting.message:
                detail += f": {waiting.message}"
            last = container.last_state.terminated if container.last_state is not None else None
            if last is not None:
                detail += f" (last exit code {last.exit_code}, {last.reason or 'no reason'})"
            return detail
    return ""


def _shard_log_file(pod_name: str) -> str:
    """shard.log, shard-1.log, ... by the pod's StatefulSet ordinal (NAME-3 -> shard-3.log), as the
    local driver names its shards' logs."""
    ordinal = pod_name.rpartition("-")[2]
    return service_log_file("shard", int(ordinal)) if ordinal.isdigit() else f"shard-{pod_name}.log"


def _restarts(pod: Any) -> int:
    statuses = (pod.status.container_statuses or []) if pod.status is not None else []
    return sum(status.restart_count or 0 for status in statuses)


def _pod_ended(pod: Any) -> str:
    """Why a pod that served has stopped for good ("" while it runs)."""
    phase = pod.status.phase if pod.status is not None else None
    return f"pod {pod.metadata.name} ended ({phase})" if phase in ("Succeeded", "Failed") else ""


def pod_state(pod: Any) -> str:
    """One line on a pod that is not ready yet: its phase and why it waits (unschedulable: ...)."""
    status = pod.status
    state = f"pod {pod.metadata.name} {getattr(status, 'phase', None) or 'Unknown'}"
    for condition in (status.conditions or []) if status is not None else []:
        if condition.status != "True" and condition.message:
            state += f", {condition.type}: {condition.reason or ''} {condition.message}"
    for container in (status.container_statuses or []) if status is not None else []:
        if container.state is not None and container.state.waiting is not None:
            state += f", container {container.name} waiting: {container.state.waiting.reason}"
    return state


def _condition(pod: Any, kind: str) -> str:
    for condition in pod.status.conditions or []:
        if condition.type == kind:
            return str(condition.status)
    return ""


def extract_records(archive_base64: str, local_dir: Path) -> None:
    """Unpacks the load generator's records (base64 of a tar.gz) into `local_dir`."""
    local_dir.mkdir(parents=True, exist_ok=True)
    data = base64.b64decode(archive_base64.strip() or b"")
    if not data:
        return
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(local_dir, filter="data")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _load_api_client(kubeconfig: str | None) -> Any:
    """An API client from `kubeconfig`, the in-cluster service account, or the usual kubeconfig."""
    from kubernetes import client, config

    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=kubeconfig)
    except config.ConfigException as error:
        raise KubernetesDeployError(f"no Kubernetes cluster configured: {error}") from error


def _default_namespace(kubeconfig: str | None) -> str:
    """The in-cluster service account's namespace, else the kubeconfig context's, else default."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and _SERVICE_ACCOUNT_NAMESPACE.exists():
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


__all__ = [
    "DeployConflict",
    "DeployForbidden",
    "KubernetesDeployError",
    "KubernetesDriver",
    "PodFailed",
]
