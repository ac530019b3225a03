"""The Dockerfile, replayed without Docker.

There is no container engine here, so this reads the Dockerfile's stages and
plays their steps on this machine: each stage gets its own folder standing in
for its filesystem (container paths map into it), a fresh virtual environment
standing in for the image's Python, and the build context filtered by
.dockerignore. The builder's `pip wheel` and the runtime's `pip install` run
as written; steps that only shape the image (creating its user, owning /data)
are recognised and skipped, and any other step fails the test until it is
taught here. Then the installed `aivcs-ledgerd` starts with the image's
ENTRYPOINT, WORKDIR and ENV (but on loopback and with /data in a temporary
folder), answers health SERVING, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import click
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aivcs_ledgerd.process.cli import command
from harness.daemon import free_port, wait_serving

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# Steps that shape the image but build nothing this test can check.
IMAGE_ONLY = frozenset({"groupadd", "useradd", "chown"})
# The machine's settings that let pip reach its package index, passed through to the replayed steps.
HOST_SETTINGS = re.compile(r"PIP_\w+|(?i:https?_proxy|no_proxy)|SSL_CERT_\w+|REQUESTS_CA_BUNDLE")


# --- reading the Dockerfile ---------------------------------------------------------------------------------


@dataclass
class Step:
    keyword: str
    value: str


@dataclass
class Stage:
    base: str
    name: str
    steps: list[Step] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [step.value for step in self.steps if step.keyword == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.all("ENV"):
            words = shlex.split(value)
            if "=" not in words[0]:  # legacy form: ENV KEY value
                env[words[0]] = value.split(None, 1)[1]
                continue
            for word in words:
                key, _, setting = word.partition("=")
                env[key] = setting
        return env


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages and their steps; continuation lines joined, comments dropped, ARGs substituted in FROM."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name] = default
        elif keyword == "FROM":
            value = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], value)
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].steps.append(Step(keyword, value))
    return stages


def run_flags(value: str) -> tuple[list[dict[str, str]], list[str]]:
    """A RUN step's --mount options, and its shell command split into words."""
    words = shlex.split(value)
    mounts = []
    while words and words[0].startswith("--"):
        flag, _, spec = words.pop(0).partition("=")
        assert flag == "--mount", f"RUN flag {flag} is not replayed by this test"
        mounts.append(dict(item.split("=", 1) for item in spec.split(",")))
    return mounts, words


def commands(words: list[str]) -> Iterator[list[str]]:
    """Split a shell command on `&&`; anything more elaborate is not replayed."""
    current: list[str] = []
    for word in words:
        assert word not in {";", "|", "||", "&"}, f"shell operator {word!r} is not replayed by this test"
        if word == "&&":
            yield current
            current = []
        else:
            current.append(word)
    yield current


# --- .dockerignore -------------------------------------------------------------------------------------------


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, pattern) for each line, in order; the last rule that matches a path decides."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exception, re.compile(regex)))
    return rules


