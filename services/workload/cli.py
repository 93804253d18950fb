"""Workload service: streams synthetic click sessions (Algorithm 1 of the ETUDE paper)."""

from __future__ import annotations

import argparse

from etude import defaults

DEFAULT_PORT = defaults.WORKLOAD_PORT
DEFAULT_POPULARITY_CACHE_SIZE = 2


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--popularity-cache-size",
        type=_non_negative_int,
        default=DEFAULT_POPULARITY_CACHE_SIZE,
        help="item popularity tables kept for repeated workloads (about 40 MB each at 10 "
        "million items; 0 rebuilds the table for every stream)",
    )


async def serve(args: argparse.Namespace) -> None:
    # Imported here so `etude serve --help` does not load numpy and the generated stubs.
    from etude.serving import ServiceHost, run_until_signalled, service_full_name
    from etude.v1 import workload_pb2, workload_pb2_grpc
    from services.workload.server import PopularityCache, WorkloadServicer

    servicer = WorkloadServicer(PopularityCache(args.popularity_cache_size))
    host = ServiceHost(
        service_names=[service_full_name(workload_pb2, "WorkloadService")],
        register=lambda server: workload_pb2_grpc.add_WorkloadServiceServicer_to_server(servicer, server),
        host=args.host,
        port=args.port,
    )
    await run_until_signalled(host, grace_s=args.grace_s, port_file=args.port_file)
