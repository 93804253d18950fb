"""HTTP/2 framing (RFC 9113) and gRPC's wire conventions, as much as a unary gRPC client needs.

Only encoding lives here, plus the tables that map HTTP/2 outcomes to gRPC status names; the
connection that reads frames is in h2_client.py. Request headers are HPACK-encoded without
indexing (RFC 7541 6.2.2), so the client keeps no encoder state: the part that never changes
(method, scheme, path, authority, content type, te) is encoded once per connection.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

ERROR_REFUSED_STREAM = 0x7
ERROR_CANCEL = 0x8
FRAME_HEADER_BYTES = 9
DEFAULT_MAX_FRAME_BYTES = 16_384
DEFAULT_WINDOW_BYTES = 65_535
MAX_WINDOW_BYTES = 2**31 - 1
# Client streams are odd; past this the connection is replaced by a fresh one (RFC 9113 5.1.1).
LAST_CLIENT_STREAM_ID = 2**31 - 1

# length (24 bits) and type (8 bits) share the first big-endian int; then flags, stream id.
_FRAME_HEADER = struct.Struct(">IBI")
_SETTING = struct.Struct(">H I")
_U32 = struct.Struct(">I")
_GRPC_PREFIX = struct.Struct(">B I")

# gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md and statuscodes.md): RST_STREAM codes and HTTP
# statuses of a response without a grpc-status.
RST_STREAM_STATUS = {
    0x7: "UNAVAILABLE",  # REFUSED_STREAM: never processed, safe to retry
    0x8: "CANCELLED",
    0xB: "RESOURCE_EXHAUSTED",  # ENHANCE_YOUR_CALM
    0xC: "PERMISSION_DENIED",  # INADEQUATE_SECURITY
}
HTTP_STATUS = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED"}
HTTP_STATUS.update({status: "UNAVAILABLE" for status in (429, 502, 503, 504)})


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame: 9-byte header and payload."""
    return _FRAME_HEADER.pack((len(payload) << 8) | frame_type, flags, stream_id) + payload


def request_frames(stream_id: int, headers: bytes, payload: bytes) -> bytes:
    """A unary request's HEADERS and its one DATA frame, which ends the stream."""
    return b"".join(
        (
            _FRAME_HEADER.pack((len(headers) << 8) | HEADERS, FLAG_END_HEADERS, stream_id),
            headers,
            _FRAME_HEADER.pack((len(payload) << 8) | DATA, FLAG_END_STREAM, stream_id),
            payload,
        )
    )


def answer_frames(stream_id: int, headers: bytes, message: bytes, trailers: bytes) -> bytes:
    """A gRPC answer as a server frames it in the common case: HEADERS, one DATA, trailers."""
    return (
        frame(HEADERS, FLAG_END_HEADERS, stream_id, headers)
        + frame(DATA, 0, stream_id, message)
        + frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream_id, trailers)
    )


def parse_frame_header(buffer: bytes | bytearray | memoryview, offset: int) -> tuple[int, int, int, int]:
    """(payload length, type, flags, stream id) of the frame header at `offset`."""
    length_and_type, flags, stream_id = _FRAME_HEADER.unpack_from(buffer, offset)
    return length_and_type >> 8, length_and_type & 0xFF, flags, stream_id & 0x7FFF_FFFF


def settings_frame(settings: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(key, value) for key, value in settings.items()))


def parse_settings(payload: bytes) -> dict[int, int]:
    return {
        key: value for key, value in (_SETTING.unpack_from(payload, at) for at in range(0, len(payload), 6))
    }


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(error_code))


def u32(payload: bytes, offset: int = 0) -> int:
    return int(_U32.unpack_from(payload, offset)[0])


def grpc_message(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte length, bytes."""
    return _GRPC_PREFIX.pack(0, len(message)) + message


def hpack_integer(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with `prefix_bits` bits in the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(value: bytes) -> bytes:
    """An HPACK string literal without Huffman coding."""
    return hpack_integer(len(value), 7) + value


def literal_header(name: bytes | int, value: bytes) -> bytes:
    """A header field without indexing; `name` is a static-table index or the literal name."""
    if isinstance(name, int):
        return hpack_integer(name, 4) + hpack_string(value)
    return b"\x00" + hpack_string(name) + hpack_string(value)


# Static-table indices (RFC 7541 Appendix A).
_METHOD_POST = b"\x83"
_SCHEME_HTTP = b"\x86"
_SCHEME_HTTPS = b"\x87"
_PATH = 4
_AUTHORITY = 1
_CONTENT_TYPE = 31
_USER_AGENT = 58


def request_header_block(path: str, authority: str, *, tls: bool, user_agent: str) -> bytes:
    """The header fields every request of a connection shares (RFC 9113 8.3.1, gRPC's Call-Definition)."""
    return b"".join(
        (
            _METHOD_POST,
            _SCHEME_HTTPS if tls else _SCHEME_HTTP,
            literal_header(_PATH, path.encode()),
            literal_header(_AUTHORITY, authority.encode()),
            literal_header(_CONTENT_TYPE, b"application/grpc"),
            literal_header(b"te", b"trailers"),
            literal_header(_USER_AGENT, user_agent.encode()),
        )
    )


def grpc_timeout(timeout_s: float) -> bytes:
    """gRPC's timeout header value: at most 8 digits and a unit (here microseconds or millis)."""
    micros = max(1, int(timeout_s * 1e6))
    if micros < 100_000_000:
        return b"%du" % micros
    return b"%dm" % min(99_999_999, micros // 1000)
