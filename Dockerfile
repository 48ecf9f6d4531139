# workflow-server: one process serving the main listener (:8080) and the admin listener (:8081).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY plugins ./plugins
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
# uid/gid 10001: a fixed, numeric non-root user, so volume ownership (compose, Kubernetes fsGroup) can name it.
RUN groupadd --gid 10001 workflow && useradd --no-log-init --create-home --uid 10001 --gid 10001 workflow
COPY --from=build /install /usr/local
WORKDIR /app
COPY --chown=10001:10001 example ./example
# The components folder is the hot-reloaded one: the server writes there (admin API, restores from the store).
COPY --chown=10001:10001 components ./components
RUN mkdir -p /app/data && chown 10001:10001 /app/data
USER 10001:10001
# The admin listener's default is 127.0.0.1:8081; in a container it must bind every interface to be published.
ENV WORKFLOW_ADDR=:8080 \
    WORKFLOW_ADMIN_ADDR=:8081 \
    WORKFLOW_COMPONENTS_DIR=/app/components \
    WORKFLOW_DATA_DIR=/app/data \
    WORKFLOW_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"]
ENTRYPOINT ["workflow-server"]
CMD ["-config", "/app/example/order-processing-pipeline.yaml"]
