"""Every path of an experiment in a result store, named in one place.

    <experiment>/experiment.json        the etude.v1.Experiment, rewritten at every state change
    <experiment>/spec.json              the resolved spec
    <experiment>/summary.md             the summary table; report.md and report.html
    <experiment>/started.json           the processes started for it and still running (started.py)
    <experiment>/figures/               the report's plots (SVG), linked from report.md
    <experiment>/logs/                  the load generators' logs and traces-loadgen[-i].jsonl
    <experiment>/trials/<trial>/        trial.json, inference.log, traces-inference.jsonl, and
                                        the files of its run (records.csv, series.csv, run.json,
                                        summary.json); for an SLO search one run per probe in
                                        probes/NN-RATE/ instead; with several load generators
                                        instance i's own files in loadgen-i/ inside the run's.

Paths are relative to the store's root and use '/'. File names inside a folder are module
constants; a driver that names a file for a service to write (a log, a trace file) asks here.
"""

from __future__ import annotations

from dataclasses import dataclass

EXPERIMENT_FILE = "experiment.json"
SPEC_FILE = "spec.json"
SUMMARY_TABLE_FILE = "summary.md"
STARTED_FILE = "started.json"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
FIGURES_FOLDER = "figures"
TRIAL_FILE = "trial.json"
LOGS_FOLDER = "logs"
TRIALS_FOLDER = "trials"
PROBES_FOLDER = "probes"

# The files of one run (one load test), written by the load generator.
RECORDS_FILE = "records.csv"
SERIES_FILE = "series.csv"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"

# Sampled spans as OTLP JSON lines: the inference service's in its trial's folder, the load
# generator's in logs/.
INFERENCE_TRACE_FILE = "traces-inference.jsonl"
LOADGEN_TRACE_FILE = "traces-loadgen.jsonl"


def _instance_suffix(instance: int) -> str:
    # Instance 0 keeps the names of the only load generator.
    return f"-{instance}" if instance else ""


def service_log_file(service: str, instance: int = 0) -> str:
    """The log file of a service process (`loadgen-1.log` for the second load generator)."""
    return f"{service}{_instance_suffix(instance)}.log"


def loadgen_trace_file(instance: int = 0) -> str:
    """The trace file of load generator `instance`, in the experiment's logs/ folder."""
    return LOADGEN_TRACE_FILE.replace(".jsonl", f"{_instance_suffix(instance)}.jsonl")


def instance_folder(instance: int) -> str:
    """Where instance `instance` of a run driven by several load generators keeps its own files,
    relative to the run's folder."""
    return f"loadgen-{instance}"


def probe_folder(index: int, rate_per_s: float) -> str:
    """The run folder of probe `index` (from 1, in the order run) of an SLO search, relative to
    the trial's folder."""
    return f"{PROBES_FOLDER}/{index:02d}-{rate_per_s:g}"


@dataclass(frozen=True)
class Layout:
    """The paths of one experiment in its store."""

    experiment_id: str

    def _path(self, *parts: str) -> str:
        return "/".join((self.experiment_id, *parts))

    @property
    def root(self) -> str:
        return self.experiment_id

    @property
    def experiment_file(self) -> str:
        return self._path(EXPERIMENT_FILE)

    @property
    def spec_file(self) -> str:
        return self._path(SPEC_FILE)

    @property
    def summary_table(self) -> str:
        return self._path(SUMMARY_TABLE_FILE)

    @property
    def started_file(self) -> str:
        return self._path(STARTED_FILE)

    @property
    def report_markdown(self) -> str:
        return self._path(REPORT_MARKDOWN)

    @property
    def report_html(self) -> str:
        return self._path(REPORT_HTML)

    def figure(self, name: str) -> str:
        """A plot of the report, beside report.md (figure_link(name) from there)."""
        return self._path(figure_link(name))

    @property
    def logs(self) -> str:
        return self._path(LOGS_FOLDER)

    def loadgen_traces(self, instance: int = 0) -> str:
        return self._path(LOGS_FOLDER, loadgen_trace_file(instance))

    def trial(self, trial_id: str) -> str:
        """The trial's folder."""
        return self._path(TRIALS_FOLDER, trial_id)

    def trial_file(self, trial_id: str) -> str:
        return f"{self.trial(trial_id)}/{TRIAL_FILE}"

    def inference_traces(self, trial_id: str) -> str:
        return f"{self.trial(trial_id)}/{INFERENCE_TRACE_FILE}"

    def run(self, trial_id: str, within: str = ".") -> str:
        """The folder of a trial's run: the trial's own ("."), or a probe folder inside it."""
        return self.trial(trial_id) if within == "." else f"{self.trial(trial_id)}/{within}"

    def probe(self, trial_id: str, index: int, rate_per_s: float) -> str:
        return self.run(trial_id, probe_folder(index, rate_per_s))


def in_folder(folder: str, name: str) -> str:
    """A file of a folder of the store."""
    return f"{folder}/{name}"


def figure_link(name: str) -> str:
    """The path of plot `name` relative to report.md (and report.html), as its image link names it."""
    return f"{FIGURES_FOLDER}/{name}.svg"
