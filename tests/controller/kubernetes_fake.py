"""A fake Kubernetes API server on a loopback port: just enough of the REST API for the driver
(create, get, list by label, delete Deployments, StatefulSets, Services and Jobs; list pods; read
logs), with
scripted answers."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from etude.services.controller.drivers.kubernetes import KubernetesDriver
from kubernetes import client

# The namespace the drivers under test deploy into.
NAMESPACE = "etude-test"

_COLLECTION = re.compile(
    r"^/(?:api/v1|apis/apps/v1|apis/batch/v1)/namespaces/(?P<ns>[^/]+)/(?P<resource>deployments|statefulsets|services|jobs|pods)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log|status))?$"
)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any] | None


@dataclass
class FakeApiServer:
    """Objects by (resource, name); hooks decide status, pods and refusals per test."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # (method, resource) -> HTTP status to answer instead of doing it (403, 500, ...).
    refuse: dict[tuple[str, str], int] = field(default_factory=dict)
    # Called on every GET of a Deployment, StatefulSet or Job: returns its `status`.
    status_of: Callable[[str, dict[str, Any]], dict[str, Any]] = lambda resource, obj: {}
    # Pods listed for a label selector's instance name.
    pods_of: Callable[[str], list[dict[str, Any]]] = lambda instance: []
    log_text: str = ""
    port: int = 0
    # Set on the first GET of a Deployment, StatefulSet or Job: the driver is waiting for readiness.
    polled: threading.Event = field(default_factory=threading.Event)

    def calls(self, method: str, resource: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and f"/{resource}" in r.path]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def _handler(fake: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _answer(self, code: int, document: Any, content_type: str = "application/json") -> None:
            payload = document.encode() if isinstance(document, str) else json.dumps(document).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append(Request(self.command, url.path, parse_qs(url.query), body))
            found = _COLLECTION.match(url.path)
            if found is None:
                self._answer(404, _status(404, "NotFound", f"no route {url.path}"))
                return
            resource, name, sub = found["resource"], found["name"], found["sub"]
            refused = fake.refuse.get((self.command, resource))
            if refused:
                verb = {"POST": "create", "GET": "get", "DELETE": "delete"}[self.command]
                self._answer(
                    refused,
                    _status(
                        refused,
                        "Forbidden" if refused == 403 else "InternalError",
                        f'{resource} is forbidden: User "system:serviceaccount:etude:etude-controller" '
                        f'cannot {verb} resource "{resource}" in the namespace "{found["ns"]}"',
                    ),
                )
                return
            if resource == "pods" and sub == "log":
                self._answer(200, fake.log_text, "text/plain")
            elif resource == "pods":
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                instance = selector.split("=", 1)[-1]
                self._answer(
                    200,
                    {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": fake.pods_of(instance)},
                )
            elif self.command == "POST":
                assert body is not None
                key = (resource, body["metadata"]["name"])
                if key in fake.objects:
                    self._answer(409, _status(409, "AlreadyExists", f'{resource} "{key[1]}" already exists'))
                    return
                fake.objects[key] = body
                self._answer(201, body)
            elif self.command == "GET" and name is None:
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
                items = [
                    stored
                    for (kind, _), stored in fake.objects.items()
                    if kind == resource
                    and all(
                        stored["metadata"].get("labels", {}).get(key) == value
                        for key, value in wanted.items()
                    )
                ]
                self._answer(200, {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
            elif self.command == "GET":
                stored = fake.objects.get((resource, name or ""))
                if stored is None:
                    self._answer(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
                    return
                fake.polled.set()
                self._answer(200, {**stored, "status": fake.status_of(resource, stored)})
            elif self.command == "DELETE":
                deleted = fake.objects.pop((resource, name or ""), None)
                if deleted is None:
                    self._answer(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
                    return
                # As the API server does: a Service's DELETE returns the object, the others a Status.
                success = {"kind": "Status", "apiVersion": "v1", "status": "Success"}
                self._answer(200, deleted if resource == "services" else success)

        do_GET = do_POST = do_DELETE = _handle

    return Handler


@contextmanager
def fake_api_server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def pod(name: str, *, ready: bool = False, phase: str = "Pending", **status: Any) -> dict[str, Any]:
    conditions = status.pop("conditions", [])
    if ready:
        conditions = [*conditions, {"type": "Ready", "status": "True"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "status": {"phase": "Running" if ready else phase, "conditions": conditions, **status},
    }


def waiting_container(
    name: str, reason: str, message: str = "", exit_code: int | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name, "image": "etude", "imageID": "", "ready": False, "restartCount": 3,
        "state": {"waiting": {"reason": reason, "message": message}},
    }  # fmt: skip
    if exit_code is not None:
        container["lastState"] = {"terminated": {"exitCode": exit_code, "reason": "Error"}}
    return container


def driver_on(fake: FakeApiServer, image: str, **options: Any) -> KubernetesDriver:
    """A KubernetesDriver talking to `fake`: short start-up timeout and polls, the load generator
    reached through its Service, `options` overriding any of these."""
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{fake.port}"
    settings: dict[str, Any] = {
        "namespace": NAMESPACE, "startup_timeout_s": 5.0, "poll_interval_s": 0.01,
        "loadgen_access": "service", "image": image,
    }  # fmt: skip
    settings.update(options)
    return KubernetesDriver(api_client=client.ApiClient(configuration), **settings)
