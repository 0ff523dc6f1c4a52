"""The compose files agree with the code: services, ports, settings, health checks, no secrets."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from node.settings import _ENV, DatabaseURL

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
SETTINGS_VARS = {var for var, _p, _h in _ENV.values()}


def load(name: str) -> dict:
    return yaml.safe_load((COMPOSE / name).read_text())


def test_services_and_health_checks() -> None:
    c = load("docker-compose.yml")
    # the demo receiver is dev-only; the monitoring kit is a profile, off unless asked for
    assert set(c["services"]) == {"mariadb", "redis", "node", "traefik", "prometheus", "grafana"}
    assert {n for n, svc in c["services"].items() if "profiles" in svc} == {"prometheus", "grafana"}
    assert all(c["services"][n]["profiles"] == ["monitoring"] for n in ("prometheus", "grafana"))
    for name, svc in c["services"].items():
        assert "healthcheck" in svc, f"{name} has no health check"
    assert c["services"]["mariadb"]["image"].startswith("mariadb:11")
    assert c["services"]["redis"]["image"].startswith("redis:7")
    assert c["services"]["traefik"]["image"].startswith("traefik:v3")
    assert "--requirepass" in c["services"]["redis"]["command"]


def test_node_environment_matches_settings_and_ports_agree() -> None:
    node = load("docker-compose.yml")["services"]["node"]
    env = node["environment"]
    assert set(env) <= SETTINGS_VARS, set(env) - SETTINGS_VARS
    port = env["CRONRING_PORT"]
    assert node["expose"] == [port]
    assert node["labels"]["traefik.http.services.cronring.loadbalancer.server.port"] == port
    # readiness (Redis, MariaDB, a fresh lease, not stopping), open without a token: the health check,
    # Traefik's and the image's all use it
    assert f":{port}/readyz" in " ".join(node["healthcheck"]["test"])
    assert node["labels"]["traefik.http.services.cronring.loadbalancer.healthcheck.path"] == "/readyz"
    assert f":{port}/readyz" in (COMPOSE / "Dockerfile").read_text()
    from node.auth import PROBES

    assert "/readyz" in PROBES
    assert "ports" not in node  # scalable: --scale node=5 must not fight over host ports
    # Docker's SIGKILL comes after the node's own bounded stop (node.app.Stop.budget, default grace 10 s)
    assert int(node["stop_grace_period"].rstrip("s")) > 2 * 10.0 + 25
    url = re.sub(r"\$\{[A-Z_]+\}", "x", env["CRONRING_DATABASE_URL"])
    assert DatabaseURL.parse(url).host == "mariadb"
    assert env["CRONRING_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD}@redis:6379")
    receiver = load("docker-compose.override.yml")["services"]["receiver"]
    rport = receiver["command"][receiver["command"].index("--port") + 1]
    assert receiver["expose"] == [rport] and f":{rport}/health" in " ".join(receiver["healthcheck"]["test"])


def test_no_secrets_in_compose_and_env_example_covers_every_variable() -> None:
    text = (COMPOSE / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = dict(line.split("=", 1) for line in (COMPOSE / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert used <= set(example), used - set(example)
    for key, value in yaml.safe_load(text)["services"]["mariadb"]["environment"].items():
        if "PASSWORD" in key:
            assert value.startswith("${"), f"{key} is written into the compose file"


def test_override_and_dockerfile() -> None:
    o = load("docker-compose.override.yml")
    assert set(o["services"]) - set(load("docker-compose.yml")["services"]) == {"receiver"}
    node = o["services"]["node"]  # the checkout's layout, mounted and run as a checkout runs it
    assert node["command"] == ["python", "-m", "node"] and node["working_dir"] == "/src"
    for volume in node["volumes"]:
        source, target, _ = volume.split(":")
        assert (COMPOSE / source).resolve().parent == COMPOSE.parent and target == f"/src/{Path(source).name}", volume
    assert {Path(v.split(":")[0]).name for v in node["volumes"]} == {"node", "dashboard", "receiver"}
    df = (COMPOSE / "Dockerfile").read_text()
    assert df.count("\nFROM ") + df.startswith("FROM ") >= 2 or len(re.findall(r"^FROM ", df, re.M)) >= 2
    assert re.search(r"^USER (?!root)\w+", df, re.M)
    assert "slim" in df


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (COMPOSE.parent / "README.md").read_text()
    missing = [v for v in SETTINGS_VARS if f"`{v}`" not in readme]
    assert not missing, f"README's configuration table misses {missing}"
