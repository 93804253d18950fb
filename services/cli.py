"""The `etude` command: run and search experiments, report on them, serve one service, fit a
click log, export and micro-benchmark models."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from etude import defaults
from etude.config import apply_env_defaults

from .controller import cli as controller_cli
from .inference import cli as inference_cli
from .inference import tools_cli as inference_tools
from .loadgen import cli as loadgen_cli
from .workload import cli as workload_cli

# Each service's cli module: its docstring, DEFAULT_PORT, add_arguments(parser) and serve(args).
SERVICES = {
    "workload": workload_cli,
    "inference": inference_cli,
    "loadgen": loadgen_cli,
    "controller": controller_cli,
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
        parser.add_argument("--log-level", default="info")
        module.add_arguments(parser)
        apply_env_defaults(parser)
        parser.set_defaults(service_module=module)


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
        from etude.telemetry import configure_tracing

        configure_tracing(f"etude-{args.service}")
        try:
            asyncio.run(args.service_module.serve(args))
        except KeyboardInterrupt:
            return 130
        return 0
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
