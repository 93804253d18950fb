"""What the h2 client makes of the frames a server may send (RFC 9113): header blocks padded,
with priority, split over CONTINUATION frames; frames of types it does not know; trailers-only
answers; an answer cut anywhere between two reads. grpcio's server sends none of the rarer
forms, so a plain TCP server on loopback writes them here byte by byte."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import hpack
import pytest
from etude.services.loadgen import h2_frames as h2
from etude.services.loadgen.generator import OK, Outcome
from etude.services.loadgen.h2_client import H2RecommendClient

from etude.v1 import recommender_pb2

# Every test here runs on asyncio's loop and on uvloop's (tests/loadgen/conftest.py).
ON_EVERY_EVENT_LOOP = True
# ... and with both writers of its requests (tests/loadgen/conftest.py).
pytestmark = pytest.mark.usefixtures("h2_writer")


async def read_request(reader: asyncio.StreamReader) -> None:
    """Reads the client's preface, frames and request until the request's END_STREAM."""
    assert await reader.readexactly(len(h2.PREFACE)) == h2.PREFACE
    while True:
        length, frame_type, flags, _ = h2.parse_frame_header(
            await reader.readexactly(h2.FRAME_HEADER_BYTES), 0
        )
        await reader.readexactly(length)
        if frame_type == h2.DATA and flags & h2.FLAG_END_STREAM:
            return


@asynccontextmanager
async def answering(answer: bytes, piece_bytes: int) -> AsyncIterator[str]:
    """A server that answers the one request it gets with `answer` (frames for stream 1),
    written `piece_bytes` at a time with a pause between: the client reads it in pieces."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(h2.settings_frame({}) + h2.frame(h2.SETTINGS, h2.FLAG_ACK, 0))
        await read_request(reader)
        for start in range(0, len(answer), piece_bytes):
            writer.write(answer[start : start + piece_bytes])
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.read()  # until the client closes

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def outcome_of(answer: bytes, piece_bytes: int = 1 << 20) -> Outcome:
    async with answering(answer, piece_bytes) as target:
        client = H2RecommendClient(target, request_spans=False)
        await client.connect(5.0)
        try:
            ended: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            client.start("s", [1, 2], 3, 5.0, ended.set_result)
            return await asyncio.wait_for(ended, 5.0)
        finally:
            await client.aclose()


def answer_message(server_total_us: int) -> bytes:
    response = recommender_pb2.RecommendResponse(item_ids=[4, 5, 6])
    response.timing.batch_size, response.timing.server_total_us = 2, server_total_us
    return h2.grpc_message(response.SerializeToString())


def padded(block: bytes, pad: int) -> bytes:
    return bytes([pad]) + block + b"\x00" * pad


async def test_a_padded_header_block_with_priority_split_over_continuation_frames_is_read_whole() -> None:
    encoder = hpack.Encoder()
    headers = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
    trailers = encoder.encode([("grpc-status", "0"), ("grpc-message", "")])
    priority = b"\x00\x00\x00\x00\x10"  # stream dependency and weight
    data = b"".join(
        (
            h2.frame(
                h2.HEADERS,
                h2.FLAG_END_HEADERS | h2.FLAG_PADDED | h2.FLAG_PRIORITY,
                1,
                bytes([3]) + priority + headers + b"\x00" * 3,
            ),
            h2.frame(h2.PRIORITY, 0, 1, priority),
            h2.frame(0x0A, 0, 0, b"an ALTSVC frame, unknown to the client"),
            h2.frame(h2.DATA, h2.FLAG_PADDED, 1, padded(answer_message(42), 5)),
            h2.frame(h2.HEADERS, h2.FLAG_END_STREAM, 1, trailers[:1]),
            h2.frame(h2.CONTINUATION, h2.FLAG_END_HEADERS, 1, trailers[1:]),
        )
    )
    # Seven bytes at a time: frame headers and payloads arrive in pieces.
    outcome = await outcome_of(data, piece_bytes=7)
    assert outcome.status == OK and (outcome.batch_size, outcome.server_total_us) == (2, 42)


async def test_a_trailers_only_answer_is_the_grpc_status_it_carries() -> None:
    block = hpack.Encoder().encode([(":status", "200"), ("grpc-status", "8"), ("grpc-message", "busy")])
    answer = h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 1, block)
    assert (await outcome_of(answer)).status == "RESOURCE_EXHAUSTED"


async def test_an_answer_without_grpc_status_is_named_by_its_http_status() -> None:
    block = hpack.Encoder().encode([(":status", "503")])
    answer = h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 1, block)
    assert (await outcome_of(answer)).status == "UNAVAILABLE"


@asynccontextmanager
async def answering_each(answers: list[tuple[bytes, bytes]]) -> AsyncIterator[str]:
    """A server that answers its k-th request with the k-th (headers, trailers) blocks around one
    message, each answer in one write: the shape the timed transport hands over in pieces."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(h2.settings_frame({}) + h2.frame(h2.SETTINGS, h2.FLAG_ACK, 0))
        assert await reader.readexactly(len(h2.PREFACE)) == h2.PREFACE
        pending = list(answers)
        while pending:
            header = await reader.readexactly(h2.FRAME_HEADER_BYTES)
            length, frame_type, flags, stream_id = h2.parse_frame_header(header, 0)
            await reader.readexactly(length)
            if frame_type == h2.DATA and flags & h2.FLAG_END_STREAM:
                headers, trailers = pending.pop(0)
                writer.write(h2.answer_frames(stream_id, headers, answer_message(stream_id), trailers))
        await reader.read()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_answers_mean_what_their_header_blocks_say_as_hpacks_table_changes() -> None:
    encoder = hpack.Encoder()
    ok_headers = [(":status", "200"), ("content-type", "application/grpc")]

    def blocks(status: str) -> tuple[bytes, bytes]:
        return encoder.encode(ok_headers), encoder.encode([("grpc-status", status), ("grpc-message", "")])

    # 1: fields enter the table; 2, 3: the same blocks, all indexed (the client's known blocks);
    # 4: a new entry moves every index; 5: byte for byte answer 3's blocks, meaning another status.
    answers = [blocks("0"), blocks("0"), blocks("0"), blocks("8")]
    answers.append(answers[2])
    assert answers[4][1] != answers[3][1]
    async with answering_each(answers) as target:
        client = H2RecommendClient(target, request_spans=False)
        await client.connect(5.0)
        try:
            statuses = []
            for _ in answers:
                ended: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
                client.start("s", [1, 2], 3, 5.0, ended.set_result)
                outcome = await asyncio.wait_for(ended, 5.0)
                statuses.append(outcome.status)
                if outcome.status == OK:
                    assert outcome.server_total_us == 2 * len(statuses) - 1  # its own stream's message
        finally:
            await client.aclose()
    assert statuses == [OK, OK, OK, "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
