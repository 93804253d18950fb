"""Replay of a large click log: indexing and streaming rates, and peak memory against the log's size.

    python benchmarks/bench_replay.py [--clicks 10000000] [--csv PATH] [--keep]

Writes a click log (session id, item id, timestamp; sessions interleaved as concurrent visitors
make them, item ids as strings) unless --csv names one, then in a fresh child process (so the
writing does not count) indexes it and streams it: prints clicks/s of indexing, of streaming
the batches, of streaming them as SessionBatch messages, and of streaming part 0 of 4 (the
gather path several loadgens take), and the child's peak RSS beside the CSV's size.
"""

from __future__ import annotations

import os

# One BLAS / OpenMP thread: set before numpy loads those libraries.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def write_log(path: Path, num_clicks: int, seed: int = 0) -> None:
    """Sessions from the bol.com preset's length fit (capped at 200), each starting at a uniform
    time within a day with a click every 1..60 s; the log sorted by time, so sessions interleave."""
    from etude.services.workload.generator import PRESETS

    rng = np.random.default_rng(seed)
    length_fit, _ = PRESETS["bolcom"]
    lengths = length_fit.draw(rng, num_clicks, 200)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), num_clicks)) + 1]
    lengths[-1] -= int(lengths.sum()) - num_clicks
    sessions = np.repeat(np.arange(lengths.size), lengths)
    starts_s = rng.uniform(0, 86_400, lengths.size)
    gaps_s = rng.uniform(1, 60, num_clicks)
    # Each click's time: its session's start plus the gaps of the session's earlier clicks.
    within_s = np.cumsum(gaps_s)
    session_first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    within_s -= np.repeat(within_s[session_first] - gaps_s[session_first], lengths)
    times_s = 1_400_000_000 + np.repeat(starts_s, lengths) + within_s
    order = np.argsort(times_s, kind="stable")
    items = (rng.zipf(1.3, num_clicks) % 5_000_000)[order]
    sessions, times_s = sessions[order], times_s[order]
    chunk = 1_000_000
    with path.open("w") as out:
        out.write("session_id,item_id,timestamp\n")
        for start in range(0, num_clicks, chunk):
            stop = start + chunk
            columns = (sessions[start:stop], items[start:stop], times_s[start:stop])
            rows = zip(*(column.tolist() for column in columns), strict=True)
            out.write("".join(f"visit{s},sku{i},{t:.3f}\n" for s, i, t in rows))


def _memory_kb(name: str) -> int:
    """VmRSS or VmHWM (peak) of this process, in kB. Not ru_maxrss: Linux carries that over
    from the parent's memory across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {name}")


class AnonymousPeak:
    """Samples RssAnon every 5 ms in a thread: memory the process owns, apart from the pages of
    the index files it maps (those count in VmHWM but are page cache the kernel can drop)."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = _memory_kb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_kb = max(self.peak_kb, _memory_kb("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


