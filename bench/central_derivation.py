"""Benchmark: what deriving every effect costs the central server's ingest.

The central server books what it derives from each operation's inputs (``central/apply.py``:
the receipt rules over a sale's lines with the settings version it names, and the comparison
with the store's figures), never the figures a store claims.  This runs the ingest benchmark
(``bench/central_ingest.py``: many stores uploading batches over HTTP to a real
``bonus-central serve``) with the same workload twice per round, in alternating order:

- **derived**: the server as it is;
- **claimed**: the server told to book the store's figures as they come (its ``sale_figures``
  replaced by ``claimed_sale_figures`` and no comparison): what the ingest cost before, the
  floor for this one.

and prints each round's ops/s beside the floor's, and the ratio against its goal (≥ 0.9).  Run
from the repository root: ``.venv/bin/python bench/central_derivation.py --quick``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from central_common import MACHINE, code_source, rm_tree
from central_ingest import parse_args as ingest_args
from central_ingest import run_one

GOAL_RATIO = 0.9

#: Run by the server before it starts: book the stores' figures instead of deriving them.
CLAIMED_PREAMBLE = """
import central.apply
from shared.effects import claimed_sale_figures

central.apply.sale_figures = lambda sale, settings: claimed_sale_figures(sale)
central.apply.sale_differences = lambda claimed, derived: []
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="derived/claimed pairs per database")
    own, rest = parser.parse_known_args(argv)
    args = ingest_args(rest)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(
        f"derivation benchmark: {MACHINE}; {args.stores} stores × {args.ops_per_store} ops, "
        f"batches of {args.batch_ops}, {own.rounds} rounds; {code_source()}"
    )
    failed = False
    results: dict[str, dict[str, list[float]]] = {}
    for kind in kinds:
        runs: dict[str, list[float]] = {
            "derived": [],
            "claimed": [],
            "derived_cpu": [],
            "claimed_cpu": [],
        }
        for round_number in range(own.rounds):
            pair = [("derived", None), ("claimed", CLAIMED_PREAMBLE)]
            # Alternately which goes first (derived, claimed, claimed, derived, …): whatever
            # drifts over the runs (caches, the machine's other work) falls on both alike.
            for mode, preamble in pair if round_number % 2 == 0 else pair[::-1]:
                work_dir = Path(tempfile.mkdtemp(prefix=f"derivation-{mode}-", dir=args.dir))
                try:
                    print(f"\n--- {kind}, {mode} ---")
                    summary = run_one(kind, args, work_dir, preamble)
                finally:
                    rm_tree(work_dir)
                failed |= not summary["check_ok"] or bool(summary["upload_errors"])
                runs[mode].append(summary["ops_per_s"])
                runs[f"{mode}_cpu"].append(summary["server_cpu_s"] / summary["ops"] * 1e6)
        results[kind] = runs
    print("\n=== derivation: ops/s with every effect derived, beside booking the claims ===")
    for kind, runs in results.items():
        derived, claimed = statistics.median(runs["derived"]), statistics.median(runs["claimed"])
        ratio = derived / claimed
        passed = ratio >= GOAL_RATIO
        failed |= not passed
        print(
            f"{kind:>10}: derived {', '.join(f'{v:,.0f}' for v in runs['derived'])} ops/s "
            f"(median {derived:,.0f}); claimed {', '.join(f'{v:,.0f}' for v in runs['claimed'])} "
            f"(median {claimed:,.0f}); ratio {ratio:.3f}, goal ≥ {GOAL_RATIO}: "
            f"{'PASS' if passed else 'FAIL'}"
        )
        print(
            f"{'':>10}  central server CPU per operation: derived "
            f"{statistics.median(runs['derived_cpu']):.0f} µs, claimed "
            f"{statistics.median(runs['claimed_cpu']):.0f} µs (steadier than ops/s on a busy machine)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
