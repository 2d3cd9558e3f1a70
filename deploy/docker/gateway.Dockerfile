# syntax=docker/dockerfile:1
# treadle-gateway: the official tinker SDK's HTTP protocol in front of the scheduler. No torch:
# the image holds the SDK (with the generated protos), the runtime and the gateway only.
#
#   docker build -f deploy/docker/gateway.Dockerfile -t treadle-gateway .   (repository root)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/treadle
ENV PATH=/opt/treadle/bin:$PATH
WORKDIR /src
COPY requirements-dev.txt ./
COPY sdk/python sdk/python
COPY services/runtime services/runtime
COPY services/gateway services/gateway
RUN pip install --constraint requirements-dev.txt \
      ./sdk/python ./services/runtime ./services/gateway

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/treadle/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TREADLE_GATEWAY_HOST=0.0.0.0 TREADLE_GATEWAY_PORT=8480 TREADLE_GATEWAY_METRICS_PORT=9400
RUN groupadd --system --gid 10001 treadle \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/treadle treadle
COPY --from=build /opt/treadle /opt/treadle
USER 10001:10001
WORKDIR /home/treadle
EXPOSE 8480 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['TREADLE_GATEWAY_PORT'] + '/api/v1/healthz', timeout=4)"
ENTRYPOINT ["treadle-gateway"]
