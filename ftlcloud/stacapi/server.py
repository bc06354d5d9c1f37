"""``ftlcloud serve``: a STAC API (stac-fastapi-pgstac) over a store's catalog, kept in step.

Layout: a pgstac database (an embedded throw-away PostgreSQL by default, or ``--pgstac URL``)
holds the index; a background thread syncs it from the store's static catalog every few seconds,
so iterations published by any run (any machine) appear in searches; uvicorn serves
stac-fastapi-pgstac's application (item search with bbox, datetime, ids, collections, CQL2
``filter``, ``sortby``, ``fields``; read-only, no transactions).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ftlcloud import __version__
from ftlcloud.errors import ConfigError, FtlError
from ftlcloud.io.store import Store
from ftlcloud.stacapi.index import HrefMode, PgstacIndex, SyncReport
from ftlcloud.stacapi.postgres import LocalPostgres

log = logging.getLogger(__name__)


def postgres_settings(dsn: str) -> Any:
    """stac-fastapi-pgstac's connection settings from a ``postgresql://`` URL."""
    from stac_fastapi.pgstac.config import PostgresSettings

    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(
            "--pgstac must be a URL like postgresql://user:password@host:5432/dbname, "
            f"got scheme {parts.scheme!r}"
        )
    return PostgresSettings(
        pguser=unquote(parts.username or "postgres"),
        pgpassword=unquote(parts.password or ""),
        pghost=parts.hostname,
        pgport=parts.port or 5432,
        pgdatabase=parts.path.lstrip("/") or "postgres",
    )


_API_IDENTITY = {
    "STAC_FASTAPI_LANDING_ID": "ftlcloud",
    "STAC_FASTAPI_TITLE": "ftlcloud STAC API",
    "STAC_FASTAPI_DESCRIPTION": "Inputs, factors, iterations and inventories of freeze-thaw "
    "landslide identification runs (ftlcloud).",
    "STAC_FASTAPI_VERSION": __version__,
}


def create_app(dsn: str, *, title: str = "ftlcloud STAC API") -> Any:
    """The FastAPI application: stac-fastapi-pgstac reading the pgstac database at ``dsn``."""
    # stac-fastapi reads its landing-page defaults from the environment when first imported.
    for name, value in _API_IDENTITY.items():
        os.environ.setdefault(name, value)
    from fastapi import FastAPI
    from stac_fastapi.pgstac.app import instantiate_api
    from stac_fastapi.pgstac.config import Settings
    from stac_fastapi.pgstac.db import close_db_connection, connect_to_db

    pg = postgres_settings(dsn)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await connect_to_db(app, postgres_settings=pg)
        yield
        await close_db_connection(app)

    settings = Settings(stac_fastapi_title=title, enable_transactions_extensions=False)
    return instantiate_api(settings=settings, lifespan=lifespan).app


class IndexSync(threading.Thread):
    """Polls the store and syncs the index until stopped; errors are logged, the API stays up."""

    def __init__(
        self, index: PgstacIndex, store: Store, *, hrefs: HrefMode, interval_s: float
    ) -> None:
        super().__init__(name="ftlcloud-stac-index-sync", daemon=True)
        self.index, self.store, self.hrefs, self.interval_s = index, store, hrefs, interval_s
        self._halt = threading.Event()
        self.last_error: str | None = None

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                self.index.sync(self.store, hrefs=self.hrefs)
                if self.last_error is not None:
                    log.warning("STAC index sync works again")
                self.last_error = None
            except Exception as err:
                # e.g. the store is down: keep serving the last good index, retry next round
                # (an unexpected error too: a dead sync thread would silently freeze the index).
                if str(err) != self.last_error:
                    log.error(
                        "STAC index sync failed (retrying every %.0f s): %s",
                        self.interval_s,
                        err,
                        exc_info=not isinstance(err, FtlError),
                    )
                self.last_error = str(err)

    def stop(self) -> None:
        self._halt.set()


@dataclass
class ServeConfig:
    """What ``ftlcloud serve`` runs."""

    host: str = "127.0.0.1"
    port: int = 8080
    pgstac_dsn: str | None = None
    hrefs: HrefMode = "auto"
    sync_interval_s: float = 5.0


@contextlib.contextmanager
def index_database(dsn: str | None) -> Iterator[str]:
    """``dsn`` as given, or an embedded local PostgreSQL's for the duration."""
    if dsn:
        yield dsn
        return
    with LocalPostgres() as pg:
        yield pg.dsn


def serve(
    store: Store,
    config: ServeConfig,
    *,
    on_ready: Callable[[str, SyncReport], None] | None = None,
) -> None:
    """Index the store's catalog and serve the STAC API until interrupted (blocking)."""
    import uvicorn

    _check_port_free(config.host, config.port)
    with index_database(config.pgstac_dsn) as dsn:
        index = PgstacIndex(dsn)
        index.migrate()
        first = index.sync(store, hrefs=config.hrefs)
        syncer = IndexSync(index, store, hrefs=config.hrefs, interval_s=config.sync_interval_s)
        syncer.start()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(dsn),
                host=config.host,
                port=config.port,
                log_level="warning",
                lifespan="on",
            )
        )
        url = f"http://{config.host}:{config.port}"
        if on_ready is not None:
            on_ready(url, first)
        try:
            server.run()
        finally:
            syncer.stop()
            syncer.join(timeout=config.sync_interval_s + 5)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"cannot serve on {host}:{port} ({err.strerror}); pass another --port"
            ) from err
