# Sol for an inference server or an optimizer box.
#   CPU:  docker build -t sol .
#   GPU:  docker build --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime --build-arg TORCH_SPEC= --build-arg EXTRAS=optimize,gpu -t sol:gpu .
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_SPEC="torch==2.13.0"
ARG EXTRAS=optimize
WORKDIR /opt/sol
COPY pyproject.toml README.md ./
COPY sol ./sol
# An empty TORCH_SPEC keeps the base image's (CUDA) torch.
RUN if [ -n "$TORCH_SPEC" ]; then pip install --no-cache-dir "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu; fi \
 && pip install --no-cache-dir -e ".[${EXTRAS}]"
ENV HF_HUB_OFFLINE=1
ENTRYPOINT ["sol"]
CMD ["--help"]
