# jdr image: the CLI, the CronJob entry point and the mover-pod agent (`jdr agent …`) in one image.
# Small (python:slim + wheels), non-root by default. Mover pods run as the volume's owner (runAsUser from
# their own securityContext, e.g. 1000:100); only a volume of several owners gets a privileged mover, the
# documented exception (cronjobs/README.md). Every path jdr writes is /tmp (an emptyDir in the pods), so the
# root filesystem can stay read-only.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY dr ./dr
# the serve extra: `jdr serve` (cronjobs/serve/) runs on JupyterHub's service auth
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c .ci/constraints.txt '.[serve]'

FROM python:3.11-slim
ARG UID=65532
RUN useradd --uid ${UID} --gid 100 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin jdr \
 && apt-get update && apt-get install -y --no-install-recommends zstd sqlite3 tar \
      postgresql-client mariadb-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'jdr[serve]' && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/jdr-cache
USER ${UID}:100
ENTRYPOINT ["jdr"]
CMD ["--help"]
