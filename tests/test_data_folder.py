"""`--db` names one absolute data folder: logged absolute, `~` expanded, empty and bare paths refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from aivcs_ledgerd.config import DEFAULT_DB
from aivcs_ledgerd.store import UnsupportedScheme
from aivcs_ledgerd.store.location import resolve
from harness.daemon import run_to_exit, start_daemon


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIVCS_LEDGER_")}
    return run_to_exit(["--listen", "127.0.0.1:0", *args], cwd, env)


def test_a_relative_folder_is_made_absolute_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve("surrealkv://aivcs-ledger-data") == f"surrealkv://{tmp_path}/aivcs-ledger-data"
    assert resolve("file://./a/../data") == f"file://{tmp_path}/data"
    assert resolve("surrealkv:///srv/ledger") == "surrealkv:///srv/ledger"


def test_a_tilde_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve("surrealkv://~/ledger") == f"surrealkv://{tmp_path}/home/ledger"
    assert resolve("file://~") == f"file://{tmp_path}/home"
    with pytest.raises(UnsupportedScheme, match="cannot expand '~no-such-user-here'"):
        resolve("surrealkv://~no-such-user-here/ledger")


@pytest.mark.parametrize("url", ["mem://", "memory", "ws://db:8000", "https://db.example:8000/rpc"])
def test_other_urls_are_left_as_they_are(url: str) -> None:
    assert resolve(url) == url


def test_the_daemon_logs_the_default_folder_as_an_absolute_path(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, db=DEFAULT_DB)
    try:
        assert f"database surrealkv://{tmp_path}/aivcs-ledger-data" in daemon.log()
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert (tmp_path / "aivcs-ledger-data" / "wal").is_dir()


def test_the_daemon_keeps_its_data_under_home_for_a_tilde(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    daemon = start_daemon(tmp_path, db="surrealkv://~/ledger", env={"HOME": str(home)})
    try:
        assert f"database surrealkv://{home}/ledger" in daemon.log()
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert (home / "ledger" / "wal").is_dir()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("url", ["surrealkv://", "file://", "surrealkv://  "])
def test_an_empty_folder_is_refused_naming_the_flag(tmp_path: Path, url: str) -> None:
    result = run_cli(["--db", url], tmp_path)
    assert result.returncode != 0
    assert "--db" in result.stderr and "names no folder" in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be written into the working directory"


@pytest.mark.parametrize("path", ["./mydata", "mydata", "/srv/ledger"])
def test_a_bare_path_is_refused_with_the_url_it_probably_meant(tmp_path: Path, path: str) -> None:
    result = run_cli(["--db", path], tmp_path)
    assert result.returncode != 0
    assert "--db" in result.stderr
    assert f"surrealkv://{path}" in result.stderr
    assert list(tmp_path.iterdir()) == []
