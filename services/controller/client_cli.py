"""`etude submit|watch|get|list|cancel` against a running controller, and `etude validate` of a
spec without running it: the platform's command-line client."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import grpc

from etude.config import apply_env_defaults
from etude.v1 import controller_pb2, experiment_pb2

from .client import ControllerClient, default_controller, describe_rpc_error
from .exit_status import EXIT_INVALID, EXIT_SUCCEEDED, experiment_exit_status


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--controller",
        default=None,
        help="HOST:PORT of the controller (ETUDE_CONTROLLER; default 127.0.0.1:50054)",
    )
    parser.add_argument("--tls-ca", default=None, help="CA (PEM) of a TLS controller: connect over TLS")
    parser.add_argument(
        "--auth-token-file",
        default=None,
        help="file holding the controller's bearer token (ETUDE_AUTH_TOKEN_FILE)",
    )


def _add_gate_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-on-slo-miss", action="store_true", help="exit 3 when every trial ran but one missed its SLO"
    )


def add_commands(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser("submit", help="submit a spec to a running controller; prints its id")
    submit.add_argument("spec", help="experiment file (YAML)")
    submit.add_argument(
        "--wait", action="store_true", help="follow it with live progress; exit as `etude run`"
    )
    _add_gate_argument(submit)
    _add_connection_arguments(submit)
    submit.set_defaults(handler=submit_command)

    watch = commands.add_parser("watch", help="follow an experiment with live progress until it ends")
    watch.add_argument("experiment_id")
    _add_gate_argument(watch)
    _add_connection_arguments(watch)
    watch.set_defaults(handler=watch_command)

    get = commands.add_parser("get", help="an experiment's summary table")
    get.add_argument("experiment_id")
    _add_connection_arguments(get)
    get.set_defaults(handler=get_command)

    listing = commands.add_parser("list", help="the controller's experiments, newest first")
    _add_connection_arguments(listing)
    listing.set_defaults(handler=list_command)

    cancel = commands.add_parser("cancel", help="stop a queued or running experiment")
    cancel.add_argument("experiment_id")
    _add_connection_arguments(cancel)
    cancel.set_defaults(handler=cancel_command)

    validate = commands.add_parser(
        "validate",
        help="check a spec and print its trial matrix and estimated duration, without running it"
        " (with --controller: as that controller would accept it)",
    )
    validate.add_argument("spec", help="experiment file (YAML)")
    _add_connection_arguments(validate)
    validate.set_defaults(handler=validate_command)
    for parser in (submit, watch, get, listing, cancel, validate):
        apply_env_defaults(parser)
    # Only an explicit --controller sends the spec to a controller (SubmitExperiment with
    # validate_only): ETUDE_CONTROLLER alone keeps `etude validate` local.
    validate.set_defaults(controller=None)


def _client(args: argparse.Namespace) -> ControllerClient:
    from etude.security import client_from_flags

    settings = client_from_flags(tls_ca=args.tls_ca, auth_token_file=args.auth_token_file)
    return ControllerClient(args.controller or default_controller(), settings)


def _call(args: argparse.Namespace, work: Callable[[ControllerClient], Awaitable[int]]) -> int:
    """Runs `work` with a client; a refused or unreachable call is exit 2 with one line, not a traceback."""
    from etude.security import SecurityConfigError

    async def run() -> int:
        async with _client(args) as controller:
            return await work(controller)

    try:
        return asyncio.run(run())
    except SecurityConfigError as error:
        print(f"etude {args.command}: {error}", file=sys.stderr)
    except grpc.aio.AioRpcError as error:
        print(
            f"etude {args.command}: {describe_rpc_error(error, args.controller or default_controller())}",
            file=sys.stderr,
        )
    except KeyboardInterrupt:
        print(f"\netude {args.command}: stopped watching; the experiment goes on", file=sys.stderr)
        return 130
    return EXIT_INVALID


async def _follow(controller: ControllerClient, experiment_id: str, fail_on_slo_miss: bool) -> int:
    from ..report.summary import summary_table
    from .progress import ProgressPrinter

    finished = await controller.wait(experiment_id, ProgressPrinter())
    print()
    print(summary_table(finished))
    if finished.results_uri:
        print(f"Results: {finished.results_uri}")
    return experiment_exit_status(finished, fail_on_slo_miss)


def _load_spec(args: argparse.Namespace) -> experiment_pb2.ExperimentSpec | None:
    """The command's spec, validated and resolved; None (after saying why on stderr) if invalid."""
    from etude.spec import SpecError

    from .validation import load_spec

    try:
        return load_spec(args.spec)
    except SpecError as error:
        print(f"etude {args.command}: invalid spec {args.spec}: {error}", file=sys.stderr)
        return None


