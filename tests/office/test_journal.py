"""The journal for the office: filters, keyset paging, the count, and the CSV export for Excel."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

from central.journal import CSV_COLUMNS
from tests.office.conftest import Office, assert_error

A, B = "7200000000011", "7200000000028"
DAY = date(2025, 1, 2)
#: 01:00 on 2 January in Moscow, and 01:00 on 3 January in Moscow.
FIRST_AT = datetime(2025, 1, 1, 22, 0, tzinfo=UTC)
SECOND_AT = datetime(2025, 1, 2, 22, 0, tzinfo=UTC)


async def _seed(office: Office) -> None:
    one, two = await office.store("store-1"), await office.store("store-2")
    await one.register(A, "9300000001")
    await one.register(B, "9300000002")
    await one.sale(A, "R-1", day=DAY, accrued_kop=1_234, received_at=FIRST_AT)
    await two.sale(A, "R-2", day=DAY, accrued_kop=500, redeemed_kop=1_000, received_at=SECOND_AT)
    await two.sale(B, "R-1", day=DAY, accrued_kop=77)
    await office.ok(
        "POST",
        "/admin/v1/campaigns",
        {
            "campaign_id": "c-1",
            "amount": "0.05",
            "note": "акция; «весна»",
            "selection": {"cards": [A, B]},
        },
    )


def _summary(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["card"], r["store_id"], r["kind"], r["amount_kop"], r["receipt_id"]) for r in rows]


async def test_journal_filters(office: Office) -> None:
    await office.user()
    await _seed(office)
    everything = await office.journal()
    assert len(everything) == 6
    ids = [r["id"] for r in everything]
    assert ids == sorted(ids, reverse=True)  # newest first

    assert _summary(await office.journal(card=B)) == [
        (B, None, "campaign", 5, None),
        (B, "store-2", "accrual", 77, "R-1"),
    ]
    assert _summary(await office.journal(store_id="store-2", card=A)) == [
        (A, "store-2", "accrual", 500, "R-2"),
        (A, "store-2", "redemption", -1_000, "R-2"),
    ]
    assert {r["card"] for r in await office.journal(kind="campaign")} == {A, B}
    # A receipt id is per store: R-1 exists at both.
    assert len(await office.journal(receipt_id="R-1")) == 2
    assert _summary(await office.journal(receipt_id="R-1", store_id="store-1")) == [
        (A, "store-1", "accrual", 1_234, "R-1")
    ]
    campaign = await office.journal(campaign_id="c-1")
    assert {(r["card"], r["amount_kop"], r["kind"]) for r in campaign} == {
        (A, 5, "campaign"),
        (B, 5, "campaign"),
    }
    # A period in Moscow time: 2 January 00:00 to 3 January 00:00 (+03:00).
    period = await office.journal(
        since="2025-01-02T00:00:00+03:00", until="2025-01-03T00:00:00+03:00"
    )
    assert _summary(period) == [(A, "store-1", "accrual", 1_234, "R-1")]
    period = await office.journal(since="2025-01-02T21:00:00Z", until="2025-01-02T23:00:00Z")
    assert {r["receipt_id"] for r in period} == {"R-2"}
    # Without an offset a bound is UTC, on both databases.
    period = await office.journal(since="2025-01-02T21:00:00", until="2025-01-02T23:00:00")
    assert {r["receipt_id"] for r in period} == {"R-2"}
    assert await office.journal(card="7299999999999") == []
    # Oldest first.
    oldest = await office.journal(order="oldest")
    assert [r["id"] for r in oldest] == sorted(ids)

    for bad in ({"since": "yesterday"}, {"colour": "red"}, {"order": "random"}, {"after": "x"}):
        status, answer = await office.call("GET", "/admin/v1/journal", params=bad)
        assert_error(status, answer, "validation_error", 422)


async def test_journal_keyset_paging_and_count(office: Office) -> None:
    await office.user()
    await _seed(office)
    everything = [r["id"] for r in await office.journal()]
    for order, expected in (("newest", everything), ("oldest", sorted(everything))):
        seen: list[int] = []
        after: int | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3, "order": order, "count": "true"}
            if after is not None:
                params["after"] = after
            page = await office.ok("GET", "/admin/v1/journal", params=params)
            assert page["total"] == 6
            pages += 1
            seen += [r["id"] for r in page["transactions"]]
            after = page["next_after"]
            if after is None:
                break
            assert after == seen[-1]
        assert seen == expected
        assert pages == 2  # the last page is full and says there is no more
    page = await office.ok("GET", "/admin/v1/journal", params={"card": A, "count": "1", "limit": 2})
    assert page["total"] == 4
    assert len(page["transactions"]) == 2
    assert page["next_after"] == page["transactions"][-1]["id"]
    page = await office.ok("GET", "/admin/v1/journal", params={"card": B, "limit": 2})
    assert page["next_after"] is None
    assert "total" not in page


async def test_journal_csv_for_excel(office: Office) -> None:
    await office.user()
    await _seed(office)
    response = await office.client.get(
        "/admin/v1/journal.csv",
        params={"card": A},
        headers={"Authorization": f"Bearer {office.tokens['admin']}"},
    )
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    raw = await response.read()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM that makes Excel read UTF-8
    text = raw.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    header, body = rows[0], rows[1:]
    assert tuple(header) == CSV_COLUMNS
    assert header[:7] == [
        "Номер",
        "Дата получения",
        "Дата в аптеке",
        "Карта",
        "Аптека",
        "Операция",
        "Сумма",
    ]
    assert len(body) == 4
    assert all(len(row) == len(header) for row in body)
    by_kind = {row[5]: row for row in body}
    assert set(by_kind) == {"Начисление", "Списание", "Бонус-акция"}
    amounts = sorted(row[6] for row in body)
    assert amounts == sorted(["12,34", "5,00", "-10,00", "0,05"])
    accrual = next(row for row in body if row[6] == "12,34")
    assert (accrual[3], accrual[4], accrual[7]) == (A, "store-1", "R-1")
    campaign = by_kind["Бонус-акция"]
    assert (campaign[8], campaign[9]) == ("c-1", "акция; «весна»")  # a ';' inside is quoted
    assert int(body[0][0]) > int(body[-1][0])

    # Everything, and a filter that matches nothing: the header alone.
    response = await office.client.get(
        "/admin/v1/journal.csv",
        headers={"Authorization": f"Bearer {office.tokens['admin']}"},
    )
    rows = list(csv.reader(io.StringIO((await response.read()).decode("utf-8-sig")), delimiter=";"))
    assert len(rows) == 1 + 6
    response = await office.client.get(
        "/admin/v1/journal.csv",
        params={"kind": "expiry"},
        headers={"Authorization": f"Bearer {office.tokens['admin']}"},
    )
    rows = list(csv.reader(io.StringIO((await response.read()).decode("utf-8-sig")), delimiter=";"))
    assert rows == [list(CSV_COLUMNS)]
    status, answer = await office.call("GET", "/admin/v1/journal.csv", params={"since": "x"})
    assert_error(status, answer, "validation_error", 422)
