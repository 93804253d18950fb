"""Experiment specs: YAML -> JSON -> ExperimentSpec, parsed with every error naming its field.

One schema serves the CLI and the API: a YAML file is parsed into the same `ExperimentSpec`
message that `ControllerService.SubmitExperiment` takes. This module only parses; what a valid
spec is (model names, presets, bounds) is decided above it, where specs are accepted
(etude.services.controller.validation): the shared base knows nothing of the services.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from etude.v1 import experiment_pb2


class SpecError(ValueError):
    """An invalid experiment spec; `field` is the path of the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_spec_text(text: str, source: str = "<spec>") -> experiment_pb2.ExperimentSpec:
    """Parses YAML (or JSON) text into an ExperimentSpec, rejecting unknown or mistyped fields."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError("<document>", f"{source} is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise SpecError("<document>", f"{source} must be a mapping of fields, got {type(document).__name__}")
    return parse_spec_dict(document)


def parse_spec_dict(document: dict[str, Any]) -> experiment_pb2.ExperimentSpec:
    spec = experiment_pb2.ExperimentSpec()
    try:
        json_format.ParseDict(document, spec, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        raise SpecError(_field_of_parse_error(str(error)), str(error)) from error
    return spec


def read_spec_file(path: str | Path) -> experiment_pb2.ExperimentSpec:
    """Reads and parses the spec file at `path` (not validated: see controller.validation)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError("<file>", f"cannot read {path}: {error.strerror}") from error
    return parse_spec_text(text, str(path))


def _field_of_parse_error(message: str) -> str:
    # protobuf nests its messages: 'Failed to parse load field: Failed to parse
    # ramp_duration_s field: invalid literal ...' or '... has no field named "rat" at ...'.
    path = re.findall(r"Failed to parse (\w+) field", message)
    path += re.findall(r'no field named "([^"]+)"', message)
    return ".".join(path) or "<document>"


def spec_to_dict(spec: experiment_pb2.ExperimentSpec) -> dict[str, Any]:
    """The spec as a plain dict with proto field names, as written to spec.json."""
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)
