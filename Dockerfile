# Sol in two images (targets), both CPU by default:
#   runtime:    an inference server's image: applies plans, nothing more (no extras: no Ray, LangGraph,
#               metrics or web framework).  docker build --target runtime -t sol:runtime .
#   optimizer:  the search, `sol serve` and the report (the optimize extra).
#               docker build --target optimizer -t sol:optimizer .
# GPU: keep the base image's CUDA torch and add the GPU kernels, e.g.
#   docker build --target optimizer --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime \
#     --build-arg TORCH_SPEC= --build-arg EXTRAS=optimize,gpu -t sol:optimizer-gpu .
# Linted with hadolint (tests/examples/test_dockerfile.py); no Docker engine runs where Sol is developed.
ARG BASE=python:3.11-slim

FROM ${BASE} AS base
# torch is pinned here (the CPU wheel by default); an empty TORCH_SPEC keeps the base image's (CUDA) torch.
ARG TORCH_SPEC="torch==2.13.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1
# DL3013 cannot see through the variable: TORCH_SPEC is pinned ("torch==2.13.0") or empty.
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_SPEC" ]; then pip install --no-cache-dir "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu; fi \
 && useradd --create-home --uid 1000 sol
WORKDIR /opt/sol
COPY pyproject.toml README.md ./
COPY sol ./sol

# Apply plans only: `sol apply`, `sol generate`, `import sol; sol.apply_plan(pipe, plan)`.
FROM base AS runtime
RUN pip install --no-cache-dir /opt/sol
USER 1000
WORKDIR /home/sol
ENTRYPOINT ["sol"]
CMD ["--help"]

# The optimizer: `sol optimize`, `sol serve` (publish its port with an access token:
# `sol serve --host 0.0.0.0 --token ...`; it binds loopback otherwise), the report.
FROM base AS optimizer
ARG EXTRAS=optimize
RUN pip install --no-cache-dir "/opt/sol[${EXTRAS}]"
USER 1000
WORKDIR /home/sol
ENTRYPOINT ["sol"]
CMD ["--help"]