def ignored(path: PurePosixPath, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a pattern matches a path when it matches the path or one of its parent folders."""
    candidates = [str(path), *(str(parent) for parent in path.parents if str(parent) != ".")]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not exception
    return result


# --- replaying ---------------------------------------------------------------------------------------------


@dataclass
class Replay:
    """One stage played on this machine: its filesystem is `root`, its Python a fresh venv."""

    stage: Stage
    root: Path
    venv: Path
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    user: str = "root"
    env: dict[str, str] = field(default_factory=dict)

    def host(self, path: str | PurePosixPath) -> Path:
        """Where a container path lives on this machine."""
        absolute = PurePosixPath(self.workdir, path)
        return self.root.joinpath(*absolute.parts[1:])

    def map_word(self, word: str) -> str:
        """Container paths in a command's words become host paths; relative ones resolve in the workdir."""
        if word.startswith("/"):
            return str(self.host(word))
        flag, eq, value = word.partition("=")
        if eq and flag.startswith("-") and value.startswith("/"):
            return f"{flag}={self.host(value)}"
        return word

    def process_env(self) -> dict[str, str]:
        host_settings = {k: v for k, v in os.environ.items() if HOST_SETTINGS.fullmatch(k)}
        path = f"{self.venv / 'bin'}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"
        home = self.host("/root") if self.user == "root" else self.host("/data")
        return host_settings | self.env | {"PATH": path, "HOME": str(home)}


def copy_from_context(replay: Replay, value: str) -> None:
    """COPY SRC... DEST from the build context, leaving out what .dockerignore leaves out."""
    words = shlex.split(value)
    assert not any(w.startswith("--") for w in words), f"COPY flags are not replayed: {value}"
    *sources, dest = words
    rules = ignore_rules(DOCKERIGNORE.read_text())
    target = replay.host(dest)
    for source in sources:
        origin = ROOT / source
        relative = PurePosixPath(source.rstrip("/"))
        assert origin.exists() and not ignored(relative, rules), f"COPY {source}: not in the build context"
        if origin.is_file():
            into_dir = dest.endswith("/") or len(sources) > 1
            final = target / origin.name if into_dir else target
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, final)
            continue
        for folder, _, files in os.walk(origin):
            for name in files:
                path = Path(folder, name)
                if ignored(PurePosixPath(path.relative_to(ROOT).as_posix()), rules):
                    continue
                final = target / path.relative_to(origin)
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, final)


def pip_cache_dir() -> str | None:
    found = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


def replay_stage(stage: Stage, base: Path, replays: dict[str, Replay]) -> Replay:
    root = base / stage.name
    venv = base / f"{stage.name}-python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    replay = Replay(stage, root, venv)
    for step in stage.steps:
        if step.keyword == "ENV":
            replay.env |= Stage("", "", [step]).env()
        elif step.keyword == "WORKDIR":
            replay.workdir = PurePosixPath(replay.workdir, step.value)
            replay.host(replay.workdir).mkdir(parents=True, exist_ok=True)
        elif step.keyword == "USER":
            replay.user = step.value
        elif step.keyword == "COPY":
            copy_from_context(replay, step.value)
        elif step.keyword == "RUN":
            run_step(replay, step.value, replays)
        else:
            assert step.keyword in {"VOLUME", "EXPOSE", "STOPSIGNAL", "ENTRYPOINT", "CMD", "LABEL", "ARG"}, step
    return replay


