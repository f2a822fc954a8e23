# cachewarden sidecar image. The sidecar needs no PHP: everything that must run inside PHP is sent to
# the app's PHP-FPM over FastCGI.
#   docker build -t cachewarden .
#   docker run -v ./cachewarden.yaml:/etc/cachewarden/cachewarden.yaml:ro -p 9590:9590 cachewarden
# The HEALTHCHECK probes 127.0.0.1:$CACHEWARDEN_PORT (9590): a configuration or flag that listens on
# another port must come with the same port in that variable (docker run -e CACHEWARDEN_PORT=9100 …),
# and so must a build whose built-in configuration listens elsewhere (--build-arg CACHEWARDEN_PORT=9100).

# Builder: a wheel of cachewarden and a virtualenv holding it and its dependencies.
FROM python:3.11.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# The wheel is built from this checkout, its dependencies resolved from pyproject.toml's ranges.
RUN python -m venv /opt/cachewarden \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/cachewarden/bin/pip install --no-cache-dir /wheels/*.whl

# Runtime: the virtualenv only, run as an unprivileged user.
FROM python:3.11.11-slim-bookworm
ARG CACHEWARDEN_PORT=9590
LABEL org.opencontainers.image.title="cachewarden" \
      org.opencontainers.image.description="Prometheus exporter and healing sidecar for PHP/Laravel caches" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/cachewarden /opt/cachewarden
# The group is www-data (gid 33), as in Debian's and the official php-fpm images, so the sidecar can
# read the app's files and the shared FPM socket. An empty config (no targets) lets the image start before one is mounted.
RUN useradd --system --uid 10001 --gid www-data --home-dir /var/lib/cachewarden --create-home \
      --shell /usr/sbin/nologin cachewarden \
 && mkdir -p /etc/cachewarden \
 && printf 'listen_address: 0.0.0.0:%s\n' "$CACHEWARDEN_PORT" > /etc/cachewarden/cachewarden.yaml
# One port for the built-in configuration, EXPOSE and the HEALTHCHECK.
ENV PATH=/opt/cachewarden/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CACHEWARDEN_PORT=$CACHEWARDEN_PORT
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:33
WORKDIR /var/lib/cachewarden
EXPOSE $CACHEWARDEN_PORT
# With --web.config.file TLS the port speaks HTTPS: the check tries both. It asks only whether the
# process answers on loopback, so the certificate is not verified (and /healthz needs no password).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.request\nport = os.environ[\"CACHEWARDEN_PORT\"]\nfor url, ctx in ((f'http://127.0.0.1:{port}/healthz', None), (f'https://127.0.0.1:{port}/healthz', ssl._create_unverified_context())):\n    try:\n        sys.exit(urllib.request.urlopen(url, timeout=2, context=ctx).status != 200)\n    except OSError:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["cachewarden"]
# TLS and basic auth: add "--web.config.file", "/etc/cachewarden/web-config.yml" (examples/web-config.yml).
CMD ["serve", "--config.file", "/etc/cachewarden/cachewarden.yaml"]
