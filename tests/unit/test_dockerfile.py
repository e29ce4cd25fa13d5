"""The container image, checked statically: Docker may not be able to build here, so the Dockerfile and
.dockerignore are parsed and held to the rules (pinned multi-stage build, non-root, health check on
/healthz, extras chosen by a build argument, a small build context); the health check command itself is
run against local HTTP servers."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import BaseModel

from engine.cli import build_parser
from engine.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PACKAGES = ("engine", "probes", "actions")
EXAMPLE_INSTANCES = ("gcp.yaml", "azure.yaml", "witness.yaml")  # the configs the image is made to run
JOURNAL_DIR = "/var/lib/failover-engine"
CONFIG_PATH = "/etc/failover-engine/engine.yaml"
DUMMY_ENV = {"FAILOVER_PEER_KEY_GCP_AZURE": "k" * 32, "FAILOVER_PEER_KEY_GCP_WITNESS": "w" * 32,
             "FAILOVER_PEER_KEY_AZURE_WITNESS": "a" * 32, "CLOUDFLARE_API_TOKEN": "t", "PGPASSWORD": "p",
             "SLACK_WEBHOOK_URL": "https://hooks.example/x", "PAGER_WEBHOOK_URL": "https://pager.example/x",
             "FAILOVER_API_ONCALL_SHA256": "a" * 64, "FAILOVER_API_VIEWER_SHA256": "b" * 64}


# -- a small Dockerfile reader -------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str  # as written after FROM (before ARG substitution)
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str | None]
    stages: list[Stage]

    def resolve(self, text: str) -> str:
        """``text`` with ``${NAME}``/``$NAME`` replaced by the defaults of the ARGs declared before FROM."""
        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            default = self.global_args.get(name)
            assert default is not None, f"FROM uses ${name}, which has no default in a global ARG"
            return default
        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", value, text)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, instruction text): comments dropped, backslash continuations joined."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue  # a comment (parser directives are comments too), or a blank line between instructions
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        yield start, " ".join(part for part in buffer if part)
        buffer = []
    assert not buffer, "the Dockerfile ends inside a line continuation"


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name, number))
        elif not stages:
            assert keyword == "ARG", f"line {number}: only ARG may come before the first FROM, not {keyword}"
            name, sep, default = args.partition("=")
            global_args[name] = default if sep else None
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(global_args, stages)


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None


def image_ref(text: str) -> ImageRef:
    name, _, digest = text.partition("@")
    repository, tag = name, None
    if ":" in name.rsplit("/", 1)[-1]:  # a colon in the last path part is the tag (not a registry port)
        repository, tag = name.rsplit(":", 1)
    return ImageRef(repository, tag, digest or None)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not an exec-form list: {args}"
    return value


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its exec-form command."""
    checks = stage.all("HEALTHCHECK")
    assert len(checks) == 1, "the runtime stage needs exactly one HEALTHCHECK"
    options, sep, command = checks[0].args.partition(" CMD ")
    assert sep, "HEALTHCHECK must run a command (HEALTHCHECK [OPTIONS] CMD [...])"
    opts = dict(opt.removeprefix("--").split("=", 1) for opt in options.split())
    return opts, exec_form(command.strip())


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


# -- the Dockerfile ------------------------------------------------------------------------------
def test_reader_joins_continuations_and_skips_comments() -> None:
    """The reader itself: directives and comments are dropped, continued lines become one instruction."""
    parsed = parse_dockerfile("# syntax=docker/dockerfile:1\nARG BASE=python:3.11.1-slim\n"
                              "FROM ${BASE} AS a\nRUN one \\\n  # a comment inside\n  two\nFROM a\nUSER 1\n")
    assert parsed.global_args == {"BASE": "python:3.11.1-slim"}
    assert [(s.image, s.name) for s in parsed.stages] == [("${BASE}", "a"), ("a", None)]
    assert parsed.stages[0].instructions == [Instruction("RUN", "one two", 4)]
    assert parsed.resolve(parsed.stages[0].image) == "python:3.11.1-slim"
    assert image_ref("registry.example:5000/python:3.11.1@sha256:ab") == ImageRef(
        "registry.example:5000/python", "3.11.1", "sha256:ab")


