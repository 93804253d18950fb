"""Server reflection that keeps the protos' comments, so `grpcurl describe` shows the field docs.

The generated stubs embed descriptors without source info. `make protos` also writes
etude/v1/etude.protoset (a FileDescriptorSet of protos/ with source info); reflection answers file
requests for etude's protos from it, and everything else from the default descriptor pool.
"""

from __future__ import annotations

import importlib
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor

PROTOSET = "etude.protoset"


def load_documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The committed protoset's files by name, each only if it matches the compiled stubs (a stale
    protoset must not describe fields the server does not have)."""
    documented = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("etude.v1").joinpath(PROTOSET).read_bytes()
    )
    pool = descriptor_pool.Default()
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for file in documented.file:
        # etude/v1/workload.proto is compiled into etude.v1.workload_pb2.
        importlib.import_module(file.name.removesuffix(".proto").replace("/", ".") + "_pb2")
        compiled_descriptor = pool.FindFileByName(file.name)
        compiled = descriptor_pb2.FileDescriptorProto()
        compiled_descriptor.CopyToProto(compiled)
        served = _without_json_names(file)
        schema = descriptor_pb2.FileDescriptorProto()
        schema.CopyFrom(served)
        schema.ClearField("source_code_info")
        if schema == compiled:
            files[file.name] = served
    return files


def _without_json_names(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The file without the JSON names protoc writes into a descriptor set: the compiled stubs have
    none, and grpcurl then prints proto field names (`item_ids`), as it always did here."""
    stripped = descriptor_pb2.FileDescriptorProto()
    stripped.CopyFrom(file)
    messages = list(stripped.message_type)
    while messages:
        message = messages.pop()
        for field in message.field:
            field.ClearField("json_name")
        messages.extend(message.nested_type)
    return stripped


class _DocumentedFile:
    """A FileDescriptor as reflection uses it (name, dependencies, CopyToProto), with comments."""

    def __init__(self, descriptor: FileDescriptor, documented: dict[str, descriptor_pb2.FileDescriptorProto]):
        self._descriptor = descriptor
        self._documented = documented

    @property
    def name(self) -> str:
        return self._descriptor.name

    @property
    def dependencies(self) -> list[_DocumentedFile]:
        return [_DocumentedFile(dependency, self._documented) for dependency in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # protobuf spells it so
        documented = self._documented.get(self.name)
        if documented is None:
            self._descriptor.CopyToProto(proto)
        else:
            proto.CopyFrom(documented)


class DocumentedPool:
    """The default descriptor pool, answering file look-ups with the documented descriptors."""

    def __init__(self, documented: dict[str, descriptor_pb2.FileDescriptorProto] | None = None) -> None:
        self._pool = descriptor_pool.Default()
        self._documented = load_documented_files() if documented is None else documented

    def FindFileByName(self, name: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileByName(name), self._documented)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:
        return _DocumentedFile(self._pool.FindFileContainingSymbol(symbol), self._documented)

    def __getattr__(self, name: str) -> Any:
        # Message, extension and service look-ups: the default pool's own answers.
        return getattr(self._pool, name)
