"""Etude: benchmark session-based recommendation models for online serving.

This package holds what every service shares: the generated gRPC stubs (etude.v1), server
set-up, telemetry and logging set-up, the experiment spec loader and the `etude` command.
"""

__version__ = "0.1.0"