def test_no_trailing_comments(dockerfile: Dockerfile) -> None:
    """A ``#`` after an instruction is not a comment to Docker: it would become part of the argument."""
    for stage in dockerfile.stages:
        for i in stage.instructions:
            if i.keyword not in ("RUN", "HEALTHCHECK", "CMD", "ENTRYPOINT"):
                assert " #" not in i.args, f"line {i.line}: {i.keyword} {i.args}: move the comment to its own line"


def test_build_is_multi_stage(dockerfile: Dockerfile) -> None:
    """A builder stage makes the wheels; the runtime stage installs them and never sees the source tree."""
    assert len(dockerfile.stages) >= 2, "build the wheel in a builder stage, install it in a runtime stage"
    builder, runtime = dockerfile.stages[0], dockerfile.final
    assert builder.name, "name the builder stage (FROM ... AS builder) so the runtime stage can refer to it"
    assert any("pip wheel" in run.args for run in builder.all("RUN")), "the builder stage must build wheels"
    from_builder = [i for i in runtime.instructions
                    if f"from={builder.name}" in i.args and i.keyword in ("RUN", "COPY")]
    assert from_builder, f"the runtime stage must take the wheels from the {builder.name} stage"
    installs = [run.args for run in runtime.all("RUN") if "pip install" in run.args]
    assert installs and all("--no-index" in args for args in installs), \
        "the runtime stage installs the builder's wheels only (--no-index: no package index at runtime)"
    copied = [c.args for c in runtime.all("COPY") + runtime.all("ADD") if "--from=" not in c.args]
    assert copied == [], f"the runtime stage copies nothing from the build context: {copied}"


def test_every_from_is_pinned(dockerfile: Dockerfile) -> None:
    """Every FROM names an earlier stage or an image pinned to a full version tag and a sha256 digest."""
    stages_seen: set[str] = set()
    for stage in dockerfile.stages:
        written = dockerfile.resolve(stage.image)
        if written in stages_seen:
            continue
        ref = image_ref(written)
        where = f"line {stage.line}: FROM {written}"
        assert ref.tag is not None, f"{where}: no tag (that means latest)"
        assert ref.tag != "latest", f"{where}: latest is not a version"
        assert re.match(r"^\d+\.\d+\.\d+", ref.tag), f"{where}: pin a full version such as 3.11.11-slim-bookworm"
        assert ref.digest is not None and re.fullmatch(r"sha256:[0-9a-f]{64}", ref.digest), \
            f"{where}: pin the digest too (@sha256:...): a tag can be re-pushed"
        if stage.name:
            stages_seen.add(stage.name)


def test_base_is_python_311_slim(dockerfile: Dockerfile) -> None:
    """The runtime is python 3.11 slim, the version pyproject.toml requires at least."""
    ref = image_ref(dockerfile.resolve(dockerfile.final.image))
    assert ref.repository in ("python", "docker.io/library/python")
    assert ref.tag is not None and ref.tag.startswith("3.11.") and "slim" in ref.tag
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    """The final stage ends on a USER that is neither root nor uid 0."""
    users = dockerfile.final.all("USER")
    assert users, "set USER in the final stage"
    user, _, group = users[-1].args.partition(":")
    assert user not in ("root", "0"), f"line {users[-1].line}: USER {users[-1].args} is root"
    assert group not in ("root", "0"), f"line {users[-1].line}: group {group} is root"


def test_entrypoint_and_cmd_run_the_engine_with_the_mounted_config(dockerfile: Dockerfile) -> None:
    """ENTRYPOINT is the console script and CMD its `run --config`, as the real CLI parses it."""
    (entrypoint,) = dockerfile.final.all("ENTRYPOINT")
    (cmd,) = dockerfile.final.all("CMD")
    assert exec_form(entrypoint.args) == ["failover-engine"]
    argv = exec_form(cmd.args)
    assert argv == ["run", "--config", CONFIG_PATH]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["failover-engine"] == "engine.cli:main"
    args = build_parser().parse_args(argv)
    assert (args.command, args.config) == ("run", CONFIG_PATH)


