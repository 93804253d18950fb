"""Synthetic click sessions: Algorithm 1 of the ETUDE paper, vectorised with numpy.

No gRPC here: the servicer in server.py streams what this module generates, and the loadgen can
use it in-process. Over 500 lines because the two parameterisations, their validation, the
sampler and the exponent fit are one model of the same distributions, best read together.

Power law means, by default, the classic continuous Pareto density p(y) = (alpha - 1) * y^-alpha
on y >= 1 (alpha > 1), discretised by floor: a drawn value is floor(y), so
P(X >= k) = k^(1 - alpha) for every integer k >= 1. Draws are capped (session lengths at
`max_session_length`, click counts at MAX_CLICK_COUNT): a longer draw becomes the cap, so the cap
value carries P(X >= cap). `fit_power_law_exponent` is the maximum-likelihood estimate for
exactly this model. The other parameterisation is the one the original ETUDE code fitted to real
logs, `scipy.stats.powerlaw(a, loc, scale)` (ScipyPowerLaw below; presets in PRESETS).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from etude import defaults
from etude.v1 import workload_pb2

DEFAULT_MAX_SESSION_LENGTH = defaults.MAX_SESSION_LENGTH
DEFAULT_SESSIONS_PER_BATCH = defaults.SESSIONS_PER_BATCH
# Item ids are stored as int32 in the popularity table (half the memory and cache misses of
# int64); 10 million items take 40 MB there, and about 30 bytes per item while it is built.
MAX_CATALOG_SIZE = 2**31 - 1
# Largest click count float64 holds exactly; a larger (or infinite, for alpha near 1) Pareto
# draw becomes this. For alpha_clicks >= 2 no draw of a 10-million-item catalog gets near it.
MAX_CLICK_COUNT = 2**53
# Worst-case clicks in one batch (sessions_per_batch x max_session_length): bounds the memory of
# a batch and keeps its SessionBatch message (<= 5 bytes per id) far below the 64 MiB gRPC limit.
MAX_CLICKS_PER_BATCH = 2**22

# Independent random streams derived from the seed: session lengths do not depend on the catalog,
# and each stream is consumed in batch-size-independent order (see SessionGenerator).
_POPULARITY_STREAM, _LENGTH_STREAM, _ITEM_STREAM = 0, 1, 2


class InvalidWorkloadSpec(ValueError):
    """A workload parameter out of its range; `field` is its path in the WorkloadSpec proto."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _rng(seed: int, stream: int, partition: int = 0) -> np.random.Generator:
    # Partition 0 keeps the original spawn key, so its sessions do not change with partitions.
    key = (stream,) if partition == 0 else (stream, partition)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _require_exponent(field: str, alpha: float) -> None:
    if not (isinstance(alpha, numbers.Real) and math.isfinite(alpha) and alpha > 1):
        raise InvalidWorkloadSpec(field, f"{field} must be a finite number > 1, got {alpha!r}")


def _require_int(field: str, value: int, low: int, high: int | None, note: str = "") -> None:
    # numbers.Integral: numpy integers are as good as ints; bools are not counts.
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not (is_int and low <= value and (high is None or value <= high)):
        allowed = f">= {low:,}" if high is None else f"in {low:,}..{high:,}"
        message = f"{field} must be an integer {allowed}{note}, got {value!r}"
        raise InvalidWorkloadSpec(field, message)


@dataclass(frozen=True)
class ScipyPowerLaw:
    """`scipy.stats.powerlaw(a, loc, scale)`: density a * z^(a - 1) / scale for
    z = (x - loc) / scale in [0, 1], discretised by floor and kept >= 1 (a draw below 1, possible
    when loc < 1, becomes 1). The original ETUDE code fitted this to real click logs."""

    a: float
    loc: float
    scale: float

    def validate(self, field: str) -> None:
        def finite(value: object) -> bool:
            return isinstance(value, numbers.Real) and math.isfinite(float(value))

        for name in ("a", "scale"):
            value = getattr(self, name)
            if not (finite(value) and float(value) > 0):
                raise InvalidWorkloadSpec(
                    f"{field}.{name}", f"{field}.{name} must be a finite number > 0, got {value!r}"
                )
        if not (finite(self.loc) and self.loc + self.scale >= 1):
            raise InvalidWorkloadSpec(
                f"{field}.loc", f"{field}.loc must be finite with loc + scale >= 1, got loc {self.loc!r}"
            )

    def draw(self, rng: np.random.Generator, size: int, cap: int, dtype: type = np.int64) -> np.ndarray:
        """Inverse transform: x = loc + scale * u^(1/a), floored, then clamped to 1..cap."""
        value = rng.random(size)
        np.power(value, 1.0 / self.a, out=value)
        value *= self.scale
        value += self.loc
        np.floor(value, out=value)
        np.clip(value, 1, cap, out=value)
        return value.astype(dtype)