def run_step(replay: Replay, value: str, replays: dict[str, Replay]) -> None:
    mounts, words = run_flags(value)
    for mount in mounts:
        target = replay.host(mount["target"])
        target.parent.mkdir(parents=True, exist_ok=True)
        if mount.get("type") == "cache":
            # A build cache: pip's own cache on this machine stands in for it, a fresh folder for any other.
            cache = pip_cache_dir() if mount["target"].endswith(".cache/pip") else None
            source = Path(cache) if cache else replay.root.parent / "cache" / mount["target"].strip("/")
            source.mkdir(parents=True, exist_ok=True)
        else:
            assert mount.get("type") == "bind" and "from" in mount, f"mount {mount} is not replayed"
            source = replays[mount["from"]].host(mount["source"])
        target.symlink_to(source, target_is_directory=True)
    cwd = replay.host(replay.workdir)
    for argv in commands(words):
        program, *rest = argv
        if program in IMAGE_ONLY:
            continue
        if program == "mkdir":
            for word in rest:
                if not word.startswith("-"):
                    replay.host(word).mkdir(parents=True, exist_ok=True)
            continue
        if program == "pip":
            argv = [str(replay.venv / "bin" / "python"), "-m", "pip", *rest]
        elif program in {"python", "python3"}:
            argv = [str(replay.venv / "bin" / "python"), *rest]
        else:
            pytest.fail(f"RUN {program}: not replayed by this test; teach it or keep the step out of the Dockerfile")
        argv = [argv[0], *(replay.map_word(word) for word in argv[1:])]
        done = subprocess.run(argv, cwd=cwd, env=replay.process_env(), stdin=subprocess.DEVNULL, capture_output=True)
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout.decode()}\n{done.stderr.decode()}"
    for mount in mounts:
        replay.host(mount["target"]).unlink()


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_dockerfile_shape(stages: list[Stage]) -> None:
    builder, runtime = stages
    assert any("pip wheel" in run for run in builder.all("RUN"))
    assert not runtime.all("COPY"), "the runtime stage installs the builder's wheels and copies no source"
    assert any("--no-index" in run and "pip install" in run for run in runtime.all("RUN"))

    user = runtime.all("USER")[-1]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0", "a numeric, non-root user"
    assert runtime.all("VOLUME") == ["/data"]
    assert runtime.all("WORKDIR")[-1] == "/data"
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["aivcs-ledgerd"], "exec form: the daemon is PID 1"

    env = runtime.env()
    known = {p.envvar for p in command.params if isinstance(p, click.Option)}
    settings = {k for k in env if k.startswith("AIVCS")}
    assert settings and settings <= known, f"unknown settings {settings - known}"
    host, _, port = env["AIVCS_LEDGER_LISTEN"].rpartition(":")
    assert host == "0.0.0.0"
    assert runtime.all("EXPOSE") == [port]
    db = urlsplit(env["AIVCS_LEDGER_DB"])
    assert db.scheme == "surrealkv" and db.path.startswith("/data/"), "the database lives in the volume"


def test_dockerignore_keeps_the_context_small() -> None:
    rules = ignore_rules(DOCKERIGNORE.read_text())
    for kept in ["pyproject.toml", "README.md", "server/aivcs_ledgerd/process/cli.py", "clients/python/pyproject.toml"]:
        assert not ignored(PurePosixPath(kept), rules), kept
    for left_out in [
        ".git/HEAD",
        ".venv/bin/python",
        "node_modules/x",
        "server/aivcs_ledgerd.egg-info/PKG-INFO",
        "server/aivcs_ledgerd/__pycache__/cli.cpython-311.pyc",
        "aivcs-ledger-data/LOCK",
        "tests/x.py",
    ]:
        assert ignored(PurePosixPath(left_out), rules), left_out


def test_image_builds_serves_and_stops_on_sigterm(stages: list[Stage], tmp_path: Path) -> None:
    replays: dict[str, Replay] = {}
    for stage in stages:
        replays[stage.name] = replay_stage(stage, tmp_path, replays)
    image = replays[stages[-1].name]

    python = image.venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import aivcs_ledgerd, aivcs.ledger.v1; print(aivcs_ledgerd.__file__)"],
        env=image.process_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=image.host("/data"),
    )
    assert Path(where.stdout.strip()).is_relative_to(image.venv), "the daemon comes from the wheel, not the tree"

    env = image.process_env()
    target = f"127.0.0.1:{free_port()}"
    env["AIVCS_LEDGER_LISTEN"] = target
    db = urlsplit(env["AIVCS_LEDGER_DB"])
    env["AIVCS_LEDGER_DB"] = f"{db.scheme}://{image.host(db.path)}"
    (entrypoint, *args) = json.loads(image.stage.all("ENTRYPOINT")[-1])
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [str(image.venv / "bin" / entrypoint), *args],
            cwd=image.host(image.workdir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while daemon.poll() is None and time.monotonic() < deadline:
            try:
                wait_serving(target, 1)
                break
            except RuntimeError:
                continue
        assert daemon.poll() is None, log_path.read_text()
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="aivcs.ledger.v1.RunLedger"), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert image.host(db.path).is_dir(), "the database is stored in the volume"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    assert code == 0, log_path.read_text()
