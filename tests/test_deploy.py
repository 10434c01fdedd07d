"""deploy/: the Dockerfile, compose.yaml and the systemd unit, checked as far as this machine can.

Each file is parsed and held to the facts a deployment relies on: where the ledger lives,
who the bot runs as, how it is stopped and how its health is checked; that the image
installs its dependencies in a layer of their own and runs the installed package; what
``.dockerignore`` keeps out; how the unit is hardened. The health check's command is run
for real against the fake Telegram; ``systemd-analyze verify`` reads the unit and
``systemd-analyze security`` scores it (at most 2.0) where systemd is installed; the image
is built and inspected where a Docker engine answers (``docker info``), and that test is
skipped only when none does. The README's settings table is held to the settings the bot
reads. ``deploy/build-image.sh`` (buildah) is checked for syntax only: it downloads.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from bot.settings import Settings, read_env_file
from tests.conftest import wait_until
from tests.fakes.segmind import TEST_API_KEY
from tests.fakes.telegram import BOT_USERNAME, TEST_TOKEN, FakeTelegram

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
UNIT = DEPLOY / "warmth-bot.service"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_SCRIPT = DEPLOY / "build-image.sh"
README = REPO / "README.md"

HEALTHCHECK_COMMAND = ["python", "-m", "bot", "check"]
RUN_COMMAND = ["python", "-m", "bot"]


# -- the Dockerfile ---------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions as the builder reads them: continuations joined, comment lines dropped."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, where the builder drops them too
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        keyword, _, args = " ".join(buffer).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = []
    assert not buffer, "the Dockerfile ends inside a line continuation"
    return instructions


def exec_form(args: str) -> list[str]:
    """A JSON-array argument (``CMD ["python", ...]``); a shell-form string fails here."""
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(item, str) for item in value), args
    return value


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """``--name=value`` flags in front of an instruction's arguments, and the rest."""
    flags: dict[str, str] = {}
    words = args.split()
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words


def seconds(duration: str) -> float:
    """A Docker/Go duration such as ``30s``, ``1m30s`` or ``500ms``, in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, f"not a duration: {duration!r}"
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B="two words"`` as a dict (the legacy ``ENV A 1`` form is refused)."""
    pairs: dict[str, str] = {}
    for word in shlex.split(args):
        name, equals, value = word.partition("=")
        assert equals, f"use ENV name=value, not {args!r}"
        pairs[name] = value
    return pairs


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def index_of(instructions: list[Instruction], instruction: Instruction) -> int:
    return instructions.index(instruction)


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction.args))
    return env


def test_the_image_is_one_stage_on_a_pinned_python_311_slim_bookworm(dockerfile):
    assert dockerfile[0].keyword == "FROM"
    # A patch release and a Debian release: a rebuild gets the same Python on the same OS.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", only(dockerfile, "FROM").args)


def test_every_copy_source_exists_and_nothing_else_is_copied(dockerfile):
    # Copying the whole context would bake .env (the secrets), .venv and a local ledger
    # into the image, .dockerignore or not. Only named paths are copied.
    assert not [i for i in dockerfile if i.keyword == "ADD"], "use COPY, not ADD"
    copies = [i for i in dockerfile if i.keyword == "COPY"]
    assert copies
    sources: set[str] = set()
    for copy in copies:
        flags, words = split_flags(copy.args)
        assert "from" not in flags
        assert len(words) >= 2, copy
        for source in words[:-1]:
            path = PurePosixPath(source)
            assert str(path) not in (".", "/", "*"), f"line {copy.line} copies the whole context"
            assert not path.is_absolute(), source
            assert ".." not in path.parts, source
            assert ".env" not in path.name, f"line {copy.line} copies secrets"
            assert (REPO / path).exists(), f"line {copy.line}: {source} is not in the repository"
            sources.add(str(path))

    # What `pip install .` needs: the project file, the readme it names, and the package.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {"pyproject.toml", project["readme"], "bot"} <= sources


def copy_sources(copy: Instruction) -> list[str]:
    return [str(PurePosixPath(source)) for source in split_flags(copy.args)[1][:-1]]


def copy_destination(copy: Instruction) -> PurePosixPath:
    return PurePosixPath(split_flags(copy.args)[1][-1])


