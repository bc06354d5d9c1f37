# syntax=docker/dockerfile:1
# ftlcloud image: the batch job (`ftlcloud iterate ...`) AND the Dask scheduler/worker image that
# Dask-Gateway or the Dask Kubernetes operator start (`dask scheduler` / `dask worker`), so client,
# scheduler and workers always run the same dask, distributed and dask-gateway versions.
#
#   docker build -t ftlcloud:0.1.0 .
#
# Base image: an exact CPython patch tag on Debian bookworm, the same 3.11.7 interpreter the lock
# (requirements/lock.txt) was resolved and tested with. It is not digest-pinned because a digest
# cannot be resolved offline where this file is written and checked; a release pipeline should pin
# `python:3.11.7-slim-bookworm@sha256:...` (`docker buildx imagetools inspect`) before publishing.
# Both stages use the same base so the venv's absolute paths and its python symlink stay valid.

FROM python:3.11.7-slim-bookworm AS builder

WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY deploy/image/install.sh deploy/image/install.sh
COPY requirements/lock.txt requirements/lock.txt
RUN deploy/image/install.sh deps /opt/venv requirements/lock.txt

COPY pyproject.toml README.md ./
COPY ftlcloud ftlcloud
# The STAC collection templates ship inside the package as ftlcloud.catalogs (see pyproject).
COPY catalogs catalogs
RUN deploy/image/install.sh package /opt/venv /src


FROM python:3.11.7-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="ftlcloud" \
      org.opencontainers.image.description="Semi-automatic iterative freeze-thaw landslide identification (batch job and Dask scheduler/worker image)" \
      org.opencontainers.image.licenses="MIT"

# tini as PID 1: reaps zombies and forwards SIGTERM, so `kubectl delete`, Job deadlines and
# Dask-Gateway's scale-down stop dask workers cleanly. Rasterio's wheel bundles GDAL, PROJ and
# curl, so no system GDAL is installed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed non-root UID/GID; group 0 may write HOME too, for platforms that run arbitrary UIDs in
# the root group (OpenShift).
RUN groupadd --gid 1000 ftl \
    && useradd --uid 1000 --gid 1000 --groups 0 --create-home --home-dir /home/ftl --shell /usr/sbin/nologin ftl \
    && chmod g+rwX /home/ftl

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    # Logs reach `kubectl logs` at once, and no .pyc files are written into the read-only venv.
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # Dask runs one task per worker thread; BLAS/OpenMP pools inside each task would oversubscribe
    # the pod's CPU limit.
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    # Opening a COG on S3 must not LIST its "directory" to look for sidecars (.aux.xml, .ovr):
    # a LIST per open is slow and some S3 policies forbid it.
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR \
    # Only these suffixes may be fetched through /vsicurl/ and /vsis3/; GDAL then never probes
    # for sidecar files that do not exist (each probe is a round trip and a 404).
    CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif,.tiff,.TIF,.TIFF,.vrt,.json,.parquet" \
    # Keep recently read byte ranges in memory: the COG header and overviews are re-read by every
    # tile task that touches the same file. 4 MiB per open file, as ftlcloud's own GDAL env sets
    # (a larger cache per file, times the files GDAL keeps open, grew with the area read).
    VSI_CACHE=TRUE \
    VSI_CACHE_SIZE=4194304 \
    # Read the COG header (IFDs, tile offsets) in one 64 KiB request instead of several small ones.
    GDAL_INGESTED_BYTES_AT_OPEN=65536 \
    # HTTP/2 with multiplexing: parallel range requests of one worker share one connection.
    GDAL_HTTP_VERSION=2 \
    GDAL_HTTP_MULTIPLEX=YES \
    # Adjacent tiles of a window become one range request.
    GDAL_HTTP_MERGE_CONSECUTIVE_RANGES=YES \
    # Object stores throttle (503 SlowDown, 429); retry with back-off instead of failing a tile.
    GDAL_HTTP_MAX_RETRY=5 \
    GDAL_HTTP_RETRY_DELAY=1 \
    # Block cache per process in MB; bounded so worker memory is set by the tile size (DESIGN).
    GDAL_CACHEMAX=512 \
    # Writing a GTiff straight to /vsis3/ needs random access; stage it in a temp file instead.
    CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE=YES \
    # Never download PROJ grids at run time: workers have no guaranteed egress.
    PROJ_NETWORK=OFF \
    HOME=/home/ftl

USER 1000:1000
WORKDIR /home/ftl

# Sanity check at build time: the CLI and the Dask entry points the cluster managers call exist.
RUN ftlcloud --version && dask scheduler --help >/dev/null && dask worker --help >/dev/null

# tini only prefixes the command and forces none: Kubernetes, Dask-Gateway (container args
# `dask scheduler ...` / `dask worker ...`) and the DaskJob operator replace CMD with their own.
# No HEALTHCHECK: Kubernetes ignores it and dask-gateway/the operator define their own probes.
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["ftlcloud", "--help"]
