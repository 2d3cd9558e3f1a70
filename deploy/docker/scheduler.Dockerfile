# syntax=docker/dockerfile:1
# treadle-scheduler: the public endpoint (auth, sessions, queues, clock cycles). No torch: the
# image holds the SDK (with the generated protos), the runtime and the scheduler only.
#
#   docker build -f deploy/docker/scheduler.Dockerfile -t treadle-scheduler .   (repository root)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/treadle
ENV PATH=/opt/treadle/bin:$PATH
WORKDIR /src
COPY requirements-dev.txt ./
COPY sdk/python sdk/python
COPY services/runtime services/runtime
COPY services/scheduler services/scheduler
RUN pip install --constraint requirements-dev.txt \
      ./sdk/python ./services/runtime ./services/scheduler

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/treadle/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TREADLE_SCHEDULER_HOST=0.0.0.0 TREADLE_SCHEDULER_PORT=8470 TREADLE_SCHEDULER_METRICS_PORT=9400
RUN groupadd --system --gid 10001 treadle \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/treadle treadle
COPY --from=build /opt/treadle /opt/treadle
USER 10001:10001
WORKDIR /home/treadle
EXPOSE 8470 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD python -c "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; channel = grpc.insecure_channel('127.0.0.1:' + os.environ['TREADLE_SCHEDULER_PORT']); sys.exit(g.HealthStub(channel).Check(h.HealthCheckRequest(), timeout=4).status != h.HealthCheckResponse.SERVING)"
ENTRYPOINT ["treadle-scheduler"]
