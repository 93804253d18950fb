"""Generated from protos/etude/v1 by `make protos`; do not edit."""
