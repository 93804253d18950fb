"""Who may talk to an Etude service: TLS (optionally mutual) on servers and clients, and a bearer
token that a server can require on every call.

Configured once per process, at the entry point (`configure`), from the serve flags or ETUDE_*
variables; ServiceHost and `open_channel` read it. With TLS configured a server listens on TLS
only, so plaintext clients are refused. The token check spares the health service (probes) and
reflection (grpcurl discovery), which reveal nothing but what is served.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

AUTHORIZATION_HEADER = "authorization"
# Methods a client may call without the token: Kubernetes probes and grpcurl's discovery.
UNAUTHENTICATED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class SecurityConfigError(ValueError):
    """A TLS or token setting is incomplete or unreadable; the message names the flag."""


@dataclass(frozen=True)
class ServerSecurity:
    """TLS and token settings of the servers this process runs."""

    tls_cert_pem: bytes | None = None
    tls_key_pem: bytes | None = None
    # When set, clients must present a certificate signed by this CA (mutual TLS).
    client_ca_pem: bytes | None = None
    auth_token: str | None = None
    # Kubernetes' gRPC probes speak plaintext only: with TLS on, health alone is also served
    # here, unencrypted (it says SERVING or not, nothing more).
    plaintext_health_port: int | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert_pem is not None


@dataclass(frozen=True)
class ClientSecurity:
    """TLS and token settings of the channels this process opens to other services."""

    # Trust roots for the servers called; setting it switches outgoing channels to TLS.
    ca_pem: bytes | None = None
    # Presented to servers that require mutual TLS.
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    auth_token: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca_pem is not None


_server = ServerSecurity()
_client = ClientSecurity()


def configure(server: ServerSecurity | None = None, client: ClientSecurity | None = None) -> None:
    """Sets this process's security; called once, by the entry point."""
    global _server, _client
    _server = server or ServerSecurity()
    _client = client or ClientSecurity()


def server_security() -> ServerSecurity:
    return _server


def client_security() -> ClientSecurity:
    return _client


