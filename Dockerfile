# failover-engine: one image for every instance (the engine in GCP, the engine in Azure, the witness).
# Built with BuildKit (Docker's default builder since 23.0; `RUN --mount` needs it).
#
# One build per place it runs, each with only the SDKs its config uses (check-config names a missing one).
# For the example configs (Cloudflare DNS; HTTP, TCP and PostgreSQL probes; the witness changes no DNS):
#   docker build --build-arg EXTRAS=cloudflare -t failover-engine:0.1.0-gcp .     # config/gcp.yaml
#   docker build --build-arg EXTRAS=cloudflare -t failover-engine:0.1.0-azure .   # config/azure.yaml
#   docker build -t failover-engine:0.1.0-witness .                               # config/witness.yaml
# A site whose config adds Cloud Monitoring probes adds "gcp" (EXTRAS=cloudflare,gcp); Azure Monitor
# metrics or logs probes add "azure".
# The default (EXTRAS empty) is the core: RFC 2136 DNS, HTTP/TCP/PostgreSQL probes, no cloud SDK. Add "otel"
# for OpenTelemetry traces of runbooks (exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set);
# "all" takes every cloud SDK.
#
#   docker run -d --name failover-engine -p 8080:8080 \
#     -v /etc/failover-engine/engine.yaml:/etc/failover-engine/engine.yaml:ro \
#     -v failover-journal:/var/lib/failover-engine \
#     -e FAILOVER_PEER_KEY_GCP_AZURE -e FAILOVER_PEER_KEY_GCP_WITNESS \
#     -e CLOUDFLARE_API_TOKEN -e PGPASSWORD -e SLACK_WEBHOOK_URL -e PAGER_WEBHOOK_URL \
#     failover-engine:0.1.0
#
# The journal (/var/lib/failover-engine) must outlive the container: a runbook interrupted by a crash
# or a restart resumes from it. Give it a named volume or a persistent disk, never the container layer.
#
# Base image: pinned by version and by digest (a tag can be re-pushed, a digest cannot). Both stages use
# the same base so the wheels built in the first run unchanged in the second. To move to a newer patch
# release, resolve the new digest (`docker buildx imagetools inspect python:3.11.X-slim-bookworm`) and
# change it here, or override it for one build with --build-arg PYTHON_IMAGE=...
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5
# Which optional dependencies to install (pyproject.toml): cloudflare, gcp, azure, otel, all, a comma-separated
# list of them, or nothing (the default: the core only). check-config names the extra a config needs when missing.
ARG EXTRAS=

# --- builder: the project's wheel and the wheels of everything it needs ------------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG EXTRAS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is made of: a change to tests, runbooks or bench does not rebuild the image.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY probes ./probes
COPY actions ./actions
# The direct reference keeps an empty EXTRAS valid (".[]" is not a requirement pip accepts).
RUN python -m pip wheel --wheel-dir /wheels "failover-engine[${EXTRAS}] @ file:///src"

# --- runtime: the installed wheel, a non-root user, nothing else ----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG EXTRAS
LABEL org.opencontainers.image.title="failover-engine" \
      org.opencontainers.image.description="Decides when a two-cloud service must fail over, does it, and proves it worked." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FAILOVER_ENGINE_HEALTH_URL=http://127.0.0.1:8080/healthz \
    FAILOVER_LISTEN=0.0.0.0:8080
# FAILOVER_LISTEN: the example configs listen on loopback unless told otherwise; in a container the peers
# must reach the port, so every interface, and the configs then require api tokens (FAILOVER_API_*_SHA256).

# Installed from the builder's wheels only (--no-index): this stage never reaches a package index, and the
# wheels are mounted for this one step, so they do not end up in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels "failover-engine[${EXTRAS}]" \
 && failover-engine --version

# A fixed numeric uid/gid (Kubernetes runAsNonRoot can check it) that owns only the journal directory (0700:
# the journal holds the audit log and operation evidence; the engine makes journal.db 0600).
RUN groupadd --system --gid 10001 failover \
 && useradd --system --uid 10001 --gid failover --no-create-home \
        --home-dir /var/lib/failover-engine --shell /usr/sbin/nologin failover \
 && mkdir -p /etc/failover-engine /var/lib/failover-engine \
 && chown failover:failover /var/lib/failover-engine \
 && chmod 0700 /var/lib/failover-engine
USER 10001:10001
# The working directory is the volume: a relative journal.path lands there too.
WORKDIR /var/lib/failover-engine

# The journal: SQLite in WAL mode (journal.db, -wal and -shm files); the example configs keep it here.
VOLUME ["/var/lib/failover-engine"]
# The API (instance.listen in the example configs): /healthz, /readyz, /metrics, /v1/..., peer verdicts.
EXPOSE 8080

# Liveness is "the decision loop is ticking" (/healthz: 200, or 503 when the loop stalled), not "the port
# answers". The image has no curl: the check is Python's urllib. It does not go through a proxy, and does
# not verify a certificate when instance.tls makes the API https (it only talks to itself); point
# FAILOVER_ENGINE_HEALTH_URL elsewhere when instance.listen uses another port or https.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.request as r; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; o = r.build_opener(r.ProxyHandler({}), r.HTTPSHandler(context=c)); sys.exit(0 if o.open(os.environ.get('FAILOVER_ENGINE_HEALTH_URL', 'http://127.0.0.1:8080/healthz'), timeout=4).status == 200 else 1)"]

# SIGTERM (docker stop) ends the engine within 5 s; a runbook in flight resumes from the journal at start.
STOPSIGNAL SIGTERM
ENTRYPOINT ["failover-engine"]
CMD ["run", "--config", "/etc/failover-engine/engine.yaml"]
