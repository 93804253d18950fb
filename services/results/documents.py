"""The JSON documents of an experiment (experiment.json, spec.json, trial.json) and finding the
experiments a folder or a gs:// prefix holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from etude.spec import SpecError
from etude.v1 import controller_pb2

from .errors import ResultsError
from .layout import EXPERIMENT_FILE, Layout
from .store import LocalResultStore, ResultStore, json_text, open_store


def to_dict(message: Message) -> dict[str, Any]:
    """A message as stored: proto field names, fields at their defaults left out."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def experiment_text(experiment: controller_pb2.Experiment) -> str:
    """experiment.json's text."""
    return json_text(to_dict(experiment))


def parse_experiment(text: str, source: str) -> controller_pb2.Experiment:
    """An experiment.json's Experiment; fields a newer Etude added are skipped. Raises ResultsError."""
    try:
        return json_format.Parse(text, controller_pb2.Experiment(), ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise ResultsError(f"{source}: not an etude.v1.Experiment: {error}") from error


def save_experiment(store: ResultStore, experiment: controller_pb2.Experiment) -> None:
    """Writes experiment.json (blocking; on an event loop use AsyncResultStore.write_text with
    experiment_text)."""
    store.write_text(Layout(experiment.experiment_id).experiment_file, experiment_text(experiment))


def load_experiment(store: ResultStore, experiment_id: str) -> controller_pb2.Experiment:
    """The stored etude.v1.Experiment of `experiment_id`; raises ResultsError."""
    relative = Layout(experiment_id).experiment_file
    try:
        text = store.read_text(relative)
    except FileNotFoundError:
        raise ResultsError(f"{store.uri(relative)}: not found (is this an experiment folder?)") from None
    return parse_experiment(text, store.uri(relative))


def experiments_at(path: str | Path) -> list[tuple[ResultStore, str]]:
    """(store, experiment id) for an experiment folder, or for every experiment in a results
    folder; either may be a local path or gs://bucket/prefix. Raises ResultsError."""
    if str(path).startswith("gs://"):
        return _gcs_experiments_at(str(path).rstrip("/"))
    folder = Path(path).resolve()
    if (folder / EXPERIMENT_FILE).is_file():
        return [(LocalResultStore(folder.parent), folder.name)]
    if not folder.is_dir():
        raise ResultsError(f"{folder}: no such folder")
    found = experiments_in(LocalResultStore(folder))
    if not found:
        raise ResultsError(f"{folder}: neither an experiment folder nor a results folder holding one")
    return found


def experiments_in(store: ResultStore) -> list[tuple[ResultStore, str]]:
    """The experiments right below the store's root (folders holding an experiment.json)."""
    return [(store, name) for name in store.list_dirs() if store.exists(Layout(name).experiment_file)]


def _gcs_experiments_at(uri: str) -> list[tuple[ResultStore, str]]:
    parent, _, name = uri.rpartition("/")
    try:
        if parent != "gs:/" and name:
            parent_store = open_store(parent)
            if parent_store.exists(Layout(name).experiment_file):
                return [(parent_store, name)]
        found = experiments_in(open_store(uri))
    except SpecError as error:
        raise ResultsError(str(error)) from error
    if not found:
        raise ResultsError(f"{uri}: neither an experiment nor a results prefix holding one")
    return found
