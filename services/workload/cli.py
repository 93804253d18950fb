"""Workload service: streams synthetic click sessions (Algorithm 1 of the ETUDE paper) or a click log."""

from __future__ import annotations

import argparse

from etude import defaults

DEFAULT_PORT = defaults.WORKLOAD_PORT


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--popularity-cache-size",
        type=_non_negative_int,
        default=defaults.POPULARITY_CACHE_SIZE,
        help="item popularity tables kept for repeated workloads (about 40 MB each at 10 "
        "million items; 0 rebuilds the table for every stream)",
    )
    parser.add_argument(
        "--replay-cache-size",
        type=_non_negative_int,
        default=defaults.REPLAY_CACHE_SIZE,
        help="indexes of replayed click logs kept for repeated streams (4 bytes per click on disk "
        "under TMPDIR, 12 with timestamps, and 8 per session in memory; 0 indexes the log for every "
        "stream)",
    )
    parser.add_argument(
        "--replay-root",
        default=None,
        help="the folder replayed click logs must be in, relative paths taken from it (default: "
        "any file this process can read; set it where callers should not name arbitrary files)",
    )


async def serve(args: argparse.Namespace) -> None:
    # Imported here so `etude serve --help` does not load numpy and the generated stubs.
    from pathlib import Path

    from etude.serving import ServiceHost, run_until_signalled, service_full_name
    from etude.v1 import workload_pb2, workload_pb2_grpc

    from .server import PopularityCache, ReplayIndexCache, WorkloadServicer

    servicer = WorkloadServicer(
        PopularityCache(args.popularity_cache_size),
        ReplayIndexCache(args.replay_cache_size),
        replay_root=Path(args.replay_root) if args.replay_root else None,
    )
    host = ServiceHost(
        service_names=[service_full_name(workload_pb2, "WorkloadService")],
        register=lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(servicer, server),
        host=args.host,
        port=args.port,
    )
    await run_until_signalled(host, grace_s=args.grace_s, port_file=args.port_file)


def add_commands(commands: argparse._SubParsersAction) -> None:
    workload = commands.add_parser("workload", help="work with click-log statistics")
    actions = workload.add_subparsers(dest="action", required=True, metavar="ACTION")
    fit = actions.add_parser(
        "fit",
        help="fit a real click log's session-length and item-popularity distributions",
        description=(
            "Reads a CSV of clicks (a session id and an item id per row; other columns are ignored) "
            "and prints a `workload:` block for an experiment spec in both parameterisations: "
            "classic power-law exponents and scipy.stats.powerlaw fits."
        ),
    )
    fit.add_argument("click_log", help="CSV (comma, tab or semicolon separated)")
    fit.add_argument("--session-column", default="0", help="header name or 0-based index (default 0)")
    fit.add_argument("--item-column", default="1", help="header name or 0-based index (default 1)")
    fit.add_argument("--no-header", action="store_true", help="the first row is a click, not column names")
    fit.set_defaults(handler=fit_command)


def fit_command(args: argparse.Namespace) -> int:
    """`etude workload fit`: prints the fitted statistics; exit status 2 for an unreadable log."""
    import sys
    from pathlib import Path

    from .fit import ClickLogError, fit_click_log, read_click_log

    try:
        sessions, items = read_click_log(
            Path(args.click_log), args.session_column, args.item_column, header=not args.no_header
        )
    except ClickLogError as error:
        print(f"etude workload fit: {error}", file=sys.stderr)
        return 2
    print(fit_click_log(sessions, items).to_yaml(), end="")
    return 0
