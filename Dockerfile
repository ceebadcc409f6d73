# Pulse service image: `pulse run` as a non-root user. Build: docker build -t pulse .
# Stage 1 builds a self-contained virtualenv from the hashed runtime lock file.
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements-runtime.lock ./
RUN python -m venv /opt/pulse && /opt/pulse/bin/pip install --require-hashes -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY operators ./operators
COPY schemas ./schemas
RUN /opt/pulse/bin/pip install --no-deps .

# Stage 2: only the virtualenv, no compilers, no sources, no pip cache.
FROM python:3.12-slim-bookworm
# A fixed numeric uid/gid (10001): USER by number needs no /etc/passwd lookup, Kubernetes can check
# runAsNonRoot against it, and deploy/k8s (runAsUser, fsGroup) names the same ids.
RUN groupadd --system --gid 10001 pulse \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pulse --create-home pulse
COPY --from=build /opt/pulse /opt/pulse
ENV PATH=/opt/pulse/bin:$PATH PYTHONUNBUFFERED=1 \
    PULSE_METRICS_HOST=0.0.0.0 PULSE_ENGINE_RECOVERY_DIR=/var/lib/pulse/recovery
USER 10001:10001
WORKDIR /var/lib/pulse
VOLUME ["/var/lib/pulse"]
EXPOSE 9464
ENTRYPOINT ["pulse", "run"]