def submit_command(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    if spec is None:
        return EXIT_INVALID

    async def work(controller: ControllerClient) -> int:
        experiment = await controller.submit(spec)
        print(experiment.experiment_id, flush=True)
        if not args.wait:
            return EXIT_SUCCEEDED
        return await _follow(controller, experiment.experiment_id, args.fail_on_slo_miss)

    return _call(args, work)


def watch_command(args: argparse.Namespace) -> int:
    return _call(args, lambda controller: _follow(controller, args.experiment_id, args.fail_on_slo_miss))


def get_command(args: argparse.Namespace) -> int:
    from ..report.summary import summary_table

    async def work(controller: ControllerClient) -> int:
        experiment = await controller.get(args.experiment_id)
        print(summary_table(experiment))
        if experiment.results_uri:
            print(f"Results: {experiment.results_uri}")
        return EXIT_SUCCEEDED

    return _call(args, work)


def _state(experiment: object) -> str:
    from etude.v1 import controller_pb2

    name = controller_pb2.ExperimentState.Name(experiment.state)  # type: ignore[attr-defined]
    return name.removeprefix("EXPERIMENT_STATE_").lower()


def list_command(args: argparse.Namespace) -> int:
    async def work(controller: ControllerClient) -> int:
        rows = [("experiment", "state", "trials", "done", "SLO met", "cheapest", "created (UTC)")]
        # Newest first, as the controller pages them; printed once every page is in (aligned).
        async for summary in controller.list():
            created = datetime.fromtimestamp(summary.created_unix_ms / 1000, UTC).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
            cheapest = (
                f"{summary.cheapest_hardware} ${summary.cheapest_monthly_cost_usd:,.0f}/month"
                if summary.cheapest_trial_id
                else "-"
            )
            rows.append(
                (
                    summary.experiment_id,
                    _state(summary),
                    str(summary.trials),
                    str(summary.trials_measured),
                    str(summary.trials_slo_met),
                    cheapest,
                    created,
                )
            )
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        return EXIT_SUCCEEDED

    return _call(args, work)


def cancel_command(args: argparse.Namespace) -> int:
    async def work(controller: ControllerClient) -> int:
        experiment = await controller.cancel(args.experiment_id)
        print(f"{experiment.experiment_id}: {_state(experiment)}")
        return EXIT_SUCCEEDED

    return _call(args, work)


def validate_command(args: argparse.Namespace) -> int:
    """Exit 0 with the trial matrix and the load's duration, or 2 naming the invalid field; checked
    here, or by the controller named with --controller (what it would run, as it resolves it)."""
    from .matrix import validated_experiment

    if not args.controller:
        spec = _load_spec(args)
        if spec is None:
            return EXIT_INVALID
        _print_validated(args.spec, validated_experiment(spec))
        return EXIT_SUCCEEDED

    from etude.spec import SpecError, read_spec_file

    try:
        # Parsed here (a YAML error is this file's), validated by the controller.
        unresolved = read_spec_file(args.spec)
    except SpecError as error:
        print(f"etude {args.command}: invalid spec {args.spec}: {error}", file=sys.stderr)
        return EXIT_INVALID

    async def work(controller: ControllerClient) -> int:
        validated = await controller.validate(unresolved)
        _print_validated(f"{args.spec} (controller {controller.target})", validated)
        return EXIT_SUCCEEDED

    return _call(args, work)


def _print_validated(source: str, experiment: controller_pb2.Experiment) -> None:
    spec, trials = experiment.spec, [result.trial for result in experiment.trials]
    load = spec.load
    print(f"{source}: valid; {len(trials)} trial(s) on target {spec.target}, results in {spec.results}")
    print(f"{'trial':<48} {'model':<10} {'catalog':>11} {'d':>4} {'hardware':<14} runtime")
    for trial in trials:
        print(
            f"{trial.trial_id:<48} {trial.model.name:<10} {trial.catalog_size:>11,} {trial.embedding_dim:>4}"
            f" {trial.hardware.name:<14} {trial.runtime}"
        )
    total_s = experiment.estimated_load_s
    probes = f" x {spec.search.max_probes} probes at most" if spec.HasField("search") else ""
    print(
        f"Estimated load time: {len(trials)}{probes} x ({load.ramp_duration_s} s ramp"
        f" + {load.hold_duration_s} s hold)"
        f" = {total_s // 60} min {total_s % 60} s, plus each deployment's start-up (model build and warm-up:"
        " seconds at small catalogs, minutes at tens of millions of items)"
    )
