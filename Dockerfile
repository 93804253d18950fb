# Etude, CPU image: every service, the service chosen by the command
#   docker build -t etude:0.1.0 .   (the tag deploy/kustomize/components/images names)
#   docker run --rm -p 50052:50052 etude:0.1.0 serve inference --host 0.0.0.0 --model gru4rec --catalog-size 100000
# Multi-stage: the build stage installs into a virtual environment; the runtime stage copies only
# that environment (no compiler, no pip cache) and runs as a non-root user (uid 10001, the uid the
# manifests in deploy/kustomize require).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for the load generator's timed socket (services/loadgen/_timed_socket.c); the
# runtime stage copies the built extension, not the compiler.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/etude
ENV PATH=/opt/etude/bin:$PATH
# torch first, from the CPU wheel index (the default PyPI wheel carries CUDA libraries).
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY etude ./etude
COPY services ./services
# The kubernetes extra: the API client and kubectl (kustomize) for the controller's Kubernetes driver.
RUN pip install ".[kubernetes]"

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin etude
COPY --from=build /opt/etude /opt/etude
# The manifests the Kubernetes driver renders for each trial.
COPY deploy/kustomize /opt/etude/share/kustomize
ENV PATH=/opt/etude/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ETUDE_KUSTOMIZE_DIR=/opt/etude/share/kustomize \
    ETUDE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /home/etude
EXPOSE 50051 50052 50053 50054
ENTRYPOINT ["etude"]
CMD ["--help"]
