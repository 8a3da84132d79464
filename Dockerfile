# jdr image: the CLI, the CronJob entry point and the mover-pod agent (`jdr agent …`) in one image.
# Small (python:slim + wheels), non-root by default; mover pods that must restore file ownership ask for
# root with only the capabilities they need in their own securityContext (see cronjobs/README.md).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY dr ./dr
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c .ci/constraints.txt .

FROM python:3.11-slim
ARG UID=65532
RUN useradd --uid ${UID} --gid 100 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin jdr \
 && apt-get update && apt-get install -y --no-install-recommends zstd sqlite3 tar \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels jdr && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/jdr-cache
USER ${UID}:100
ENTRYPOINT ["jdr"]
CMD ["--help"]