def _read(path: str | None, flag: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SecurityConfigError(f"{flag} {path}: {error.strerror or error}") from error


def _token(token: str | None, token_file: str | None) -> str | None:
    if token_file:
        data = _read(token_file, "--auth-token-file")
        token = (data or b"").decode().strip()
        if not token:
            raise SecurityConfigError(f"--auth-token-file {token_file} is empty")
    return token or None


def _read_certificate(tls_cert: str | None, tls_key: str | None) -> tuple[bytes | None, bytes | None]:
    """The certificate and its key (PEM), given together or not at all."""
    if bool(tls_cert) != bool(tls_key):
        raise SecurityConfigError("--tls-cert and --tls-key go together: give both or neither")
    return _read(tls_cert, "--tls-cert"), _read(tls_key, "--tls-key")


def from_flags(
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    tls_ca: str | None = None,
    auth_token: str | None = None,
    auth_token_file: str | None = None,
    plaintext_health_port: int | None = None,
) -> tuple[ServerSecurity, ClientSecurity]:
    """Server and client settings from the serve flags: a server certificate doubles as this
    process's client certificate when it calls a server that requires mutual TLS."""
    cert, key = _read_certificate(tls_cert, tls_key)
    if tls_client_ca and not tls_cert:
        raise SecurityConfigError(
            "--tls-client-ca needs --tls-cert and --tls-key (TLS first, then client certificates)"
        )
    token = _token(auth_token, auth_token_file)
    if plaintext_health_port is not None and not tls_cert:
        raise SecurityConfigError(
            "--plaintext-health-port is for TLS servers (--tls-cert): health is plaintext already"
        )
    server = ServerSecurity(cert, key, _read(tls_client_ca, "--tls-client-ca"), token, plaintext_health_port)
    client = ClientSecurity(_read(tls_ca, "--tls-ca"), cert, key)
    return server, client


def client_from_flags(
    *,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    auth_token_file: str | None = None,
) -> ClientSecurity:
    """A command-line client's settings (`etude submit --tls-ca ... --auth-token-file ...`)."""
    cert, key = _read_certificate(tls_cert, tls_key)
    return ClientSecurity(
        ca_pem=_read(tls_ca, "--tls-ca"), cert_pem=cert, key_pem=key, auth_token=_token(None, auth_token_file)
    )


# The variables of the security flags (etude/config.py names them). A process that starts
# services hands its TLS on as flags (child_tls_flags) and keeps these out of their environment:
# a child must not inherit a token or a plaintext health port meant for its parent alone.
SECURITY_ENV = tuple(
    f"ETUDE_{name}"
    for name in (
        "TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA", "TLS_CA", "AUTH_TOKEN_FILE", "PLAINTEXT_HEALTH_PORT"
    )
)  # fmt: skip


def child_tls_flags(
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    tls_client_ca: str | None = None,
) -> list[str]:
    """The serve flags that give a child service this process's TLS: its certificate to serve
    with (and to present as a client), the CA to verify the other services with, and client
    certificates required when this process requires them. [] without TLS. Raises
    SecurityConfigError for a certificate without a CA: the services could not verify each other."""
    if not tls_cert:
        return []
    if not tls_ca:
        raise SecurityConfigError(
            "--tls-cert needs --tls-ca when this process starts services (the local target): they "
            "serve with the same certificate and verify each other, and this process them, with that CA"
        )
    paths = {
        "--tls-cert": tls_cert, "--tls-key": tls_key, "--tls-ca": tls_ca, "--tls-client-ca": tls_client_ca
    }  # fmt: skip
    flags: list[str] = []
    for flag, path in paths.items():
        if path:
            flags += [flag, str(Path(path).resolve())]
    return flags


def server_credentials(security: ServerSecurity) -> grpc.ServerCredentials:
    assert security.tls_cert_pem is not None and security.tls_key_pem is not None
    return grpc.ssl_server_credentials(
        [(security.tls_key_pem, security.tls_cert_pem)],
        root_certificates=security.client_ca_pem,
        require_client_auth=security.client_ca_pem is not None,
    )


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, every call without `authorization: Bearer <token>`, but
    health checks and reflection."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(UNAUTHENTICATED_SERVICES):
            return await continuation(handler_call_details)
        presented = dict(handler_call_details.invocation_metadata or ()).get(AUTHORIZATION_HEADER, "")
        if isinstance(presented, str):
            presented = presented.encode()
        if hmac.compare_digest(presented, self._expected):
            return await continuation(handler_call_details)
        return _refusal(await continuation(handler_call_details), "missing or wrong bearer token")


def _refusal(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as the refused method's that aborts with UNAUTHENTICATED."""

    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover (abort raises)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(abort)
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)


def server_interceptors(security: ServerSecurity) -> list[grpc.aio.ServerInterceptor]:
    return [BearerTokenInterceptor(security.auth_token)] if security.auth_token else []


class _AddsToken:
    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION_HEADER, f"Bearer {token}")

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return details._replace(metadata=metadata)  # type: ignore[attr-defined]


# grpc.aio files a channel's interceptor under the first call type it implements: one class each.
class _UnaryUnaryToken(_AddsToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._with_token(client_call_details), request)


class _UnaryStreamToken(_AddsToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._with_token(client_call_details), request)


class _StreamUnaryToken(_AddsToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._with_token(client_call_details), request_iterator)


class _StreamStreamToken(_AddsToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._with_token(client_call_details), request_iterator)


def token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that add `authorization: Bearer <token>` to every call of a channel."""
    return [
        kind(token) for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
    ]


def open_channel(
    target: str,
    options: Sequence[tuple[str, Any]] = (),
    security: ClientSecurity | None = None,
) -> grpc.aio.Channel:
    """A channel to `target` with this process's client security (or `security`): TLS when a CA
    is configured (with the client certificate when there is one), the bearer token when set."""
    security = security or _client
    interceptors = token_interceptors(security.auth_token) if security.auth_token else None
    if security.tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=security.ca_pem,
            private_key=security.key_pem,
            certificate_chain=security.cert_pem,
        )
        return grpc.aio.secure_channel(target, credentials, options=list(options), interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)
