"""The `etude` command: run and search experiments, report on them, serve one service, fit a
click log, export and micro-benchmark models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from etude import defaults
from etude.config import apply_env_defaults
from etude.logs import LOG_LEVELS

from .controller import cli as controller_cli
from .controller import client_cli as controller_client_cli
from .inference import cli as inference_cli
from .inference import tools_cli as inference_tools
from .loadgen import cli as loadgen_cli
from .shard import cli as shard_cli
from .workload import cli as workload_cli

# Each service's cli module: its docstring, DEFAULT_PORT, add_arguments(parser) and serve(args).
SERVICES = {
    "workload": workload_cli,
    "inference": inference_cli,
    "loadgen": loadgen_cli,
    "controller": controller_cli,
    "shard": shard_cli,
}


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run one Etude service as a gRPC server")
    services = serve.add_subparsers(dest="service", required=True, metavar="SERVICE")
    for name, module in SERVICES.items():
        parser = services.add_parser(name, help=module.__doc__)
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in containers)")
        parser.add_argument("--port", type=int, default=module.DEFAULT_PORT, help="0 picks a free port")
        parser.add_argument(
            "--port-file", default=None, help="write the bound port to this file once serving"
        )
        parser.add_argument("--grace-s", type=float, default=defaults.GRACE_S, help="drain time on SIGTERM")
        parser.add_argument("--log-format", choices=("console", "json"), default="console")
        parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
        parser.add_argument(
            "--metrics-port", type=int, default=None,
            help="serve Prometheus metrics over HTTP on this port (0 picks a free one); off when absent",
        )  # fmt: skip
        parser.add_argument("--metrics-port-file", default=None, help="write the metrics port to this file")
        _add_security_arguments(parser)
        module.add_arguments(parser)
        apply_env_defaults(parser)
        parser.set_defaults(service_module=module)


def _add_security_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (TLS and a bearer token; see the README)")
    group.add_argument("--tls-cert", default=None, help="server certificate (PEM): serve TLS only")
    group.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    group.add_argument(
        "--tls-client-ca", default=None, help="require client certificates signed by this CA (mutual TLS)"
    )
    group.add_argument(
        "--tls-ca", default=None, help="CA (PEM) to verify the services this one calls: calls them over TLS"
    )
    group.add_argument(
        "--plaintext-health-port",
        type=int,
        default=None,
        help="with TLS, also serve grpc.health.v1 alone in plaintext on this port (Kubernetes' gRPC "
        "probes cannot speak TLS)",
    )
    group.add_argument(
        "--auth-token-file",
        default=None,
        help="require `authorization: Bearer <token>` on every call but health and reflection "
        "(the token is the file's content; ETUDE_AUTH_TOKEN_FILE)",
    )


def _configure_security(args: argparse.Namespace) -> None:
    from etude import security

    server, client = security.from_flags(
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tls_ca=args.tls_ca,
        auth_token_file=args.auth_token_file,
        plaintext_health_port=args.plaintext_health_port,
    )
    security.configure(server, client)


# The service name a command's log lines carry (the experiment commands are the controller's).
COMMAND_LOG_NAMES = {
    "run": "etude-controller",
    "search": "etude-controller",
    "report": "etude-controller",
    "compare": "etude-controller",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etude", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve_parser(commands)
    controller_cli.add_commands(commands)
    controller_client_cli.add_commands(commands)
    inference_tools.add_commands(commands)
    workload_cli.add_commands(commands)
    for name, command in commands.choices.items():
        if name != "serve" and "log_level" not in {action.dest for action in command._actions}:
            command.set_defaults(log_level="warning")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    """Logging is configured here, once per process: a served service as its flags say; any other
    command logs warnings and worse readably on stderr (`etude run --log-level` changes that)."""
    from etude.logs import configure_logging

    if args.command == "serve":
        configure_logging(f"etude-{args.service}", args.log_format, args.log_level)
    else:
        configure_logging(
            COMMAND_LOG_NAMES.get(args.command, f"etude-{args.command}"), "console", args.log_level
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    if args.command == "serve":
        from etude.lifetime import die_with_parent
        from etude.telemetry import configure_tracing

        die_with_parent()
        try:
            _configure_security(args)
        except ValueError as error:
            print(f"etude serve {args.service}: {error}", file=sys.stderr)
            return 2
        configure_tracing(f"etude-{args.service}")
        if args.metrics_port is not None:
            from etude.metrics import start_metrics_server

            start_metrics_server(args.service, args.metrics_port, args.host, args.metrics_port_file)
        try:
            from etude.event_loop import run

            run(args.service_module.serve(args), fast=getattr(args.service_module, "FAST_EVENT_LOOP", False))
        except KeyboardInterrupt:
            return 130
        return 0
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
