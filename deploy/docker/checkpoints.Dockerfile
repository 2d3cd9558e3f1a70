# syntax=docker/dockerfile:1
# treadle-checkpoints: the only component that talks to object storage (minio client). No torch:
# the image holds the SDK, the runtime and the checkpoints service. The chart's bucket Job runs
# this image too.
#
#   docker build -f deploy/docker/checkpoints.Dockerfile -t treadle-checkpoints .   (repository root)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/treadle
ENV PATH=/opt/treadle/bin:$PATH
WORKDIR /src
COPY requirements-dev.txt ./
COPY sdk/python sdk/python
COPY services/runtime services/runtime
COPY services/checkpoints services/checkpoints
RUN pip install --constraint requirements-dev.txt \
      ./sdk/python ./services/runtime ./services/checkpoints

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/treadle/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TREADLE_CHECKPOINTS_HOST=0.0.0.0 TREADLE_CHECKPOINTS_PORT=8473 \
    TREADLE_CHECKPOINTS_METRICS_PORT=9400
RUN groupadd --system --gid 10001 treadle \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/treadle treadle
COPY --from=build /opt/treadle /opt/treadle
USER 10001:10001
WORKDIR /home/treadle
EXPOSE 8473 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD python -c "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; channel = grpc.insecure_channel('127.0.0.1:' + os.environ['TREADLE_CHECKPOINTS_PORT']); sys.exit(g.HealthStub(channel).Check(h.HealthCheckRequest(), timeout=4).status != h.HealthCheckResponse.SERVING)"
ENTRYPOINT ["treadle-checkpoints"]
