"""deploy/compose.scale.yaml and its Caddyfile: several instances, checked as far as this
machine can (no Docker engine here): each file parsed and held to what the deployment
relies on — PostgreSQL on a volume, three bots in webhook mode sharing it, a TLS proxy
spreading Telegram's posts over them, health checks on /healthz, capped logs."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from bot.settings import HEALTH_PATH, METRICS_PATH
from tests.test_deploy import DOCKERFILE, REPO, image_env, parse_dockerfile, seconds

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.scale.yaml"
CADDYFILE = DEPLOY / "Caddyfile.scale"
BOTS = ["bot-1", "bot-2", "bot-3"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())  # YAML merge keys (<<) resolved
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert sorted(found) == sorted(["postgres", *BOTS, "proxy"])
    return found


def pinned(image: str) -> bool:
    """A tag naming one release (``postgres:17.2-bookworm``), not ``latest`` or a major."""
    _, _, tag = image.partition(":")
    return bool(re.match(r"^\d+\.\d+(\.\d+)?(-[a-z0-9]+)?$", tag))


def test_compose_names_its_own_project(compose):
    # Not the single bot's name: its volumes (warmth-bot_bot-data) must not be shared.
    assert compose["name"] == "warmth-bot-scale"


def test_postgres_is_pinned_keeps_its_data_on_a_volume_and_is_health_checked(compose, services):
    postgres = services["postgres"]
    assert pinned(postgres["image"]), postgres["image"]
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert "postgres-data" in compose["volumes"]
    check = postgres["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"]
    environment = postgres["environment"]
    assert environment["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")  # from .env
    assert "env_file" not in postgres  # the bot's secrets are not its business
    assert postgres["logging"]["options"]["max-size"] == "10m"


def test_three_bots_built_from_the_dockerfile_in_webhook_mode_on_postgres(services):
    for name in BOTS:
        bot = services[name]
        build = bot["build"]
        assert (DEPLOY / build["context"]).resolve() == REPO
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE
        env_files = bot["env_file"]
        env_files = [env_files] if isinstance(env_files, str) else env_files
        assert [(DEPLOY / path).resolve() for path in env_files] == [REPO / ".env"]
        environment = bot["environment"]
        # DATABASE_URL, WEBHOOK_URL and WEBHOOK_SECRET come from .env, never written here.
        for secret in ("DATABASE_URL", "WEBHOOK_URL", "WEBHOOK_SECRET"):
            assert secret not in environment
        assert environment["HTTP_LISTEN"] == "0.0.0.0:8080"
        assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert bot["restart"] == "unless-stopped"
        assert bot.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert seconds(bot["stop_grace_period"]) == 10


def test_each_bot_has_a_folder_of_its_own_on_its_own_volume(compose, services):
    dockerfile = parse_dockerfile(DOCKERFILE.read_text())
    volumes = []
    for name in BOTS:
        bot = services[name]
        [mount] = bot["volumes"]
        volume, _, target = mount.partition(":")
        assert target == "/data"
        database = bot["environment"]["DATABASE_PATH"]
        assert database == image_env(dockerfile)["DATABASE_PATH"]
        assert PurePosixPath(database).parent == PurePosixPath(target)
        volumes.append(volume)
    assert len(set(volumes)) == 3  # held payments and photos are one instance's own
    assert set(volumes) <= set(compose["volumes"])


def test_each_bot_is_health_checked_on_healthz(services):
    for name in BOTS:
        check = services[name]["healthcheck"]
        command = check["test"]
        assert command[:3] == ["CMD", "python", "-c"]
        assert f"http://127.0.0.1:8080{HEALTH_PATH}" in command[3]
        assert seconds(check["timeout"]) < seconds(check["interval"])
        assert check["retries"] >= 1
        options = services[name]["logging"]["options"]
        assert re.fullmatch(r"\d+[km]", options["max-size"])
        assert 1 <= int(options["max-file"]) <= 10


def test_the_proxy_serves_tls_on_443_and_spreads_posts_over_the_three(compose, services):
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:")
    assert pinned(proxy["image"])
    assert "443:443" in proxy["ports"]
    assert "80:80" in proxy["ports"]  # the ACME challenge
    mounts = dict(volume.split(":", 1) for volume in proxy["volumes"])
    assert mounts["./Caddyfile.scale"] == "/etc/caddy/Caddyfile:ro"
    assert (DEPLOY / "Caddyfile.scale").exists()
    assert mounts["caddy-data"] == "/data"  # certificates survive a re-create
    assert proxy["environment"]["BOT_DOMAIN"].startswith("${BOT_DOMAIN:?")
    assert sorted(proxy["depends_on"]) == BOTS
    assert proxy["logging"]["options"]["max-file"] == "5"


def caddy_site(text: str) -> tuple[str, list[str]]:
    """The one site block of a Caddyfile: its address and its directive lines."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    assert lines[0].endswith("{"), lines
    assert lines[-1] == "}", lines
    depth = 0
    for line in lines:
        depth += line.count("{") - line.count("}")
        assert depth >= 0
    assert depth == 0, "unbalanced braces"
    return lines[0].removesuffix("{").strip(), lines[1:-1]


def test_the_caddyfile_proxies_to_the_three_and_keeps_health_and_metrics_private():
    address, directives = caddy_site(CADDYFILE.read_text())
    assert address == "{$BOT_DOMAIN}"  # a name: Caddy gets its certificate automatically
    [proxy] = [line for line in directives if line.startswith("reverse_proxy ")]
    upstreams = proxy.removeprefix("reverse_proxy ").removesuffix("{").split()
    assert upstreams == [f"{name}:8080" for name in BOTS]
    assert f"health_uri {HEALTH_PATH}" in directives
    assert f"@internal path {HEALTH_PATH} {METRICS_PATH}" in directives
    assert "respond @internal 404" in directives


def test_the_readme_tells_how_to_run_several_instances():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Several instances", 1)[1].split("\n## ", 1)[0]
    assert "docker compose --env-file .env -f deploy/compose.scale.yaml up -d --build" in section
    assert "python -m bot copy-ledger" in section
    assert "/metrics" in section
    for name in (
        "DATABASE_URL",
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "POSTGRES_PASSWORD",
        "BOT_DOMAIN",
    ):
        assert name in section


def test_the_readme_names_no_file_deploy_does_not_have():
    readme = (REPO / "README.md").read_text()
    for path in re.findall(r"deploy/[\w.\-]+", readme):
        assert (REPO / path).exists(), path
