# workflowd: the daemon with its embedded local data plane.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/workflowd \
    && /opt/workflowd/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 workflowd \
    && useradd --system --uid 10001 --gid workflowd --home-dir /var/lib/workflowd --create-home workflowd
COPY --from=build /opt/workflowd /opt/workflowd
ENV PATH="/opt/workflowd/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    WORKFLOWD_DATA_DIR=/var/lib/workflowd \
    WORKFLOWD_HTTP_LISTEN=0.0.0.0:9464 \
    WORKFLOWD_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/workflowd
VOLUME ["/var/lib/workflowd"]
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status == 200 else 1)"]
# Binding beyond loopback needs authentication (docs/security.md); until tokens are configured the
# container serves unauthenticated on purpose, so put it behind a network you trust.
ENTRYPOINT ["workflowd", "serve"]
CMD ["--listen", "0.0.0.0:50051", "--insecure"]
