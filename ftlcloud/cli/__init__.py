"""The ``ftlcloud`` command: a thin click layer over the Python API.

Each command group lives in its own module and is registered here; commands parse arguments, call
the Python API, print, and map :class:`ftlcloud.errors.FtlError` subclasses to exit codes.
"""

from __future__ import annotations

import logging
import sys
from importlib import import_module

import click

from ftlcloud import __version__
from ftlcloud.errors import FtlError
from ftlcloud.io.settings import redact

# module (":alias" when a module holds several) -> attribute holding a click command or group
_COMMANDS = {
    "ftlcloud.cli.demo": "demo",
    "ftlcloud.cli.storage": "storage",
    "ftlcloud.cli.ingest": "ingest",
    "ftlcloud.cli.run": "factors",
    "ftlcloud.cli.run:run": "run_cmd",
    "ftlcloud.cli.run:iterate": "iterate",
    "ftlcloud.cli.review": "review",
    "ftlcloud.cli.review:validate": "validate",
    "ftlcloud.cli.serve": "serve",
    "ftlcloud.cli.serve:index": "index",
}


def _log_handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        # One JSON object per line (time, level, logger, message and any `extra=` fields such as
        # run_id, stage, tiles), for log collectors on Kubernetes.
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    return handler


@click.group()
@click.version_option(__version__, prog_name="ftlcloud")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    envvar="FTLCLOUD_LOG_FORMAT",
    default="text",
    show_default=True,
    help="Log lines as text, or as JSON objects ($FTLCLOUD_LOG_FORMAT).",
)
def cli(verbose: int, log_format: str) -> None:
    """Semi-automatic iterative freeze-thaw landslide identification from InSAR."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, handlers=[_log_handler(log_format)])
    # botocore logs request headers (the access key id) at DEBUG; third-party loggers stay at INFO
    # or above so that no log line carries credentials.
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "rasterio"):
        logging.getLogger(name).setLevel(max(level, logging.INFO))


def _register() -> None:
    for module, attr in _COMMANDS.items():
        # "module:alias" registers several commands of one module under unique keys.
        cli.add_command(getattr(import_module(module.split(":")[0]), attr))


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn ftlcloud errors into one clear line and an exit code."""
    try:
        cli.main(args=argv, prog_name="ftlcloud", standalone_mode=False)
    except FtlError as err:
        click.echo(f"error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except Exception as err:  # a bug, not a user error: one line, the traceback at -vv
        logging.getLogger("ftlcloud").debug("unexpected error", exc_info=True)
        click.echo(
            f"error: unexpected {type(err).__name__}: {redact(str(err))}; rerun with -vv for the "
            "traceback, and please report it",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