def measure(csv_path: str) -> dict[str, float]:
    """Runs in the child: index, then stream; rates and the peak RSS (kB, Linux)."""
    from etude.services.workload.fit import ClickLogColumns
    from etude.services.workload.replay import ReplaySource, index_click_log

    baseline_kb = _memory_kb("VmRSS")
    baseline_anon_kb = _memory_kb("RssAnon")
    anonymous = AnonymousPeak()
    started, started_cpu = time.perf_counter(), time.process_time()
    index = index_click_log(ReplaySource(csv_path, ClickLogColumns("session_id", "item_id", "timestamp")))
    index_s, index_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    indexed_kb = _memory_kb("VmHWM")

    def rate(make_proto: bool, partition: int = 0, parts: int = 1) -> tuple[float, int]:
        clicks = 0
        begun = time.perf_counter()
        for batch in index.batches(1_024, partition=partition, partition_count=parts):
            if make_proto:
                batch.to_proto()
            clicks += batch.num_clicks
        return clicks / (time.perf_counter() - begun), clicks

    stream_rate, streamed = rate(False)
    proto_rate, _ = rate(True)
    part_rate, part_clicks = rate(False, 0, 4)
    index_files_bytes = sum(path.stat().st_size for path in index.folder.iterdir())
    peak_anon_kb = anonymous.stop()
    result = {
        "clicks": index.num_clicks,
        "sessions": index.num_sessions,
        "items": index.num_items,
        "index_s": index_s,
        "index_cpu_s": index_cpu_s,
        "index_clicks_per_s": index.num_clicks / index_s,
        "stream_clicks_per_s": stream_rate,
        "streamed_clicks": streamed,
        "proto_clicks_per_s": proto_rate,
        "part_clicks_per_s": part_rate,
        "part_clicks": part_clicks,
        "baseline_rss_kb": baseline_kb,
        "indexed_peak_rss_kb": indexed_kb,
        "peak_rss_kb": _memory_kb("VmHWM"),
        "baseline_anon_kb": baseline_anon_kb,
        "peak_anon_kb": peak_anon_kb,
        "index_files_bytes": index_files_bytes,
    }
    index.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--csv", help="an existing log (session_id,item_id,timestamp header) instead")
    parser.add_argument("--keep", action="store_true", help="keep the generated log (its path is printed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return

    folder = Path(tempfile.mkdtemp(prefix="etude-bench-replay-"))
    csv_path = Path(args.csv) if args.csv else folder / "clicks.csv"
    try:
        if not args.csv:
            started = time.perf_counter()
            write_log(csv_path, args.clicks)
            print(f"wrote {csv_path} ({args.clicks:,} clicks) in {time.perf_counter() - started:.1f} s")
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(csv_path)], capture_output=True, text=True, check=True
        )
        numbers = json.loads(child.stdout)
        csv_mb = csv_path.stat().st_size / 2**20
        print(f"{platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
        print(
            f"log: {csv_mb:,.0f} MiB CSV, {numbers['clicks']:,} clicks, "
            f"{numbers['sessions']:,} sessions, {numbers['items']:,} items"
        )
        print(
            f"indexing:        {numbers['index_clicks_per_s']:>12,.0f} clicks/s ({numbers['index_s']:.1f} s, "
            f"{numbers['index_cpu_s']:.1f} s of CPU; "
            f"index files {numbers['index_files_bytes'] / 2**20:,.0f} MiB)"
        )
        print(
            f"  per CPU second: {numbers['clicks'] / numbers['index_cpu_s']:>11,.0f} clicks/s "
            "(the machine's other work apart)"
        )
        for label, key, note in (
            ("streaming:      ", "stream_clicks_per_s", "SessionBatch arrays"),
            ("  as messages:  ", "proto_clicks_per_s", "to_proto: what the service sends"),
            ("  part 0 of 4:  ", "part_clicks_per_s", f"{numbers['part_clicks']:,} clicks"),
        ):
            print(f"{label} {numbers[key]:>12,.0f} clicks/s ({note})")
        baseline_mb = numbers["baseline_rss_kb"] / 1024
        peak_mb = numbers["peak_rss_kb"] / 1024
        print(
            f"peak RSS: {peak_mb:,.0f} MiB (after imports {baseline_mb:,.0f} MiB; while indexing "
            f"{numbers['indexed_peak_rss_kb'] / 1024:,.0f} MiB) = {peak_mb / csv_mb:.2f} x the CSV, "
            f"{(peak_mb - baseline_mb) / csv_mb:.2f} x above the imports"
        )
        anon_mb = (numbers["peak_anon_kb"] - numbers["baseline_anon_kb"]) / 1024
        print(
            f"peak anonymous memory above the imports (sampled every 5 ms): {anon_mb:,.0f} MiB = "
            f"{anon_mb / csv_mb:.2f} x the CSV, {anon_mb * 2**20 / numbers['clicks']:.1f} bytes per click"
        )
        if args.keep and not args.csv:
            print(f"kept {csv_path}")
    finally:
        if not args.keep:
            if not args.csv:
                csv_path.unlink(missing_ok=True)
            folder.rmdir() if not any(folder.iterdir()) else None


if __name__ == "__main__":
    main()
