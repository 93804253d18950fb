"""Generated click logs for the replay tests, and the replay rule written plainly to check
what the service streams against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from etude.services.workload.generator import SessionBatch

Click = tuple[str, str, float]


def random_clicks(num_clicks: int, seed: int = 0) -> list[Click]:
    """Clicks of interleaved sessions (as a real log of concurrent visitors has them), item
    keys that are arbitrary strings, timestamps not sorted within the log."""
    rng = np.random.default_rng(seed)
    sessions = rng.integers(0, num_clicks // 4 + 1, num_clicks)
    items = rng.zipf(1.6, num_clicks) % 997
    times = 1_400_000_000 + rng.integers(0, 86_400, num_clicks)
    return [(f"visit-{s}", f"sku:{i:x}", float(t)) for s, i, t in zip(sessions, items, times, strict=True)]


def write_log(path: Path, clicks: list[Click], *, delimiter: str = ",", header: bool = True) -> Path:
    lines = [delimiter.join(("session_id", "item_id", "timestamp"))] if header else []
    lines += [delimiter.join((s, i, repr(t))) for s, i, t in clicks]
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_sessions(clicks: list[Click]) -> list[list[int]]:
    """The replay rule, written plainly: item ids by first appearance in the file, sessions by
    first click, each session's clicks in file order."""
    item_ids: dict[str, int] = {}
    for _, item, _ in clicks:
        item_ids.setdefault(item, len(item_ids) + 1)
    sessions: dict[str, list[int]] = {}
    for session, item, _ in clicks:
        sessions.setdefault(session, []).append(item_ids[item])
    return list(sessions.values())


def sessions_of(batches: list[SessionBatch]) -> list[list[int]]:
    return [batch.session(i).tolist() for batch in batches for i in range(len(batch))]
