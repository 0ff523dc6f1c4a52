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
    ha = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3", "mariadb-replica"}
    assert set(c["services"]) == {"mariadb", "redis", "node", "traefik", "prometheus", "grafana"} | ha
    assert {n for n, svc in c["services"].items() if "profiles" in svc} == {"prometheus", "grafana"} | ha
    assert all(c["services"][n]["profiles"] == ["monitoring"] for n in ("prometheus", "grafana"))
    assert all(c["services"][n]["profiles"] == ["ha"] for n in ha)
    for name, svc in c["services"].items():
        assert "healthcheck" in svc, f"{name} has no health check"
    assert c["services"]["mariadb"]["image"].startswith("mariadb:11")
    assert c["services"]["redis"]["image"].startswith("redis:7")
    assert c["services"]["traefik"]["image"].startswith("traefik:v3")
    assert "--requirepass" in c["services"]["redis"]["command"]
    assert "--masterauth" in c["services"]["redis"]["command"]  # it can rejoin as a replica after a failover


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
    from node.web.auth import PROBES

    assert "/readyz" in PROBES
    assert "ports" not in node  # scalable: --scale node=5 must not fight over host ports
    # Docker's SIGKILL comes after the node's own bounded stop (node.web.app.Stop.budget, default grace 10 s)
    assert int(node["stop_grace_period"].rstrip("s")) > 2 * 10.0 + 30
    # each URL is the .env's when set (the ha profile), else the single-server default
    assert env["CRONRING_DATABASE_URL"].startswith("${CRONRING_DATABASE_URL:-mysql://")
    url = re.sub(r"\$\{[A-Z_]+\}", "x", env["CRONRING_DATABASE_URL"].removeprefix("${CRONRING_DATABASE_URL:-")[:-1])
    assert DatabaseURL.parse(url).host == "mariadb"
    assert env["CRONRING_REDIS_URL"] == "${CRONRING_REDIS_URL:-redis://:${REDIS_PASSWORD}@redis:6379/0}"
    receiver = load("docker-compose.override.yml")["services"]["receiver"]
    rport = receiver["command"][receiver["command"].index("--port") + 1]
    assert receiver["expose"] == [rport] and f":{rport}/health" in " ".join(receiver["healthcheck"]["test"])


def test_no_secrets_in_compose_and_env_example_covers_every_variable() -> None:
    text = (COMPOSE / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+)(?![A-Z_]|:-)", text))  # ${X} and ${X:?…}: no default
    optional = set(re.findall(r"\$\{([A-Z_]+):-", text))
    lines = (COMPOSE / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    commented = {line[2:].split("=", 1)[0] for line in lines if line.startswith("# ") and "=" in line}
    assert required <= set(example), required - set(example)
    assert optional - {"MARIADB_REPLICATION_PASSWORD"} <= set(example) | commented, optional - set(example) - commented
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


def test_ha_profile_topology() -> None:
    """Three Sentinels with a quorum of two watch the Redis primary the nodes default to; the MariaDB
    replica replicates the primary semi-synchronously (AFTER_SYNC); the ha lines of .env.example are
    URLs the node accepts, naming exactly those services."""
    from node.cluster.redisconn import SentinelURL

    services = load("docker-compose.yml")["services"]
    for i in (1, 2, 3):
        script = services[f"sentinel-{i}"]["command"][2]
        assert "sentinel monitor cronring redis 6379 2" in script and "auth-pass cronring $$REDIS_PASSWORD" in script
        assert services[f"sentinel-{i}"]["hostname"] == f"sentinel-{i}"
    assert services["redis-replica"]["command"][1:3] == ["--replicaof", "redis"]
    primary, replica = services["mariadb"], services["mariadb-replica"]
    assert "--rpl-semi-sync-master-wait-point=AFTER_SYNC" in primary["command"]
    assert "--rpl-semi-sync-master-enabled=${MARIADB_SEMI_SYNC:-OFF}" in primary["command"]
    assert "--rpl-semi-sync-slave-enabled=ON" in replica["command"] and "--read-only=ON" in replica["command"]
    assert replica["environment"]["MARIADB_MASTER_HOST"] == "mariadb"
    # the buffer pool holds the jobs table (the server's 128M default read a million jobs from disk)
    for server in (primary, replica):
        assert "--innodb-buffer-pool-size=${MARIADB_BUFFER_POOL:-1G}" in server["command"]
    lines = {k: v for k, _, v in (line[2:].partition("=") for line in (COMPOSE / ".env.example").read_text().splitlines()
                                   if line.startswith("# ") and "=" in line)}
    assert lines["MARIADB_SEMI_SYNC"] == "ON"
    s = SentinelURL.parse(lines["CRONRING_REDIS_URL"].replace("${REDIS_PASSWORD}", "x"))
    assert {h for h, _ in s.sentinels} == {"sentinel-1", "sentinel-2", "sentinel-3"} and s.service == "cronring"
    assert all(p == 26379 for _, p in s.sentinels)
    db = DatabaseURL.parse(lines["CRONRING_DATABASE_URL"].replace("${MARIADB_PASSWORD}", "x"))
    assert db.hosts == (("mariadb", 3306), ("mariadb-replica", 3306))