def test_extras_come_from_a_build_argument(dockerfile: Dockerfile) -> None:
    """ARG EXTRAS picks the optional dependencies, none by default (the core); every stage using it declares it."""
    assert dockerfile.global_args.get("EXTRAS") == "", "the default image carries no cloud SDK"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"cloudflare", "gcp", "azure", "otel", "all"} <= set(extras)
    for stage in dockerfile.stages:
        users = [i for i in stage.instructions if "${EXTRAS}" in i.args]
        if users:
            assert any(a.args == "EXTRAS" for a in stage.all("ARG")), \
                f"stage {stage.name}: declare ARG EXTRAS inside the stage to use it"
    builder, runtime = dockerfile.stages[0], dockerfile.final
    wheels = [run.args for run in builder.all("RUN") if "pip wheel" in run.args]
    assert any("failover-engine[${EXTRAS}]" in args for args in wheels), \
        "the builder stage builds the wheels of failover-engine[${EXTRAS}]"
    installs = [run.args for run in runtime.all("RUN") if "pip install" in run.args]
    assert any('"failover-engine[${EXTRAS}]"' in args for args in installs), \
        'the runtime stage installs "failover-engine[${EXTRAS}]"'


# the config's `type:` values that need an SDK extra (engine/config: cloud.py and dns.py name them)
SDK_TYPES = {"cloudflare": "cloudflare", "gcp_monitoring": "gcp", "azure_metrics": "azure", "azure_logs": "azure"}


def types_in(value: object) -> set[str]:
    """Every `type` a loaded config uses, anywhere in it (probes, DNS providers, credentials)."""
    if isinstance(value, BaseModel):
        found = {value.type} if isinstance(getattr(value, "type", None), str) else set()
        return found.union(*(types_in(getattr(value, name)) for name in type(value).model_fields))
    if isinstance(value, dict):
        return set().union(*(types_in(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(types_in(v) for v in value))
    return set()


def build_matrix(text: str) -> dict[str, set[str]]:
    """The documented per-instance builds: example config -> the extras its image gets."""
    builds = {}
    for line in text.splitlines():
        found = re.match(r"^#\s+docker build (?:--build-arg EXTRAS=(\S*) )?-t \S+ \.\s+# config/(\S+\.yaml)$", line)
        if found:
            builds[found.group(2)] = set(filter(None, (found.group(1) or "").split(",")))
    return builds


def test_each_instance_image_gets_only_the_extras_its_config_uses() -> None:
    """The Dockerfile documents one build per example instance, and each carries exactly the cloud SDKs its
    config needs (a missing one would fail check-config, an extra one only adds size and attack surface)."""
    builds = build_matrix(DOCKERFILE.read_text())
    assert set(builds) == set(EXAMPLE_INSTANCES)
    for name, extras in builds.items():
        config = load_config(ROOT / "config" / name, env=DUMMY_ENV)
        needed = {SDK_TYPES[t] for t in types_in(config) if t in SDK_TYPES}
        assert extras == needed, f"config/{name}: the image gets {sorted(extras)}, the config needs {sorted(needed)}"


def test_port_volume_and_example_configs_agree(dockerfile: Dockerfile) -> None:
    """The image exposes the port the example configs listen on and keeps their journal on a volume."""
    exposed = {int(word.split("/")[0]) for e in dockerfile.final.all("EXPOSE") for word in e.args.split()}
    volumes: list[str] = []
    for v in dockerfile.final.all("VOLUME"):
        volumes += exec_form(v.args) if v.args.startswith("[") else v.args.split()
    assert JOURNAL_DIR in volumes
    image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(e.args for e in dockerfile.final.all("ENV"))))
    for name in EXAMPLE_INSTANCES:
        assert load_config(ROOT / "config" / name, env=DUMMY_ENV).instance.listen.startswith("127.0.0.1:"), (
            f"config/{name}: loopback unless FAILOVER_LISTEN says otherwise")
        config = load_config(ROOT / "config" / name, env={**DUMMY_ENV, "FAILOVER_LISTEN": image_env["FAILOVER_LISTEN"]})
        port = int(config.instance.listen.rpartition(":")[2])
        assert port in exposed, f"config/{name} listens on {port}, the image exposes {sorted(exposed)}"
        assert config.instance.listen.startswith("0.0.0.0:"), f"config/{name}: listen on every interface in a container"
        assert config.api.tokens, f"config/{name}: a listener off loopback needs api tokens"
        assert config.journal.path.startswith(JOURNAL_DIR + "/"), f"config/{name}: journal outside the volume"


