"""The monitoring kit (compose/monitoring/): Prometheus config and alert rules checked and unit-tested by
promtool (Debian's `prometheus` package; scripts/test installs it), and the alerts and the Grafana
dashboard ask only for metrics a node really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from node import metrics

KIT = Path(__file__).resolve().parents[2] / "compose" / "monitoring"
PROMTOOL = shutil.which("promtool")  # never skipped when missing: the tests below fail and say why


def test_promtool_is_installed() -> None:
    assert PROMTOOL, "promtool is missing: scripts/test installs Debian's prometheus package (apt-get install prometheus)"


def _promtool(*args: str) -> str:
    assert PROMTOOL
    r = subprocess.run([PROMTOOL, *args], cwd=KIT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_prometheus_config_and_rules_are_valid() -> None:
    out = _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "7 rules found" in out


def test_every_alert_fires_in_its_unit_test() -> None:
    _promtool("test", "rules", "alerts.test.yml")
    alerts = {r["alert"] for g in yaml.safe_load((KIT / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load((KIT / "alerts.test.yml").read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == tested == {"CronringNodeDown", "CronringUnaccountedTicks", "CronringJobsFailing",
                                "CronringLateFires", "CronringAbandonedRuns", "CronringJobsStuck",
                                "CronringAlertsUndelivered"}


def _exported() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")  # a labelled counter with no child yet has no sample
        names.update(s.name for s in family.samples)
    return names


def test_alerts_and_dashboard_ask_only_for_exported_metrics() -> None:
    exported = _exported() | {"up"}
    exprs = [r["expr"] for g in yaml.safe_load((KIT / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    dash = json.loads((KIT / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    asked = {m for e in exprs for m in re.findall(r"\b((?:cronring|process|python)_[a-z_]+|up)\b", e)}
    # histogram series exist once observed; their families are exported
    missing = {m for m in asked if m not in exported and m.removesuffix("_bucket") not in exported}
    assert not missing, missing
    assert len(dash["panels"]) >= 10 and dash["uid"] == "cronring"
