"""The one error of the results layer: a store does not hold what was asked for, or holds it badly."""

from __future__ import annotations


class ResultsError(ValueError):
    """A result file is missing or unreadable; the message names the file and what is wrong."""
