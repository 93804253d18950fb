"""Service options: command-line flags whose defaults come from `ETUDE_*` environment variables.

`--max-batch-size` of `etude serve inference` reads `ETUDE_MAX_BATCH_SIZE` when the flag is
absent, so a container sets options through its environment and a person through flags.
"""

from __future__ import annotations

import argparse
import os

ENV_PREFIX = "ETUDE_"


def env_name(action: argparse.Action) -> str:
    return ENV_PREFIX + action.dest.upper()


def apply_env_defaults(parser: argparse.ArgumentParser) -> None:
    """Replaces each option's default with its ETUDE_* environment variable, when set.

    The value goes through the option's own `type` (and `choices`), so a bad environment
    value fails exactly like a bad flag, naming the variable.
    """
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        raw = os.environ.get(env_name(action))
        if raw is None:
            continue
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            value: object = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            try:
                value = action.type(raw) if callable(action.type) else raw
            except (TypeError, ValueError) as error:
                parser.error(f"{env_name(action)}={raw!r}: {error}")
            if action.choices is not None and value not in action.choices:
                parser.error(f"{env_name(action)}={raw!r}: must be one of {list(action.choices)}")
        action.default = value
        action.required = False