def test_the_dependencies_are_installed_in_a_layer_of_their_own(dockerfile):
    """pyproject.toml alone, then its dependencies; only then the code (a code change
    rebuilds from there on, without downloading every dependency again)."""
    copies = [i for i in dockerfile if i.keyword == "COPY"]
    installs = [i for i in dockerfile if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 2, [i.args for i in installs]
    dependencies, package = installs
    assert copy_sources(copies[0]) == ["pyproject.toml"]
    assert index_of(dockerfile, copies[0]) < index_of(dockerfile, dependencies)
    code = [c for c in copies if "bot" in copy_sources(c)]
    assert len(code) == 1
    assert index_of(dockerfile, dependencies) < index_of(dockerfile, code[0])
    assert index_of(dockerfile, code[0]) < index_of(dockerfile, package)
    assert "tomllib" in dependencies.args
    assert "dependencies" in dependencies.args
    assert re.search(r"\bpip install --no-cache-dir -r \S+", dependencies.args)
    # The second install adds the bot alone: the dependencies are already there.
    assert re.search(r"\bpip install --no-cache-dir --no-deps \S+", package.args)


def test_the_dependency_list_the_image_reads_is_pyprojects(dockerfile, tmp_path):
    """The deps layer's own Python one-liner, run on this pyproject.toml."""
    dependencies = [i for i in dockerfile if i.keyword == "RUN" and "tomllib" in i.args][0]
    destination = copy_destination([i for i in dockerfile if i.keyword == "COPY"][0])
    command = shlex.split(dependencies.args.split(">")[0])
    assert command[:2] == ["python", "-c"]
    code = command[2].replace(str(destination / "pyproject.toml"), str(REPO / "pyproject.toml"))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert result.stdout.split() == project["dependencies"]


def test_the_installed_package_runs_not_a_copy_of_the_source(dockerfile):
    """The source is copied outside the working directory and removed once installed: with
    `python -m bot`, a bot/ folder in the working directory would shadow site-packages."""
    workdir = [i for i in dockerfile if i.keyword == "WORKDIR"]
    assert [i.args for i in workdir] == ["/app"]
    package = [i for i in dockerfile if i.keyword == "RUN" and "--no-deps" in i.args][0]
    root = PurePosixPath(build_root(dockerfile))
    assert root.is_absolute(), root
    assert not root.is_relative_to("/app"), root
    for copy in [i for i in dockerfile if i.keyword == "COPY"]:
        assert copy_destination(copy).is_relative_to(root), copy
    # Removed in the layer that installs it.
    assert re.search(rf"\brm -rf {re.escape(str(root))}(\s|$)", package.args), package.args
    # No RUN after WORKDIR puts anything into /app.
    after = dockerfile[index_of(dockerfile, workdir[0]) :]
    assert not [i for i in after if i.keyword in ("COPY", "ADD", "RUN")]


def build_root(dockerfile: list[Instruction]) -> str:
    """The one folder every COPY goes into (``/tmp/build``)."""
    roots = {
        str(copy_destination(c)).rstrip("/").removesuffix("/bot")
        for c in dockerfile
        if c.keyword == "COPY"
    }
    assert len(roots) == 1, roots
    return roots.pop()


def test_dockerignore_keeps_secrets_environments_ledgers_and_caches_out():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for needed in (
        ".git",
        ".env",
        ".venv",
        "**/__pycache__",
        "**/*.sqlite3*",
        "data/",
        "build/",
        "*.egg-info",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
    ):
        assert needed in patterns, needed
    # Nothing the Dockerfile copies is excluded.
    excluded = {p.rstrip("/") for p in patterns if not p.startswith("!")}
    assert not excluded & {"pyproject.toml", "README.md", "bot"}


def test_it_runs_as_a_non_root_user_that_owns_the_data_volume(dockerfile):
    user = [i for i in dockerfile if i.keyword == "USER"][-1]
    name_or_uid, _, group = user.args.partition(":")
    assert name_or_uid not in ("root", "0"), user.args
    assert group not in ("root", "0"), user.args
    runs = " ".join(i.args for i in dockerfile[: index_of(dockerfile, user)] if i.keyword == "RUN")
    if name_or_uid.isdigit():
        assert re.search(rf"useradd\b.*--uid {name_or_uid}\b", runs), "the uid is never created"
    else:
        assert re.search(rf"useradd\b.*\b{name_or_uid}\b", runs), "the user is never created"

    # /data must exist and belong to that user *before* VOLUME: the builder discards later
    # changes to a volume's path, and a new named volume copies this ownership.
    volume = only(dockerfile, "VOLUME")
    before_volume = [
        i.args for i in dockerfile[: index_of(dockerfile, volume)] if i.keyword == "RUN"
    ]
    assert any("mkdir" in run and "/data" in run for run in before_volume)
    assert any(re.search(r"chown \S+ /data\b", run) for run in before_volume)
    assert index_of(dockerfile, user) > index_of(dockerfile, volume)


def test_the_ledger_lives_on_the_data_volume(dockerfile):
    args = only(dockerfile, "VOLUME").args
    volumes = exec_form(args) if args.startswith("[") else args.split()
    assert volumes == ["/data"]
    database = PurePosixPath(image_env(dockerfile)["DATABASE_PATH"])
    assert database == PurePosixPath("/data/bot.sqlite3")
    assert database.parent.is_relative_to(volumes[0])


def test_stop_signal_health_check_and_command(dockerfile):
    assert only(dockerfile, "STOPSIGNAL").args == "SIGTERM"
    assert not [i for i in dockerfile if i.keyword == "ENTRYPOINT"]
    assert exec_form(only(dockerfile, "CMD").args) == RUN_COMMAND

    flags, words = split_flags(only(dockerfile, "HEALTHCHECK").args)
    assert words[0] == "CMD"
    assert exec_form(" ".join(words[1:])) == HEALTHCHECK_COMMAND
    interval, timeout = seconds(flags["interval"]), seconds(flags["timeout"])
    start_period = seconds(flags["start-period"])
    # getMe once a minute or so: often enough to notice, rare enough not to matter.
    assert 30 <= interval <= 300
    # The check opens SQLite (5 s busy timeout) and calls getMe; give it room, not forever.
    assert 10 <= timeout < interval
    assert start_period >= 10
    assert int(flags.get("retries", "3")) >= 1


async def run_check(
    argv: list[str], env: dict[str, str], cwd: Path, *, exit_status: int
) -> tuple[str, str]:
    """Run the health check; it must exit with ``exit_status``. Returns (stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == exit_status, stderr.decode()
    return stdout.decode(), stderr.decode()


async def test_the_health_check_command_passes_when_healthy_and_fails_unconfigured(
    dockerfile, telegram: FakeTelegram, tmp_path
):
    """The HEALTHCHECK's own argv, with the image's ENV, the ledger moved to a temp volume."""
    flags, words = split_flags(only(dockerfile, "HEALTHCHECK").args)
    argv = exec_form(" ".join(words[1:]))
    assert argv[0] == "python"
    argv[0] = sys.executable
    volume = tmp_path / "data"
    volume.mkdir()
    image = image_env(dockerfile)
    image["DATABASE_PATH"] = str(volume / PurePosixPath(image["DATABASE_PATH"]).name)
    # Nothing of this process's environment (no proxies, no .env: cwd is empty).
    container = {"PATH": os.environ.get("PATH", ""), **image}

    configured = {
        **container,
        "TELEGRAM_BOT_TOKEN": TEST_TOKEN,
        "SEGMIND_API_KEY": TEST_API_KEY,
        "TELEGRAM_API_URL": telegram.url,
    }
    stdout, _ = await run_check(argv, configured, tmp_path, exit_status=0)
    assert f"@{BOT_USERNAME}" in stdout
    assert Path(image["DATABASE_PATH"]).exists()

    # Unconfigured: a settings error, exit status 2 (as the image test below expects too).
    _, stderr = await run_check(argv, container, tmp_path, exit_status=2)
    assert "error: TELEGRAM_BOT_TOKEN" in stderr
    assert "Traceback" not in stderr


# -- compose.yaml -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def service(compose: dict[str, Any]) -> dict[str, Any]:
    assert list(compose["services"]) == ["bot"]
    bot = compose["services"]["bot"]
    assert isinstance(bot, dict)
    return bot


def test_compose_builds_this_dockerfile_from_the_repository_root(service):
    build = service["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_reads_settings_from_the_ignored_env_file(service):
    env_files = service["env_file"]
    env_files = [env_files] if isinstance(env_files, str) else env_files
    assert [(DEPLOY / path).resolve() for path in env_files] == [REPO / ".env"]
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_compose_keeps_the_ledger_on_the_named_volume(compose, service, dockerfile):
    assert list(compose["volumes"]) == ["bot-data"]
    mounts = [volume.split(":") for volume in service["volumes"]]
    assert mounts == [["bot-data", "/data"]]
    # .env.example carries DATABASE_PATH=data/bot.sqlite3 (relative, outside the volume);
    # `environment` wins over `env_file`, so the container's value is pinned here.
    database = service["environment"]["DATABASE_PATH"]
    assert database == image_env(dockerfile)["DATABASE_PATH"]
    assert PurePosixPath(database).parent.is_relative_to("/data")
    assert not PurePosixPath(read_env_file(REPO / ".env.example")["DATABASE_PATH"]).is_absolute()


def test_compose_restarts_and_stops_the_bot_gracefully(service):
    assert service["restart"] == "unless-stopped"
    assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
    # The bot stops within a few seconds of SIGTERM; 10 s before SIGKILL is plenty.
    assert seconds(service["stop_grace_period"]) == 10
    assert service.get("init", True) is True


def test_compose_names_the_project(compose):
    # Without it the project (and the volume's prefix) is the folder's name: deploy_bot-data.
    assert compose["name"] == "warmth-bot"


def test_compose_states_the_health_check_the_oci_format_drops(service, dockerfile):
    check = service["healthcheck"]
    assert check["test"] == ["CMD", *HEALTHCHECK_COMMAND]
    flags, _ = split_flags(only(dockerfile, "HEALTHCHECK").args)
    assert seconds(check["interval"]) == seconds(flags["interval"])
    assert seconds(check["timeout"]) == seconds(flags["timeout"])
    assert seconds(check["start_period"]) == seconds(flags["start-period"])
    assert check["retries"] == int(flags["retries"])


def test_compose_caps_the_logs(service):
    logging = service["logging"]
    assert logging["driver"] == "json-file"
    options = logging["options"]
    assert re.fullmatch(r"\d+[km]", options["max-size"]), options
    assert 1 <= int(options["max-file"]) <= 10


# -- the systemd unit -------------------------------------------------------------------


Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections of ``Key=value`` lines; a key may repeat (systemd merges or overrides)."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"outside a section: {line}"
        assert not line.endswith("\\"), "no continuation lines"
        key, equals, value = line.partition("=")
        assert equals, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


class Section:
    """One section; ``section[key]`` is the value that counts (the last)."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values

    def __getitem__(self, key: str) -> str:
        return self.values[key][-1]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def all(self, key: str) -> list[str]:
        return self.values.get(key, [])


@pytest.fixture(scope="module")
def unit() -> dict[str, Section]:
    return {name: Section(values) for name, values in parse_unit(UNIT.read_text()).items()}


def test_the_unit_runs_the_installed_bot_as_warmth(unit):
    service = unit["Service"]
    assert service["User"] == "warmth"
    assert service["Group"] == "warmth"
    assert service["WorkingDirectory"] == "/opt/warmth-bot"
    argv = shlex.split(service["ExecStart"])
    assert argv == ["/opt/warmth-bot/venv/bin/python", "-m", "bot"]
    assert PurePosixPath(argv[0]).is_relative_to(service["WorkingDirectory"])
    # The README's recipe clones into src/ and installs from it: the working directory
    # holds src/, venv/, data/ and .env, no bot/ that `python -m bot` would import instead.
    readme = README.read_text()
    assert "sudo git clone <this repository> /opt/warmth-bot/src" in readme
    assert 'pip install --force-reinstall "git+file:///opt/warmth-bot/src"' in readme
    assert service["RestartPreventExitStatus"].split() == ["2"]
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"].split()


def test_the_unit_stops_the_bot_with_sigterm(unit):
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == "15"


def test_the_unit_lets_the_bot_read_env_itself(unit):
    """systemd's EnvironmentFile= keeps an inline `# comment` in a value (a .env that
    `python -m bot check` accepts would stop the service with exit 2); the bot reads .env
    from its working directory, as python-dotenv parses it."""
    service = unit["Service"]
    assert "EnvironmentFile" not in service
    assert "Environment" not in service
    env = REPO / ".env.example"
    assert env.exists()
    assert read_env_file(env)  # what the recipe installs as /opt/warmth-bot/.env


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RemoveIPC": "yes",
    "UMask": "0077",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
}


