"""What a request costs when the processes sleep between requests: the HTTP floor (an unknown
path, no SQL) and a lookup, one till back to back against 8 tills at the agent benchmark's pace.

Not a test: it prints figures.  ``.venv/bin/python bench/agent_wakeups.py`` (about a minute).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import agent_bench as ab

SECONDS = 15.0
#: The agent benchmark's tills: three requests per customer, a customer every ~250 ms.
PAUSE_S = 0.083


def percentile_ms(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="agent-wakeups-"))
    agent = ab.AgentProcess(work, "WARNING")
    agent.start()
    try:
        cards = await ab.register_customers(agent, 100, 1)
        for path, tills, pause in (
            ("nowhere", 1, 0.0),
            ("nowhere", 8, PAUSE_S),
            ("cards/lookup", 1, 0.0),
            ("cards/lookup", 8, PAUSE_S),
        ):
            latencies: list[float] = []

            async def till(
                n: int, path: str = path, pause: float = pause, out: list[float] = latencies
            ) -> None:
                rng = random.Random(n)
                async with ab.till_session(f"till-{n}") as session:
                    end = time.perf_counter() + SECONDS
                    while time.perf_counter() < end:
                        started = time.perf_counter()
                        body = {"card": rng.choice(cards)}
                        async with session.post(f"{agent.base_url}/pos/v1/{path}", json=body) as r:
                            await r.read()
                        out.append(time.perf_counter() - started)
                        if pause:
                            await asyncio.sleep(rng.expovariate(1 / pause))

            await asyncio.gather(*(till(n) for n in range(tills)))
            label = "HTTP floor" if path == "nowhere" else "lookup"
            pace = "back to back" if not pause else f"a request every ~{pause * 1000:.0f} ms"
            print(
                f"{label:<10} {tills} till(s), {pace:<26} n {len(latencies):>6}  "
                f"p50 {percentile_ms(latencies, 50):.2f}  p90 {percentile_ms(latencies, 90):.2f}  "
                f"p99 {percentile_ms(latencies, 99):.2f} ms"
            )
    finally:
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
