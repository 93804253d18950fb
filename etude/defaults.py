"""Every default of Etude in one place: services, experiments and the load generator read them here."""

from __future__ import annotations

# Ports of `etude serve <service>` (design.md).
WORKLOAD_PORT = 50051
INFERENCE_PORT = 50052
LOADGEN_PORT = 50053
CONTROLLER_PORT = 50054
SHARD_PORT = 50055

# Sessions: the most recent clicks a model reads (RecBole's and ETUDE's default).
MAX_SESSION_LENGTH = 50
# Longest session a request may carry; longer ones are refused rather than silently truncated.
MAX_REQUEST_ITEMS = 1000
# Items per recommendation (the ETUDE paper used 21).
TOP_K = 21

# Dynamic batching (the ETUDE paper's GPU settings).
MAX_BATCH_SIZE = 1024
MAX_BATCH_DELAY_MS = 2.0
QUEUE_SIZE_PER_BATCH = 4  # max_queue_size = 4 x max_batch_size unless given
# Bytes the waiting requests may hold together (their serialised size): the count bound alone
# lets requests of the largest allowed size hold far more memory than typical ones.
MAX_QUEUE_BYTES = 64 * 1024 * 1024
# A batch measured to take less runs on the event loop: handing it to a model thread and back
# (a queue, a wake-up, the GIL twice) costs about this much in CPython.
INLINE_BATCH_BELOW_US = 100.0

# Workload service: item popularity tables kept for repeated workloads.
POPULARITY_CACHE_SIZE = 2
# Replayed click logs whose index the workload service keeps (one per log, columns and version).
REPLAY_CACHE_SIZE = 2
# Session batches a load generator reads ahead of its sends from the workload service.
WORKLOAD_PREFETCH_BATCHES = 4

# Service processes: drain time on SIGTERM (`etude serve --grace-s`; the controller gives a child
# service this long to stop before it kills it), and how long a run waits for its target.
GRACE_S = 5.0
CONNECT_TIMEOUT_S = 10.0

# Load profile.
REQUEST_TIMEOUT_MS = 1000
SESSIONS_PER_BATCH = 1024
# How the load generator sends requests: "h2" (a unary Recommend call each, from the load
# generator's own HTTP/2 client: half grpcio's CPU per call), "unary" (the same through grpcio)
# or "stream".
LOADGEN_TRANSPORT = "h2"
# Share of one core above which a load generator counts as perturbing what it measures
# (LoadGenFootprint.over_core_budget; the report warns about such runs).
LOADGEN_CORE_BUDGET = 0.5
# CPU a load generator spends per request, measured by benchmarks/bench_loadgen.py (2,000 req/s:
# unary 288-299 us, stream 251-317, h2 with its timed transport 78-115 (146 when written from the
# event loop: TLS, or no C compiler at install), on the 2-core development machine,
# docs/results/bench-loadgen.txt): what `loadgen_instances: 0` (auto) sizes the load generators
# with before a trial has measured its own.
LOADGEN_CPU_US_PER_REQUEST = {"unary": 290.0, "stream": 250.0, "h2": 120.0}

# Experiment.
WORKLOAD_SOURCE = "synthetic"
# How long a deployed service (a child process, a pod pulling its image) may take to serve.
STARTUP_TIMEOUT_S = 300.0
EMBEDDING_POLICY = "fourth_root"
RUNTIME = "eager"
# Scoring precision when a spec names none (an axis next to runtimes).
PRECISION = "fp32"
HARDWARE_NAME = "cpu"
DEVICE = "cpu"
RESULTS = "results"
TARGET = "local"
# "p90 <= 50 ms" (the production requirement in the ETUDE paper); the rate defaults to the load's.
SLO_PERCENTILE = 90.0
SLO_LATENCY_MS = 50.0
# An SLO search (ExperimentSpec.search): stop within 5% of the capacity, after 10 probes at most;
# the highest rate probed is 64 x the start unless given.
SEARCH_PRECISION = 0.05
SEARCH_MAX_PROBES = 10
SEARCH_CEILING_FACTOR = 64
# Experiments per page of ControllerService.ListExperiments unless asked.
LIST_PAGE_SIZE = 50