def test_the_unit_is_hardened(unit):
    service = unit["Service"]
    for key, value in HARDENING.items():
        assert key in service, f"{key}= is missing"
        assert service[key] == value, f"{key}={service[key]}, expected {value}"
    assert service["ReadWritePaths"].split() == ["/opt/warmth-bot/data"]
    # The allow list first; the deny lists after it narrow it.
    filters = service.all("SystemCallFilter")
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:])


# Sets the kernel's own MemoryDenyWriteExecute (prctl PR_SET_MDWE, Linux 6.3+; what
# systemd 253+ uses, and what systemd 252's seccomp filter enforces too), then runs the bot.
_UNDER_MDWE = """
import ctypes, runpy, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
sys.argv = ["bot", *sys.argv[1:]]
runpy.run_module("bot", run_name="__main__", alter_sys=True)
"""


@pytest.mark.long
async def test_the_bot_runs_under_memory_deny_write_execute(telegram: FakeTelegram, tmp_path):
    """The health check and a few seconds of the bot itself (polling the fake Telegram),
    with W+X memory refused by the kernel: a violation kills the process (SIGSEGV)."""
    unused = "http://127.0.0.1:9"  # never the real Segmind
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TELEGRAM_BOT_TOKEN": TEST_TOKEN,
        "SEGMIND_API_KEY": TEST_API_KEY,
        "TELEGRAM_API_URL": telegram.url,
        "SEGMIND_API_URL": unused,
        "SEGMIND_UPLOAD_URL": unused,
        "SEGMIND_HISTORY_URL": unused,
        "DATABASE_PATH": str(tmp_path / "bot.sqlite3"),
    }
    argv = [sys.executable, "-c", _UNDER_MDWE]
    check = await asyncio.create_subprocess_exec(
        *argv,
        "check",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(check.communicate(), 60)
    if check.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert check.returncode == 0, stderr.decode()
    assert f"@{BOT_USERNAME}" in stdout.decode()

    bot = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Polling: started, past its start-up work, and alive. (Its getUpdates is parked at the
    # fake; a call is recorded only once answered, which is the long poll's 10 s later.)
    await wait_until(lambda: telegram.long_polling, timeout=30, what="the bot's long poll")
    assert bot.returncode is None
    bot.terminate()
    _, stderr = await asyncio.wait_for(bot.communicate(), 30)
    assert bot.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()


def test_memory_deny_write_execute_suits_this_python():
    """MemoryDenyWriteExecute kills a process that maps W+X memory: CPython 3.11 has no
    JIT, and ctypes is loaded only for glibc's malloc_trim (bot/telegram/photos.py), a
    plain foreign call: no callback, so no libffi closure that could want such pages."""
    assert sys.version_info[:2] >= (3, 11)
    # Every CFUNCTYPE (the only way to a callback) lands in this cache.
    code = (
        "import bot.__main__, bot.app, bot.telegram.photos, ctypes;"
        " print(len(ctypes._c_functype_cache))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0", "the bot made a ctypes callback type"


_PREPARE_UNDER_MDWE = """
import ctypes, io, sys, tempfile, pathlib
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
from PIL import Image
from bot.images import container_formats
from bot.telegram.photos import _prepare_and_give_back
folder = pathlib.Path(tempfile.mkdtemp())
container_formats()  # libheif and libavif, loaded on demand (here: to write the HEIC)
for name, fmt in (("a.jpg", "JPEG"), ("a.heic", "HEIF"), ("a.png", "PNG"), ("a.webp", "WEBP")):
    Image.new("RGB", (3000, 2000), "red").save(folder / name, fmt)
    print(_prepare_and_give_back(folder / name).width)
"""


@pytest.mark.long
def test_photos_are_prepared_under_memory_deny_write_execute():
    """Every decoder the bot uses (libjpeg, libpng, libwebp, libheif with libde265) and
    the malloc_trim after them, with W+X memory refused by the kernel."""
    result = subprocess.run(
        [sys.executable, "-c", _PREPARE_UNDER_MDWE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 0, result.stderr
    # The JPEG is decoded at half scale (1500 px is enough); the others are resized.
    assert result.stdout.split() == ["1500", "2048", "2048", "2048"]


def test_the_unit_can_write_the_ledger_it_uses(unit):
    """With ProtectSystem=strict only ReadWritePaths is writable: the ledger must be there."""
    service = unit["Service"]
    writable = [PurePosixPath(path.lstrip("-")) for path in service["ReadWritePaths"].split()]
    workdir = PurePosixPath(service["WorkingDirectory"])
    # The README has the operator copy .env.example to .env; the default is the fallback.
    candidates = [
        read_env_file(REPO / ".env.example")["DATABASE_PATH"],
        str(Settings.model_fields["database_path"].default),
    ]
    for candidate in candidates:
        database = workdir / candidate  # an absolute path stays as it is
        assert any(database.parent.is_relative_to(path) for path in writable), database


def test_systemd_analyze_rates_the_unit_at_most_2():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, f"systemd-analyze security (systemd >= 250 for --offline):\n{output}"
    assert float(match.group(1)) <= 2.0, output


def test_systemd_analyze_verify_accepts_the_unit():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    # The venv exists only on the VM; that one complaint is expected here, nothing else.
    python = "/opt/warmth-bot/venv/bin/python"
    expected = f"{UNIT.name}: Command {python} is not executable: No such file or directory"
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not (line.strip() == expected and not Path(python).exists())
    ]
    assert problems == []


# -- the README and the build script ----------------------------------------------------


def section(markdown: str, title: str) -> str:
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def test_the_readme_carries_the_full_settings_table():
    settings = section(README.read_text(), "Settings")
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (.+?) \| .+ \|$", settings, re.MULTILINE)
    names = [name for name, _ in rows]
    assert sorted(names) == sorted(field.upper() for field in Settings.model_fields)
    assert len(names) == len(set(names))
    defaults = dict(rows)
    for name, field in Settings.model_fields.items():
        if field.is_required():
            assert "required" in defaults[name.upper()], name
        elif isinstance(field.default, (str, int, float, Path)) and name != "paysupport_text":
            shown = str(field.default)
            if isinstance(field.default, float) and field.default.is_integer():
                shown = str(int(field.default))
            if shown == "":  # written out, as the contract does (HTTP_LISTEN says more)
                assert defaults[name.upper()].startswith("empty"), name
                continue
            assert defaults[name.upper()] == f"`{shown}`", name
    # .env.example names the same settings (the template of this table).
    assert set(read_env_file(REPO / ".env.example")) == set(names)


def test_the_readme_points_to_nothing_the_user_does_not_have():
    readme = README.read_text()
    assert "steering repository" not in readme
    assert "shared/" not in readme
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (REPO / target).exists(), target


def test_the_quick_start_is_the_two_commands_tests_first():
    quick = section(README.read_text(), "Quick start")
    assert "python3.11-venv" in quick
    commands = re.findall(r"^(make \w+)", quick, re.MULTILINE)
    assert commands == ["make test", "make run"]  # exactly two; the tests need no secrets
    assert "cp .env.example .env" in quick
    deploy = section(README.read_text(), "Deploy")
    assert "python3.11-venv" in deploy
    assert "--format docker" in deploy


def test_make_image_runs_the_buildah_script():
    makefile = (REPO / "Makefile").read_text()
    match = re.search(r"^image:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert match
    assert match.group(1).strip() == "deploy/build-image.sh"
    assert os.access(BUILD_SCRIPT, os.X_OK)
    script = BUILD_SCRIPT.read_text()
    for needed in ("--isolation chroot", "--storage-driver vfs", "--format docker", "debootstrap"):
        assert needed in script, needed
    assert "python -m bot check" in script
    result = subprocess.run(["sh", "-n", str(BUILD_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