# scipy.stats.powerlaw fits of real click logs (shared/anchors.md): (session lengths, click counts).
PRESETS: dict[str, tuple[ScipyPowerLaw, ScipyPowerLaw]] = {
    "bolcom": (ScipyPowerLaw(0.07004, 2, 277), ScipyPowerLaw(0.04069, 1, 2335)),
    "rsc15": (ScipyPowerLaw(0.10325, 1, 199), ScipyPowerLaw(0.07981, 1, 147418)),
}


@dataclass(frozen=True)
class SyntheticWorkload:
    """What to generate: catalog size, the two distributions, the seed and the longest session.

    Each distribution is given either as a classic exponent (alpha_length, alpha_clicks) or as
    a scipy.stats.powerlaw fit (length_fit, clicks_fit): exactly one of the two per quantity.
    """

    catalog_size: int
    alpha_length: float | None = None
    alpha_clicks: float | None = None
    seed: int = 0
    max_session_length: int = DEFAULT_MAX_SESSION_LENGTH
    length_fit: ScipyPowerLaw | None = None
    clicks_fit: ScipyPowerLaw | None = None
    # Independent session streams over one catalog and popularity (see WorkloadSpec).
    session_partition: int = 0

    def __post_init__(self) -> None:
        _require_int("catalog_size", self.catalog_size, 1, MAX_CATALOG_SIZE)
        for quantity, alpha, fit in (
            ("length", self.alpha_length, self.length_fit),
            ("clicks", self.alpha_clicks, self.clicks_fit),
        ):
            fit_field = (
                "powerlaw_fits.session_lengths" if quantity == "length" else "powerlaw_fits.click_counts"
            )
            if (alpha is None) == (fit is None):
                raise InvalidWorkloadSpec(
                    f"exponents.alpha_{quantity}",
                    f"give exactly one of exponents.alpha_{quantity} and {fit_field}",
                )
            if fit is not None:
                fit.validate(fit_field)
            else:
                _require_exponent(f"exponents.alpha_{quantity}", alpha)  # type: ignore[arg-type]
        _require_int("seed", self.seed, 0, 2**64 - 1)
        _require_int("session_partition", self.session_partition, 0, 2**32 - 1)
        _require_int(
            "max_session_length",
            self.max_session_length,
            1,
            MAX_CLICKS_PER_BATCH,
            " (0 in the proto means 50)",
        )

    @property
    def max_sessions_per_batch(self) -> int:
        """Most sessions one batch may hold: MAX_CLICKS_PER_BATCH // max_session_length."""
        return MAX_CLICKS_PER_BATCH // self.max_session_length

    def draw_session_lengths(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.length_fit is not None:
            return self.length_fit.draw(rng, size, self.max_session_length, np.int32)
        return draw_power_law(rng, size, self.alpha_length, self.max_session_length, np.int32)  # type: ignore[arg-type]

    def draw_click_counts(self, rng: np.random.Generator) -> np.ndarray:
        if self.clicks_fit is not None:
            return self.clicks_fit.draw(rng, self.catalog_size, MAX_CLICK_COUNT)
        return draw_power_law(rng, self.catalog_size, self.alpha_clicks, MAX_CLICK_COUNT)  # type: ignore[arg-type]

    def describe(self) -> str:
        """Which parameterisation, in words (reports say which one they used)."""
        if self.length_fit is not None and self.clicks_fit is not None:
            return (
                f"scipy.stats.powerlaw fits: session lengths {self.length_fit},"
                f" click counts {self.clicks_fit}"
            )
        return f"power-law exponents: alpha_length {self.alpha_length}, alpha_clicks {self.alpha_clicks}"

    @classmethod
    def from_proto(cls, spec: workload_pb2.WorkloadSpec) -> SyntheticWorkload:
        """The workload a WorkloadSpec describes, with the proto's defaults applied."""
        max_session_length = spec.max_session_length
        if max_session_length == 0:
            max_session_length = DEFAULT_MAX_SESSION_LENGTH
        if spec.HasField("powerlaw_fits"):
            fits = spec.powerlaw_fits
            return cls(
                catalog_size=spec.catalog_size,
                seed=spec.seed,
                session_partition=spec.session_partition,
                max_session_length=max_session_length,
                length_fit=ScipyPowerLaw(
                    fits.session_lengths.a, fits.session_lengths.loc, fits.session_lengths.scale
                ),
                clicks_fit=ScipyPowerLaw(fits.click_counts.a, fits.click_counts.loc, fits.click_counts.scale),
            )
        return cls(
            catalog_size=spec.catalog_size,
            alpha_length=spec.exponents.alpha_length,
            alpha_clicks=spec.exponents.alpha_clicks,
            seed=spec.seed,
            session_partition=spec.session_partition,
            max_session_length=max_session_length,
        )


@dataclass(frozen=True)
class StreamRequest:
    """A whole StreamSessions call: the workload and how to deliver it (None: no end)."""

    workload: SyntheticWorkload
    sessions_per_batch: int = DEFAULT_SESSIONS_PER_BATCH
    total_clicks: int | None = None

    def __post_init__(self) -> None:
        _require_sessions_per_batch(self.workload, self.sessions_per_batch)
        if self.total_clicks is not None:
            note = " (0 in the proto streams until cancelled)"
            _require_int("total_clicks", self.total_clicks, 0, None, note)

    @classmethod
    def from_proto(cls, spec: workload_pb2.WorkloadSpec) -> StreamRequest:
        """Validates a WorkloadSpec and applies its defaults; raises InvalidWorkloadSpec."""
        return cls(
            workload=SyntheticWorkload.from_proto(spec),
            sessions_per_batch=spec.sessions_per_batch or DEFAULT_SESSIONS_PER_BATCH,
            total_clicks=spec.total_clicks or None,
        )


def _require_sessions_per_batch(workload: SyntheticWorkload, sessions_per_batch: int) -> None:
    _require_int(
        "sessions_per_batch",
        sessions_per_batch,
        1,
        workload.max_sessions_per_batch,
        f" (at most {MAX_CLICKS_PER_BATCH:,} clicks per batch at max_session_length "
        f"{workload.max_session_length}; 0 in the proto means {DEFAULT_SESSIONS_PER_BATCH:,})",
    )


def draw_power_law(
    rng: np.random.Generator, size: int, alpha: float, cap: int, dtype: type = np.int64
) -> np.ndarray:
    """`size` draws of floor(Pareto(alpha)) on 1..cap; a draw above `cap` becomes `cap`.

    Inverse transform: y = (1 - u)^(-1/(alpha - 1)) = exp(E / (alpha - 1)) with E = -ln(1 - u)
    a standard exponential, so the exponential is drawn directly (numpy's ziggurat, no log).
    """
    log_value = rng.standard_exponential(size)
    log_value /= alpha - 1
    # Clamping the exponent keeps exp finite for alpha near 1; anything at or above the cap is
    # then clamped to exactly the cap.
    np.minimum(log_value, math.log(cap) + 1.0, out=log_value)
    value = np.exp(log_value, out=log_value)
    np.floor(value, out=value)
    np.minimum(value, cap, out=value)
    return value.astype(dtype)


def item_click_counts(workload: SyntheticWorkload) -> np.ndarray:
    """The click count of each item 1..C (index i: item i + 1) that `workload` samples from."""
    return workload.draw_click_counts(_rng(workload.seed, _POPULARITY_STREAM))


class ItemPopularity:
    """Click counts of items 1..C, sampled from by exact inverse transform of their empirical CDF.

    The CDF is laid out with items in ascending order of click count, so items with equal counts
    form one group of equal-width steps. A point m of the click mass [0, S) (S: total clicks)
    falls in a group found by binary search over the distinct counts (thousands for alpha >= 1.5
    at 10 million items, so the table stays in cache), and the item inside the group is
    floor((m - start) / v) for a group of count v. Each item i covers exactly counts[i] units of
    mass, so items_at(u * S) for a uniform u follows exactly the empirical distribution
    counts / S, up to the 2^-53 resolution of a float64 uniform (and, once S exceeds 2^53, step
    edges rounded to float64), at one cache miss per click instead of a binary search through
    millions of entries.
    """

    def __init__(self, click_counts: np.ndarray) -> None:
        """`click_counts[i]` is the count of item i + 1; integers >= 0, not all zero."""
        counts = np.asarray(click_counts)
        if counts.ndim != 1 or counts.size == 0 or counts.size > MAX_CATALOG_SIZE:
            raise ValueError(f"click_counts must be a 1-D array of 1..{MAX_CATALOG_SIZE:,} counts")
        if not np.issubdtype(counts.dtype, np.integer):
            if not (np.all(np.isfinite(counts)) and np.all(counts == np.floor(counts))):
                raise ValueError("click_counts must be whole numbers")
        if counts.min() < 0 or counts.max() > MAX_CLICK_COUNT:
            raise ValueError(f"click_counts must be in 0..{MAX_CLICK_COUNT:,}")
        if counts.max() == 0:
            raise ValueError("click_counts must not be all zero")
        self.catalog_size = int(counts.size)
        # Stable sort: the same counts give the same table on every machine and numpy build.
        order = np.argsort(counts, kind="stable")
        sorted_counts = counts[order]
        first_clicked = int(np.searchsorted(sorted_counts, 1))
        sorted_counts = sorted_counts[first_clicked:]
        self._item_by_position = np.add(
            order[first_clicked:], 1, out=np.empty(sorted_counts.size, np.int32), casting="unsafe"
        )
        del order
        # Fresh pages are what a 10-million-item build mostly waits for: few, small temporaries.
        group_first = np.flatnonzero(sorted_counts[1:] != sorted_counts[:-1]) + 1
        group_first = np.concatenate(([0], group_first))
        group_size = np.diff(group_first, append=sorted_counts.size)
        group_count = sorted_counts[group_first].astype(np.float64)
        group_end = np.cumsum(group_count * group_size)
        # start[g] is the very float end[g - 1], so searchsorted and the offset below agree.
        group_start = np.concatenate(([0.0], group_end[:-1]))
        self._group_end = group_end
        self.total_click_mass = float(group_end[-1])
        # One row per group, gathered with a single fancy index on the hot path.
        self._group_table = np.column_stack(
            (group_start, group_count, group_first, group_first + group_size - 1)
        )

    @classmethod
    def for_workload(cls, workload: SyntheticWorkload) -> ItemPopularity:
        """Line 7 of Algorithm 1: C i.i.d. click counts floor(Pareto(alpha_clicks)), capped."""
        return cls(item_click_counts(workload))

    @property
    def num_distinct_counts(self) -> int:
        """Size of the table searched per click (distinct non-zero click counts)."""
        return int(self._group_end.size)

    @property
    def click_counts(self) -> np.ndarray:
        """int64 [C]: the click count of item i + 1 at index i (rebuilt on each call)."""
        counts = np.zeros(self.catalog_size, dtype=np.int64)
        group_size = (self._group_table[:, 3] - self._group_table[:, 2] + 1).astype(np.int64)
        counts[self._item_by_position - 1] = np.repeat(self._group_table[:, 1].astype(np.int64), group_size)
        return counts

    def items_at(self, click_mass: np.ndarray) -> np.ndarray:
        """int64 item ids at points of [0, total_click_mass): the inverse of the empirical CDF."""
        group = np.searchsorted(self._group_end, click_mass, side="right")
        # u * S can round up to S itself.
        np.minimum(group, self._group_end.size - 1, out=group)
        row = self._group_table[group]
        offset = click_mass - row[:, 0]
        offset /= row[:, 1]
        offset += row[:, 2]
        # Rounding of the division must not step into the next group.
        np.minimum(offset, row[:, 3], out=offset)
        return self._item_by_position[offset.astype(np.intp)].astype(np.int64)

    def sample(self, rng: np.random.Generator, num_clicks: int) -> np.ndarray:
        """`num_clicks` i.i.d. item ids, item i drawn with probability counts[i - 1] / S."""
        click_mass = rng.random(num_clicks)
        click_mass *= self.total_click_mass
        return self.items_at(click_mass)


@dataclass(frozen=True, eq=False)
class SessionBatch:
    """Consecutive sessions, columnar: session i has lengths[i] clicks, stored in item_ids."""

    first_session_id: int
    lengths: np.ndarray  # int32 [num_sessions]
    item_ids: np.ndarray  # int64 [sum(lengths)]
    # A replay with timestamps: float64 [sum(lengths)], seconds from the log's earliest click.
    click_offsets_s: np.ndarray | None = None
    # Session ids are first_session_id, + step, + 2 step, ... (a replay part takes every n-th).
    session_id_step: int = 1

    def __post_init__(self) -> None:
        if self.lengths.ndim != 1 or self.item_ids.ndim != 1:
            raise ValueError("lengths and item_ids must be 1-D arrays")
        if self.click_offsets_s is not None and self.click_offsets_s.shape != self.item_ids.shape:
            raise ValueError(f"{self.click_offsets_s.size} click offsets for {self.item_ids.size} item ids")
        if self.session_id_step < 1:
            raise ValueError(f"session_id_step must be >= 1, got {self.session_id_step}")
        if self.lengths.size and self.lengths.min() < 1:
            raise ValueError("session lengths must be >= 1")
        if int(self.lengths.sum()) != self.item_ids.size:
            raise ValueError(
                f"session lengths sum to {int(self.lengths.sum())} but there are "
                f"{self.item_ids.size} item ids"
            )

    def __len__(self) -> int:
        return int(self.lengths.size)

    @property
    def num_clicks(self) -> int:
        return int(self.item_ids.size)

    @cached_property
    def offsets(self) -> np.ndarray:
        """int64 [num_sessions + 1]: session i is item_ids[offsets[i]:offsets[i + 1]]."""
        offsets = np.zeros(self.lengths.size + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        return offsets

    @property
    def session_ids(self) -> np.ndarray:
        """int64 [num_sessions]: the ids of the sessions, session_id_step apart."""
        step = self.session_id_step
        stop = self.first_session_id + len(self) * step
        return np.arange(self.first_session_id, stop, step, dtype=np.int64)

    def session(self, index: int) -> np.ndarray:
        """The clicks (item ids, oldest first) of the index-th session of this batch (a view)."""
        if not 0 <= index < len(self):
            raise IndexError(f"session index {index} outside 0..{len(self) - 1}")
        return self.item_ids[self.offsets[index] : self.offsets[index + 1]]

    def truncated(self, num_clicks: int) -> SessionBatch:
        """The first `num_clicks` clicks: sessions past them dropped, the one cut shortened."""
        if num_clicks >= self.num_clicks:
            return self
        num_sessions = int(np.searchsorted(self.offsets, num_clicks, side="left"))
        lengths = self.lengths[:num_sessions].copy()
        if num_sessions:
            lengths[-1] -= self.offsets[num_sessions] - num_clicks
        offsets_s = None if self.click_offsets_s is None else self.click_offsets_s[:num_clicks]
        return SessionBatch(
            self.first_session_id, lengths, self.item_ids[:num_clicks], offsets_s, self.session_id_step
        )

    def to_proto(self) -> workload_pb2.SessionBatch:
        # tolist() first: upb copies a list of ints faster than it iterates a numpy array.
        return workload_pb2.SessionBatch(
            first_session_id=self.first_session_id,
            session_lengths=self.lengths.tolist(),
            item_ids=self.item_ids.tolist(),
            click_offsets_s=None if self.click_offsets_s is None else self.click_offsets_s.tolist(),
            session_id_step=0 if self.session_id_step == 1 else self.session_id_step,
        )

    @classmethod
    def from_proto(cls, message: workload_pb2.SessionBatch) -> SessionBatch:
        """Raises ValueError when the lengths do not add up to the number of item ids, or the
        click offsets (when there are any) do not match them."""
        offsets_s = message.click_offsets_s
        return cls(
            first_session_id=message.first_session_id,
            lengths=np.array(message.session_lengths, dtype=np.int32),
            item_ids=np.array(message.item_ids, dtype=np.int64),
            click_offsets_s=np.array(offsets_s, dtype=np.float64) if len(offsets_s) else None,
            session_id_step=message.session_id_step or 1,
        )


class SessionGenerator:
    """Generates a workload's sessions batch by batch, forever or up to a number of clicks.

    Session lengths and item ids come from two independent random streams, each consumed in
    stream order whatever the batch sizes, so the concatenated sessions are the same for any
    split into batches; sessions are numbered consecutively from 1.
    """

    def __init__(self, workload: SyntheticWorkload, popularity: ItemPopularity | None = None) -> None:
        """`popularity` lets callers share one table (ItemPopularity.for_workload(workload), or
        a real log's click counts); building it for 10 million items takes a second or two."""
        if popularity is None:
            popularity = ItemPopularity.for_workload(workload)
        elif popularity.catalog_size != workload.catalog_size:
            raise ValueError(
                f"popularity covers {popularity.catalog_size} items, the workload {workload.catalog_size}"
            )
        self.workload = workload
        self.popularity = popularity
        self._length_rng = _rng(workload.seed, _LENGTH_STREAM, workload.session_partition)
        self._item_rng = _rng(workload.seed, _ITEM_STREAM, workload.session_partition)
        self.next_session_id = 1

    def next_batch(self, num_sessions: int) -> SessionBatch:
        """The next `num_sessions` sessions (0..workload.max_sessions_per_batch)."""
        if num_sessions != 0:
            _require_sessions_per_batch(self.workload, num_sessions)
        lengths = self.workload.draw_session_lengths(self._length_rng, num_sessions)
        item_ids = self.popularity.sample(self._item_rng, int(lengths.sum()))
        batch = SessionBatch(self.next_session_id, lengths, item_ids)
        self.next_session_id += num_sessions
        return batch

    def batches(
        self,
        sessions_per_batch: int = DEFAULT_SESSIONS_PER_BATCH,
        total_clicks: int | None = None,
    ) -> Iterator[SessionBatch]:
        """Batches of `sessions_per_batch` sessions, forever (None) or until `total_clicks`.

        With a total, exactly `total_clicks` clicks come out: they are the first clicks of the
        endless stream, so the last batch is cut and its last session may be shortened.
        Validates at once (raises InvalidWorkloadSpec), not at the first batch.
        """
        _require_sessions_per_batch(self.workload, sessions_per_batch)
        if total_clicks is not None:
            _require_int("total_clicks", total_clicks, 0, None)
        return self._batches(sessions_per_batch, total_clicks)

    def _batches(self, sessions_per_batch: int, total_clicks: int | None) -> Iterator[SessionBatch]:
        remaining = total_clicks
        while remaining is None or remaining > 0:
            batch = self.next_batch(sessions_per_batch)
            if remaining is not None:
                batch = batch.truncated(remaining)
                remaining -= batch.num_clicks
            yield batch


def fit_power_law_exponent(values: np.ndarray, x_min: int = 1, x_max: int | None = None) -> float:
    """Maximum-likelihood alpha of floor(Pareto(alpha)) for integer `values`.

    Fits the tail values >= x_min (Clauset's convention); values equal to `x_max` are read as
    "at least x_max" (draws capped there), values above it are an error. The log-likelihood is
    concave in alpha, so its score is bisected to machine precision. Returns inf when every
    value equals x_min (no tail at all).
    """
    data = np.asarray(values)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("values must be a non-empty 1-D array")
    whole = np.all(np.isfinite(data)) and np.all(data == np.floor(data))
    if not np.issubdtype(data.dtype, np.integer) and not whole:
        raise ValueError("values must be whole numbers (the model is discretised by floor)")
    if not (isinstance(x_min, int | np.integer) and x_min >= 1):
        raise ValueError(f"x_min must be an integer >= 1, got {x_min!r}")
    tail = data[data >= x_min]
    if tail.size == 0:
        raise ValueError(f"no value is >= x_min = {x_min}")
    num_capped = 0
    log_cap_ratio = 0.0
    if x_max is not None:
        if x_max < x_min or tail.max() > x_max:
            raise ValueError(f"x_max = {x_max} must be >= x_min and >= every value")
        num_capped = int(np.count_nonzero(tail == x_max))
        tail = tail[tail < x_max]
        log_cap_ratio = math.log(x_max / x_min)
    value, count = np.unique(tail.astype(np.float64), return_counts=True)
    # P(X = k | X >= x_min) = (k^-b - (k+1)^-b) / x_min^-b with b = alpha - 1; per distinct k:
    # log-likelihood  n_k (log(1 - exp(-b c_k)) - b log(k / x_min)),  c_k = log(1 + 1/k).
    step = np.log1p(1.0 / value)
    log_ratio = np.log(value / x_min)
    fixed = float(np.dot(count, log_ratio)) + num_capped * log_cap_ratio
    if fixed == 0.0:
        return math.inf

    def score(beta: float) -> float:  # derivative of the log-likelihood in b; decreasing
        return float(np.dot(count, step / np.expm1(beta * step))) - fixed

    low, high = math.log(1e-12), math.log(1e6)
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if score(math.exp(middle)) > 0:
            low = middle
        else:
            high = middle
    return 1.0 + math.exp(0.5 * (low + high))
