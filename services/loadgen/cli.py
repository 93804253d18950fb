"""load generator: replays sessions against a recommender, ramping to a target rate."""

from __future__ import annotations

import argparse

from etude import defaults

DEFAULT_PORT = defaults.LOADGEN_PORT
# The loop wakes for every send and every answer: uvloop's costs a fraction of asyncio's.
FAST_EVENT_LOOP = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connect-timeout-s",
        type=float,
        default=defaults.CONNECT_TIMEOUT_S,
        help="how long a run waits for its target to accept connections before failing",
    )
    parser.add_argument(
        "--no-request-spans",
        action="store_true",
        help="no OpenTelemetry client span per request (saves ~0.1 ms CPU per request)",
    )


async def serve(args: argparse.Namespace) -> None:
    from etude.serving import ServiceHost, run_until_signalled, service_full_name
    from etude.v1 import loadgen_pb2, loadgen_pb2_grpc

    from .server import LoadGeneratorServicer

    servicer = LoadGeneratorServicer(
        connect_timeout_s=args.connect_timeout_s, request_spans=not args.no_request_spans
    )
    host = ServiceHost(
        service_names=[service_full_name(loadgen_pb2, "LoadGeneratorService")],
        register=lambda server: loadgen_pb2_grpc.add_LoadGeneratorServiceServicer_to_server(servicer, server),
        host=args.host,
        port=args.port,
    )
    await run_until_signalled(host, grace_s=args.grace_s, port_file=args.port_file)
