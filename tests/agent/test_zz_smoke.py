from pathlib import Path
from agent.reload import apply_config_file
from agent.app import create_app
from agent.clock import FakeClock
from tests.agent.conftest import Agent, line, make_config


async def test_probe(tmp_path: Path, aiohttp_client) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(
        f'data_dir = "{tmp_path}"\nrequest_body_bytes_max = 2048\n[provider]\nkind = "file"\nfile_path = "{tmp_path}/m.jsonl"\n'
    )
    from agent.config import load_config

    cfg = load_config(p, environ={})
    app = create_app(cfg, clock=FakeClock(), config_path=p)
    client = await aiohttp_client(app)
    body = '{"phone": "' + "x" * 3000 + '"}'
    r = await client.post("/pos/v1/cards/lookup", data=body, headers={"X-Register-Id": "t"})
    print(r.status)
    p.write_text(
        f'data_dir = "{tmp_path}"\nrequest_body_bytes_max = 65536\n[provider]\nkind = "file"\nfile_path = "{tmp_path}/m.jsonl"\n'
    )
    print(apply_config_file(app, p))
    r = await client.post("/pos/v1/cards/lookup", data=body, headers={"X-Register-Id": "t"})
    print(r.status, await r.text())


async def test_qty(agent: Agent, card: str) -> None:
    for q in ["1.0000", "0.0005", "1.50000", 1.0, "100"]:
        print(
            q,
            (
                await agent.post(
                    "/pos/v1/receipts/calculate", {"card": card, "lines": [line(qty=q)]}
                )
            )[0],
        )
