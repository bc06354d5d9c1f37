#!/usr/bin/env bash
# Debian packages the tests and the demo use: gdal-bin (gdaldem, the peer the terrain factors are
# checked against), chromium (the review page's browser test), and PostgreSQL with PostGIS (the
# pgstac index `ftlcloud serve` runs). Installs only what is missing.
set -euo pipefail
need=()
command -v gdaldem >/dev/null 2>&1 || need+=(gdal-bin)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
compgen -G "/usr/share/postgresql/*/extension/postgis.control" >/dev/null || need+=(postgresql-postgis)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "missing Debian packages: ${need[*]}; install them (apt-get install ${need[*]}) and retry" >&2
    exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
