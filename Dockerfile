# workflow-server: one process serving the main listener (:8080) and the admin listener (:8081).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY plugins ./plugins
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 workflow
COPY --from=build /install /usr/local
WORKDIR /app
COPY --chown=workflow example ./example
COPY --chown=workflow components ./components
RUN mkdir -p /app/data && chown workflow /app/data
USER workflow
ENV WORKFLOW_ADDR=:8080 \
    WORKFLOW_ADMIN_ADDR=:8081 \
    WORKFLOW_COMPONENTS_DIR=/app/components \
    WORKFLOW_DATA_DIR=/app/data \
    WORKFLOW_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"
ENTRYPOINT ["workflow-server"]
CMD ["-config", "/app/example/order-processing-pipeline.yaml"]
