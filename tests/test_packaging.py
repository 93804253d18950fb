"""The installed distribution is one top-level package, `etude`, with services/ inside it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"])


def _package_folders() -> set[str]:
    names = set()
    for folder, package in (("etude", "etude"), ("services", "etude.services")):
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            names.add(".".join((package, *relative.parts)))
    return names


def test_every_package_folder_is_installed() -> None:
    assert _package_folders() == _declared_packages()


def test_no_code_imports_a_top_level_services_package() -> None:
    # Installed, only `etude` exists: an absolute `services.` import works in the checkout alone.
    absolute_import = re.compile(r"^\s*(from|import) services\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("etude", "services", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if absolute_import.search(path.read_text())
    ]
    assert offenders == []


def test_the_shared_base_imports_nothing_from_the_services() -> None:
    # Floors point down: etude/ (stubs, serving, logs, telemetry, config, defaults, spec parsing)
    # is the ground the services stand on; a service import there would run back up.
    service_import = re.compile(r"^\s*(from|import) etude\.services\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "etude").rglob("*.py")
        if service_import.search(path.read_text())
    ]
    assert offenders == []
