# The InfraMind image: the operator (`inframind operator`) and the gateways it
# deploys (`inframind gateway`). Only the base dependencies are installed; the
# serve, train and bench extras (vLLM, torch, ray, matplotlib) never enter it.
# tests/integration/test_chart.py checks that from pyproject.toml.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/inframind
WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/inframind/bin/pip install . \
 && /opt/inframind/bin/python -c "import inframind.controller.cli, inframind.gateway.cli"

FROM python:3.11-slim
# A fixed numeric user so that runAsNonRoot can verify it without /etc/passwd
# lookups; the chart runs the pod as the same 65532.
RUN groupadd --system --gid 65532 inframind \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin inframind
COPY --from=build /opt/inframind /opt/inframind
ENV PATH=/opt/inframind/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
# 8080 gateway, 8081 operator liveness, 8082 operator metrics.
EXPOSE 8080 8081 8082
ENTRYPOINT ["inframind"]
CMD ["--help"]
