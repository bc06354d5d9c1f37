"""The CLI's own behaviour: structured (JSON) logs, error mapping. Commands are tested with the
modules they drive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from ftlcloud.demo.scene import Scene
from ftlcloud.io.store import Store
from tests.conftest import ingest_scene


def test_json_log_lines_carry_time_level_logger_and_message(
    tmp_path: Path, input_files: dict[str, Any]
) -> None:
    ftlcloud = Path(sys.executable).parent / "ftlcloud"
    done = subprocess.run(
        [str(ftlcloud), "--log-format", "json", "-v", "ingest", "inventory",
         "--store", str(tmp_path / "store"), "--name", "initial", str(input_files["inventory_path"])],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records, "no log line at -v"
    for rec in records:
        assert {"time", "level", "logger", "message"} <= set(rec)
    assert any(
        rec["logger"] == "ftlcloud.io.catalog" and "published STAC item" in rec["message"]
        for rec in records
    )


def test_an_unexpected_exception_is_one_redacted_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftlcloud.cli import cli, main

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-for-the-test")

    @click.command("boom")
    def boom() -> None:
        raise RuntimeError("disk on fire near s3cr3t-value-for-the-test")

    cli.add_command(boom)
    try:
        code = main(["boom"])
    finally:
        cli.commands.pop("boom")
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: unexpected RuntimeError: disk on fire")
    assert "Traceback" not in err and "s3cr3t-value-for-the-test" not in err


@pytest.mark.slow
def test_stage_summaries_are_structured_fields(tmp_path: Path, scene: Scene) -> None:
    store = tmp_path / "store"
    ingest_scene(Store(str(store)), scene, tmp_path / "scene")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ftlcloud"), "-v", "factors", "--store", str(store),
         "--run-id", "logs", "--workers", "1", "--tile-size", "64"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "FTLCLOUD_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    [summary] = [r for r in records if r.get("stage") == "factors"]
    assert summary["run_id"] == "logs" and summary["tiles_total"] > 1
    assert summary["tiles_computed"] == summary["tiles_total"]
    assert summary["pixels"] == scene.spec.height * scene.spec.width
    assert summary["seconds"] > 0
