"""Controller: runs experiments submitted over gRPC from a queue, its state kept in a result store."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING

from etude import defaults
from etude.logs import LOG_LEVELS

if TYPE_CHECKING:
    from etude.v1 import experiment_pb2

    from .drivers.driver import Driver

DEFAULT_PORT = defaults.CONTROLLER_PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--startup-timeout-s", type=float, default=defaults.STARTUP_TIMEOUT_S,
        help="how long a deployed service may take to report SERVING",
    )  # fmt: skip
    parser.add_argument(
        "--results", default=defaults.RESULTS,
        help="result store of every submitted experiment (folder or gs://bucket/prefix); a restarted "
        "controller lists its finished experiments, queues its queued ones again and marks the ones "
        "that were running as interrupted",
    )  # fmt: skip
    parser.add_argument(
        "--max-concurrent-experiments", type=int, default=1,
        help="experiments run at once (on one machine, more than 1 measures their interference)",
    )  # fmt: skip
    _add_target_arguments(parser, default_target=defaults.TARGET)


def _add_target_arguments(parser: argparse.ArgumentParser, default_target: str | None) -> None:
    parser.add_argument(
        "--target", choices=["local", "kubernetes"], default=default_target,
        help="where trials deploy: local child processes, or a Kubernetes cluster (the usual kubeconfig "
        "or in-cluster config)" + ("" if default_target else "; overrides the spec's `target`"),
    )  # fmt: skip
    parser.add_argument(
        "--namespace", default=None,
        help="kubernetes target: namespace of the trials (default: in-cluster or kubeconfig context's)",
    )  # fmt: skip
    parser.add_argument(
        "--image", default=None,
        help="kubernetes target: container image of the services (default: the manifests' image)",
    )  # fmt: skip


def make_driver(target: str, args: argparse.Namespace) -> Driver:
    """The driver of a target; both share the trial logic of ExperimentRunner."""
    if target == "kubernetes":
        from .drivers.kubernetes import KubernetesDriver

        return KubernetesDriver(
            namespace=args.namespace, image=args.image, startup_timeout_s=args.startup_timeout_s
        )
    from etude.security import SecurityConfigError, child_tls_flags

    from .drivers.local import LocalDriver

    try:
        # A TLS controller (`etude serve controller --tls-cert ...`) starts its children with TLS.
        security_flags = child_tls_flags(
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
            tls_ca=getattr(args, "tls_ca", None),
            tls_client_ca=getattr(args, "tls_client_ca", None),
        )
    except SecurityConfigError as error:
        raise SystemExit(f"etude serve controller: {error}") from None
    return LocalDriver(args.startup_timeout_s, security_flags=security_flags)


async def serve(args: argparse.Namespace) -> None:
    from etude.serving import ServiceHost, run_until_signalled, service_full_name
    from etude.spec import SpecError
    from etude.v1 import controller_pb2, controller_pb2_grpc

    from ..results.store import open_store
    from .experiments import ExperimentManager
    from .metrics import export_experiment_states
    from .server import ControllerServicer

    if args.max_concurrent_experiments < 1:
        raise SystemExit(
            f"etude serve controller: --max-concurrent-experiments must be >= 1, got "
            f"{args.max_concurrent_experiments}"
        )
    try:
        store = open_store(args.results)
        # A controller whose store cannot be written refuses to start rather than serve and fail.
        store.check_writable()
    except SpecError as error:
        raise SystemExit(f"etude serve controller: --{error}") from None
    manager = ExperimentManager(
        make_driver(args.target, args),
        store=store,
        max_concurrent_experiments=args.max_concurrent_experiments,
    )
    export_experiment_states(manager.count_by_state)
    await manager.start()
    host = ServiceHost(
        [service_full_name(controller_pb2, "ControllerService")],
        lambda server: controller_pb2_grpc.add_ControllerServiceServicer_to_server(
            ControllerServicer(manager), server
        ),
        host=args.host,
        port=args.port,
    )
    await run_until_signalled(host, grace_s=args.grace_s, port_file=args.port_file, on_stop=manager.stop)


def _add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment file, e.g. examples/quickstart.yaml")
    parser.add_argument(
        "--results",
        default=None,
        help="result store (folder or gs://bucket/prefix); overrides the spec's `results`",
    )
    parser.add_argument("--startup-timeout-s", type=float, default=defaults.STARTUP_TIMEOUT_S)
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="warning", help="controller log level on stderr"
    )
    parser.add_argument(
        "--fail-on-slo-miss", action="store_true", help="exit 3 when every trial ran but one missed its SLO"
    )
    _add_target_arguments(parser, default_target=None)


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run an experiment spec (YAML) and print a summary table")
    _add_experiment_arguments(run)
    run.set_defaults(handler=run_command)
    report = commands.add_parser(
        "report", help="rebuild report.md and report.html of stored experiments (no re-run)"
    )
    report.add_argument("results", help="an experiment folder, or a results folder (every experiment in it)")
    report.set_defaults(handler=report_command)
    compare = commands.add_parser("compare", help="two experiments side by side, trial by trial, with ratios")
    compare.add_argument("results_a", help="experiment folder A")
    compare.add_argument("results_b", help="experiment folder B (ratios are B / A)")
    compare.add_argument("--output", default=None, help="also write the table to this Markdown file")
    compare.set_defaults(handler=compare_command)

    search = commands.add_parser(
        "search",
        help="find the highest rate each deployment sustains within the spec's SLO",
        description=(
            "For each trial, deploy the inference service once and run constant-rate probes (ramp "
            "and hold as the spec's load says): double the rate while the SLO holds, then bisect "
            "between the highest passing and the lowest failing rate."
        ),
    )
    _add_experiment_arguments(search)
    # Each flag overrides the spec's `search` field of the same name (its default where neither).
    search.add_argument(
        "--start-rate", type=float, default=None,
        help="first rate probed (search.start_rate_per_s; the SLO's rate)",
    )  # fmt: skip
    search.add_argument(
        "--max-rate", type=float, default=None, help="highest rate probed (search.max_rate_per_s; 64 x start)"
    )
    search.add_argument(
        "--precision", type=float, default=None,
        help="stop when within this fraction (search.precision; 0.05)",
    )  # fmt: skip
    search.add_argument(
        "--max-probes", type=int, default=None, help="load tests per trial at most (search.max_probes; 10)"
    )
    search.set_defaults(handler=run_command)


def _with_search_flags(spec: experiment_pb2.ExperimentSpec, args: argparse.Namespace) -> None:
    """`etude search`: the spec's `search` (present, so the trials search), each flag given
    replacing its field."""
    search = spec.search
    search.SetInParent()
    for flag, field in (
        ("start_rate", "start_rate_per_s"),
        ("max_rate", "max_rate_per_s"),
        ("precision", "precision"),
        ("max_probes", "max_probes"),
    ):
        if (value := getattr(args, flag)) is not None:
            setattr(search, field, value)


def run_command(args: argparse.Namespace) -> int:
    """`etude run` and `etude search`: validate, run every trial locally with live progress,
    print the summary. A spec with `search` searches under `etude run` too. Exit status as
    exit_status.py says (0 ran, 1 failed, 2 bad input, 3 SLO missed with --fail-on-slo-miss)."""
    from etude.spec import SpecError, read_spec_file

    from ..report.summary import summary_table
    from ..results.layout import Layout
    from ..results.store import open_store
    from .drivers.processes import ServiceStartError
    from .exit_status import experiment_exit_status
    from .progress import ProgressPrinter
    from .runner import ExperimentRunner, new_experiment
    from .validation import resolve

    try:
        spec = read_spec_file(args.spec)
        if args.target:
            spec.target = args.target
        if args.command == "search":
            _with_search_flags(spec, args)
        spec = resolve(spec)
        if args.results:
            spec.results = args.results
        store = open_store(spec.results)
        store.check_writable()
        driver = make_driver(spec.target, args)
    except SpecError as error:
        print(f"etude {args.command}: invalid spec {args.spec}: {error}", file=sys.stderr)
        return 2
    except (ValueError, ServiceStartError) as error:
        print(f"etude {args.command}: {error}", file=sys.stderr)
        return 2
    experiment = new_experiment(spec, store)
    print(
        f"Experiment {experiment.experiment_id}: {len(experiment.trials)} trial(s),"
        f" results in {experiment.results_uri}"
    )
    runner = ExperimentRunner(experiment, driver, store, ProgressPrinter())
    # SIGTERM (a job scheduler, `kill`) stops the run the way Ctrl-C does: asyncio cancels the
    # run on SIGINT, so the services are stopped and what finished is kept, instead of dying
    # with experiment.json left RUNNING.
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        asyncio.run(runner.run())
    except KeyboardInterrupt:
        print("\ninterrupted: services stopped, finished trials kept", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print()
    print(summary_table(experiment))
    report = Layout(experiment.experiment_id).report_html
    if store.exists(report):
        print(f"Report: {store.uri(report)}")
    return experiment_exit_status(experiment, args.fail_on_slo_miss)


def report_command(args: argparse.Namespace) -> int:
    """`etude report`: rebuild the report of one experiment, or of every one in a results folder."""
    from ..report.report import write_report
    from ..results.documents import experiments_at
    from ..results.errors import ResultsError
    from ..results.layout import Layout

    try:
        experiments = experiments_at(args.results)
    except ResultsError as error:
        print(f"etude report: {error}", file=sys.stderr)
        return 2
    status = 0
    for store, experiment_id in experiments:
        try:
            write_report(store, experiment_id)
        except ResultsError as error:
            print(f"etude report: {experiment_id}: {error}", file=sys.stderr)
            status = 1
            continue
        layout = Layout(experiment_id)
        print(store.uri(layout.report_html))
        print(store.uri(layout.report_markdown))
    return status


def compare_command(args: argparse.Namespace) -> int:
    """`etude compare`: print (and optionally write) the side-by-side table of two experiments."""
    from pathlib import Path

    from ..report.compare import compare_experiments, comparison_markdown
    from ..results.documents import experiments_at, load_experiment
    from ..results.errors import ResultsError

    loaded = []
    for folder in (args.results_a, args.results_b):
        try:
            found = experiments_at(folder)
            if len(found) != 1:
                raise ResultsError(f"{folder}: holds {len(found)} experiments; name one of their folders")
            loaded.append(load_experiment(*found[0]))
        except ResultsError as error:
            print(f"etude compare: {error}", file=sys.stderr)
            return 2
    table = comparison_markdown(compare_experiments(*loaded))
    print(table, end="")
    if args.output:
        Path(args.output).write_text(table)
        print(f"written to {args.output}")
    return 0