def test_healthcheck_hits_healthz_with_python(dockerfile: Dockerfile) -> None:
    """The health check asks /healthz (the decision loop ticks) with Python: the image has no curl."""
    options, argv = healthcheck(dockerfile.final)
    assert argv[:2] == ["python", "-c"], f"the health check runs Python (the image has no curl), not {argv[:2]}"
    assert "/healthz" in argv[2], "the health check asks /healthz: liveness is the decision loop ticking"
    assert not {"curl", "wget"} & set(re.findall(r"[a-z]+", " ".join(argv)))
    assert {"interval", "timeout", "retries", "start-period"} <= set(options)
    env = " ".join(i.args for i in dockerfile.final.all("ENV"))
    default_url = re.search(r"FAILOVER_ENGINE_HEALTH_URL=(\S+)", env)
    assert default_url is not None, "ENV FAILOVER_ENGINE_HEALTH_URL documents (and overrides) where the check goes"
    assert default_url.group(1) in argv[2], "the ENV default and the command's fallback must be the same URL"
    port = re.search(r"^https?://[^/:]+:(\d+)/", default_url.group(1))
    assert port is not None, "name the port in FAILOVER_ENGINE_HEALTH_URL"
    exposed = {word.split("/")[0] for e in dockerfile.final.all("EXPOSE") for word in e.args.split()}
    assert port.group(1) in exposed, f"the health check asks port {port.group(1)}, the image exposes {exposed}"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/healthz" else 503
        body = json.dumps({"ok": status == 200, "detail": "test"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthcheck_command_passes_on_200_and_fails_otherwise(dockerfile: Dockerfile, health_server: str) -> None:
    """The exact command: exit 0 on 200, non-zero on 503 or when nothing listens; proxies are not used."""
    _, argv = healthcheck(dockerfile.final)
    command = [sys.executable, *argv[1:]]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")  # a dead proxy to ignore

    def check(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env={**env, "FAILOVER_ENGINE_HEALTH_URL": url}, capture_output=True,
                              text=True, timeout=30, check=False)

    ok = check(f"{health_server}/healthz")
    assert ok.returncode == 0, ok.stderr
    stalled = check(f"{health_server}/stalled")
    assert stalled.returncode != 0 and "503" in stalled.stderr
    dead = check(f"http://127.0.0.1:{_free_port()}/healthz")
    assert dead.returncode != 0


# -- .dockerignore -------------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1:end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, pattern) per rule, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``path`` out of the context: the last rule matching it or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = not negated
    return result


@pytest.fixture(scope="module")
def rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules(DOCKERIGNORE.read_text())


def test_matcher_follows_docker_rules() -> None:
    """The matcher itself: parents count, ``**`` spans directories, the last rule wins."""
    rules = dockerignore_rules("*.db\n**/__pycache__\ndocs\n!docs/keep.md\n")
    assert ignored("journal.db", rules) and not ignored("var/journal.db", rules)
    assert ignored("engine/__pycache__/x.pyc", rules) and ignored("__pycache__/x.pyc", rules)
    assert ignored("docs/a.md", rules) and not ignored("docs/keep.md", rules)


@pytest.mark.parametrize("path", [
    ".git", ".git/HEAD", ".git/objects/ab/cdef", "tests/unit/test_dockerfile.py", "tests/conftest.py",
    "bench/api_load.py", "__pycache__/x.cpython-311.pyc", "engine/__pycache__/daemon.cpython-311.pyc",
    "actions/dns/__pycache__/state.cpython-311.pyc", "journal.db", "failover-engine.db", "engine/x.db",
    "var/lib/failover-engine/journal.db", "journal.db-wal", "var/journal.db-shm", ".venv/bin/python",
    "failover_engine.egg-info/PKG-INFO", ".env",
])
def test_dockerignore_keeps_out(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    """Git history, tests, benchmarks, caches, journals and local secrets never reach the build context."""
    assert ignored(path, rules), f"{path} would be sent to the Docker daemon"


def test_dockerignore_keeps_what_the_build_copies(dockerfile: Dockerfile,
                                                  rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    """Every COPY source exists, and every file of the three packages is in the build context."""
    sources: list[str] = []
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            if "--from=" not in copy.args:
                sources += words[:-1]
    assert {"pyproject.toml", "README.md", *PACKAGES} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not ignored(source, rules), f"COPY {source}: .dockerignore leaves it out of the context"
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*"):
            relative = file.relative_to(ROOT).as_posix()
            if file.is_file() and "__pycache__" not in relative:
                assert not ignored(relative, rules), f"{relative} is part of the wheel but left out of the context"
