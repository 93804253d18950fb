from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Environment(_message.Message):
    __slots__ = ("etude_version", "git_commit", "python_version", "torch_version", "grpcio_version", "protobuf_version", "numpy_version", "host", "platform", "cpu_model", "cpu_cores", "cpu_cores_usable", "memory_bytes", "gpu_name", "gpu_memory_bytes", "gpu_driver_version", "cuda_version", "image")
    ETUDE_VERSION_FIELD_NUMBER: _ClassVar[int]
    GIT_COMMIT_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRPCIO_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOBUF_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUMPY_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_USABLE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_NAME_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    etude_version: str
    git_commit: str
    python_version: str
    torch_version: str
    grpcio_version: str
    protobuf_version: str
    numpy_version: str
    host: str
    platform: str
    cpu_model: str
    cpu_cores: int
    cpu_cores_usable: int
    memory_bytes: int
    gpu_name: str
    gpu_memory_bytes: int
    gpu_driver_version: str
    cuda_version: str
    image: str
    def __init__(self, etude_version: _Optional[str] = ..., git_commit: _Optional[str] = ..., python_version: _Optional[str] = ..., torch_version: _Optional[str] = ..., grpcio_version: _Optional[str] = ..., protobuf_version: _Optional[str] = ..., numpy_version: _Optional[str] = ..., host: _Optional[str] = ..., platform: _Optional[str] = ..., cpu_model: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., cpu_cores_usable: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gpu_name: _Optional[str] = ..., gpu_memory_bytes: _Optional[int] = ..., gpu_driver_version: _Optional[str] = ..., cuda_version: _Optional[str] = ..., image: _Optional[str] = ...) -> None: ...

class ServerMemory(_message.Message):
    __slots__ = ("server", "resident_bytes", "peak_resident_bytes", "startup_resident_bytes", "table_bytes", "rows_held", "built_resident_bytes", "built_peak_resident_bytes")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STARTUP_RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROWS_HELD_FIELD_NUMBER: _ClassVar[int]
    BUILT_RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUILT_PEAK_RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    server: str
    resident_bytes: int
    peak_resident_bytes: int
    startup_resident_bytes: int
    table_bytes: int
    rows_held: int
    built_resident_bytes: int
    built_peak_resident_bytes: int
    def __init__(self, server: _Optional[str] = ..., resident_bytes: _Optional[int] = ..., peak_resident_bytes: _Optional[int] = ..., startup_resident_bytes: _Optional[int] = ..., table_bytes: _Optional[int] = ..., rows_held: _Optional[int] = ..., built_resident_bytes: _Optional[int] = ..., built_peak_resident_bytes: _Optional[int] = ...) -> None: ...
