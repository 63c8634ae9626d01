# psabill in a container, for the CronJob `psabill schedule export --format kubernetes` writes.
#   docker build -t registry.example/psabill:0.1.0 .
# The image runs as uid 10001 (numeric, so Kubernetes can check runAsNonRoot), has a read-only
# root in the CronJob, and takes its config, secrets and state from the mounts docs/kubernetes.md lists.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY templates ./templates
RUN python -m venv /opt/psabill \
    && /opt/psabill/bin/pip install --no-cache-dir --disable-pip-version-check ".[postgres]"

FROM python:3.12-slim
COPY --from=build /opt/psabill /opt/psabill
RUN groupadd --gid 10001 psabill \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin psabill
ENV PATH=/opt/psabill/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["psabill"]
CMD ["--help"]
