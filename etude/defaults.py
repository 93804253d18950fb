"""Every default of Etude in one place: services, experiments and the load generator read them here."""

from __future__ import annotations

# Ports of `etude serve <service>` (design.md).
WORKLOAD_PORT = 50051
INFERENCE_PORT = 50052
LOADGEN_PORT = 50053
CONTROLLER_PORT = 50054

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
# A batch measured to take less runs on the event loop: handing it to a model thread and back
# (a queue, a wake-up, the GIL twice) costs about this much in CPython.
INLINE_BATCH_BELOW_US = 100.0

# Load profile.
REQUEST_TIMEOUT_MS = 1000
SESSIONS_PER_BATCH = 1024

# Experiment.
EMBEDDING_POLICY = "fourth_root"
RUNTIME = "eager"
HARDWARE_NAME = "cpu"
DEVICE = "cpu"
RESULTS = "results"
TARGET = "local"
# "p90 <= 50 ms" (the production requirement in the ETUDE paper); the rate defaults to the load's.
SLO_PERCENTILE = 90.0
SLO_LATENCY_MS = 50.0
