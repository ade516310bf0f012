"""The example alert rules of deploy/prometheus are valid, and fire when (and only when) their
unit tests say: a store not synced for an hour, a growing queue, rejected operations, a message
provider out of funds, the expiry job not run for a day."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.metrics_text import run_promtool

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "bonus-alerts.yml"
RULE_TESTS = RULES_DIR / "bonus-alerts-test.yml"
#: What the platform promises to alert on (docs/operations.md).
ALERTS = {
    "BonusStoreNotSynced",
    "BonusAgentSyncStale",
    "BonusQueueGrowing",
    "BonusOperationsRejected",
    "BonusAgentOperationsRejected",
    "BonusProviderNoBalance",
    "BonusExpiryNotRun",
}


def test_the_rules_are_valid() -> None:
    output = run_promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_the_rules_fire_as_their_unit_tests_expect() -> None:
    output = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULES_DIR)
    assert "SUCCESS" in output


def test_every_alert_is_unit_tested_and_documented() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names == ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == ALERTS
    operations = (RULES_DIR.parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    for name in ALERTS:
        assert f"`{name}`" in operations, f"{name} is not in docs/operations.md"
