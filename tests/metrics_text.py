"""Reading scraped metrics in tests, and ``promtool`` (Debian's ``prometheus`` package) to check
the text and the alert rules the way Prometheus will read them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.missing import missing

#: A sample: its name and labels.
Series = tuple[str, frozenset[tuple[str, str]]]


def samples(text: str) -> dict[Series, float]:
    """Every sample of a scrape by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[Series, float], name: str, **labels: str) -> float | None:
    """One sample's value, None when the scrape has no such series."""
    return scraped.get((name, frozenset(labels.items())))


def promtool() -> str:
    """The promtool binary; without it the test is skipped, or fails in CI (``CI`` set)."""
    found = shutil.which("promtool")
    if found is None:
        missing("promtool not found (apt-get install prometheus; .ci/run installs it)")
    return found


def run_promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    """Run promtool; its output, the test failing with it when promtool finds a problem."""
    done = subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output
