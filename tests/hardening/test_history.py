"""Fault 6 of issue 13: history was kept forever, an unpaged GET /history built one huge
response on the event loop (190 MB in 4.6 s, a concurrent request stalled 4.3 s). Now history is
capped (oldest dropped), GET /history answers a bounded default page, and the entries are read,
spliced and written off the loop, a few MiB at a time."""

from __future__ import annotations

import json
import logging
import threading
import time

from server.cli import build_parser
from server.routes.common import STATE, Limits
from server.store import SUCCESS, PromptStore
from tests.server.conftest import Api, ServerThread


def _finish(store: PromptStore, pid: str, prompt: dict | None = None, result: dict | None = None) -> None:
    """A finished prompt, written under the store's lock so that a server's worker never sees it
    pending."""
    with store.changed:
        store.add(pid, prompt or {"1": {"class_type": "X", "inputs": {}}}, {"client_id": "c"}, ["1"], "c")
        result = result or {"1": {"text": [pid]}}
        store.finish(pid, SUCCESS, result, [["execution_success", {"prompt_id": pid}]])


def test_history_is_capped_oldest_first(tmp_path):
    store = PromptStore(tmp_path / "q.sqlite3", max_history=3)
    for i in range(5):
        _finish(store, f"p{i}")
    assert [r.prompt_id for r in store.history()] == ["p2", "p3", "p4"]
    store.add("waiting", {}, {}, [], None)  # pending prompts are not history: never dropped
    _finish(store, "p5")
    assert [r.prompt_id for r in store.history()] == ["p3", "p4", "p5"]
    assert store.get("waiting").status == "pending"
    store.close()
    # A lower cap takes effect when the store opens again.
    store = PromptStore(tmp_path / "q.sqlite3", max_history=1)
    assert [r.prompt_id for r in store.history()] == ["p5"]
    store.close()
    assert build_parser().parse_args(["serve", "--max-history", "7"]).max_history == 7


def test_spliced_entries_equal_the_decoded_ones(tmp_path):
    """history_json writes entries from the stored JSON texts; they must read back exactly as
    PromptRow.history_entry() (what GET /history/{id} answers)."""
    store = PromptStore(tmp_path / "q.sqlite3")
    _finish(store, "a", result={"9": {"images": [{"filename": "x.png"}]}, "3": {"text": ["é"]}})
    store.add("b", {"1": {}}, {}, ["1"], None, number=2.5)
    store.finish("b", "interrupted", {}, [])
    entries, used = store.history_json(store.history_page(None))
    assert used == 2
    for pid, text in entries:
        assert json.loads(text) == store.get(pid).history_entry()
        assert json.loads(store.entry_json(pid)) == store.get(pid).history_entry()
    # GET /queue is spliced the same way.
    store.add("run", {"1": {"class_type": "Y", "inputs": {"t": "ü"}}}, {"client_id": "z"}, ["1"], "z")
    store.add("wait", {"2": {}}, {}, ["2"], None, number=-7.25)
    store.add("later", {"3": {}}, {}, ["3"], None)
    store.claim_next()  # "wait" runs first (the lowest number)
    expected = {
        "queue_running": [r.queue_item() for r in store.running()],
        "queue_pending": [r.queue_item() for r in store.pending()],
    }
    assert json.loads(store.queue_json()) == expected and len(expected["queue_pending"]) == 2
    assert store.entry_json("run") is None and store.entry_json("nope") is None
    store.close()


def test_get_history_answers_a_bounded_default_page(tmp_path):
    server = ServerThread(tmp_path / "data", limits=Limits(history_page=20, max_history=50)).start()
    try:
        store = server.app[STATE].store
        ids = [f"p{i:03d}" for i in range(60)]
        for pid in ids:
            _finish(store, pid)
        api = Api(server.url)
        assert list(api.get("/history").json()) == ids[-20:]  # the latest page, in finish order
        assert list(api.get("/history?max_items=5&offset=0").json()) == ids[10:15]  # 50 kept
        assert list(api.get("/api/history?max_items=1000").json()) == ids[10:]
        assert api.get("/history?max_items=0").json() == {}
        for bad in ("max_items=-1", "max_items=", "offset=x", "max_items=1.5"):
            r = api.get(f"/history?{bad}")
            assert r.status == 400 and r.json()["error"]["type"] == "invalid_request", bad
        assert api.get(f"/history/{ids[0]}").json() == {}  # dropped by the cap
        assert list(api.get(f"/history/{ids[-1]}").json()) == [ids[-1]]
    finally:
        server.stop()


def test_a_large_history_read_never_holds_the_event_loop(tmp_path, caplog):
    """48 MiB of history (24 prompts of 2 MiB): asyncio's debug mode reports every event-loop
    step over 0.25 s; before, GET /history decoded and encoded it all in one step. A small
    request made meanwhile is answered promptly as well."""
    server = ServerThread(tmp_path / "data").start()
    try:
        store = server.app[STATE].store
        blob = "w" * (2 * 2**20)
        for i in range(24):
            _finish(store, f"big{i}", prompt={"1": {"class_type": "Text", "inputs": {"text": blob}}})
        api = Api(server.url)

        def debug() -> None:
            server.loop.set_debug(True)
            server.loop.slow_callback_duration = 0.25

        server.loop.call_soon_threadsafe(debug)
        caplog.set_level(logging.WARNING, logger="asyncio")
        latencies: list[float] = []
        reading = threading.Event()

        def small_requests() -> None:
            reading.wait(10)
            for _ in range(20):
                t = time.perf_counter()
                assert api.get("/prompt").status == 200
                latencies.append(time.perf_counter() - t)

        other = threading.Thread(target=small_requests)
        other.start()
        reading.set()
        page = api.get("/history?max_items=24")
        other.join()
        assert page.status == 200 and len(page.json()) == 24
        slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
        assert not slow, slow
        assert max(latencies) < 1.0, latencies
    finally:
        server.loop.call_soon_threadsafe(server.loop.set_debug, False)
        server.stop()
