"""GET /queue's items are kept as JSON from the moment a prompt is added (server/queue_items.py):
the answer must stay exactly what the rows say through running, finishing, deleting, a restart
(nothing kept: read from SQLite), a prompt_id used again, and a full budget."""

from __future__ import annotations

import json

from server import queue_items
from server.store import SUCCESS, PromptStore


def expected(store: PromptStore) -> dict:
    return {
        "queue_running": [r.queue_item() for r in store.running()],
        "queue_pending": [r.queue_item() for r in store.pending()],
    }


def check(store: PromptStore) -> dict:
    answer = json.loads(store.queue_json())
    assert answer == expected(store)
    return answer


def test_the_answer_follows_the_queue(tmp_path):
    store = PromptStore(tmp_path / "q.sqlite3")
    assert check(store) == {"queue_running": [], "queue_pending": []}
    for i in range(4):
        store.add(f"p{i}", {str(i): {"class_type": "T", "inputs": {"x": "é" * i}}}, {"n": i}, [str(i)], None)
    store.add("first", {"9": {}}, {}, ["9"], None, front=True)
    assert [item[1] for item in check(store)["queue_pending"]] == ["first", "p0", "p1", "p2", "p3"]
    row = store.claim_next()
    assert [item[1] for item in check(store)["queue_running"]] == [row.prompt_id] == ["first"]
    store.finish("first", SUCCESS, {}, [])
    assert store.delete_pending(["p1"]) == 1
    assert [item[1] for item in check(store)["queue_pending"]] == ["p0", "p2", "p3"]
    store.close()
    # After a restart nothing is kept: the items are read from the rows, then kept.
    store = PromptStore(tmp_path / "q.sqlite3")
    assert [item[1] for item in check(store)["queue_pending"]] == ["p0", "p2", "p3"]
    assert set(store._queue_items._items) == {"p0", "p2", "p3"}
    store.delete_pending(None)
    check(store)
    assert store._queue_items._items == {} and store._queue_items._bytes == 0
    store.close()


def test_a_full_budget_reads_the_rest_from_sqlite(tmp_path, monkeypatch):
    monkeypatch.setattr(queue_items, "BUDGET", 400)
    store = PromptStore(tmp_path / "q.sqlite3")
    for i in range(6):
        store.add(f"p{i}", {str(i): {"class_type": "T", "inputs": {"text": "z" * 100}}}, {}, [str(i)], None)
    kept = store._queue_items
    assert 0 < len(kept._items) < 6 and kept._bytes <= 400
    assert len(check(store)["queue_pending"]) == 6
    store.close()


def test_a_prompt_id_used_again_shows_its_new_prompt(tmp_path):
    """History is capped: once "again"'s entry is dropped, the id may be queued anew."""
    store = PromptStore(tmp_path / "q.sqlite3", max_history=1)
    store.add("again", {"1": {"class_type": "Old"}}, {}, ["1"], None)
    store.claim_next()
    store.finish("again", SUCCESS, {}, [])
    store.add("other", {"2": {}}, {}, ["2"], None)
    store.claim_next()
    store.finish("other", SUCCESS, {}, [])  # "again" leaves the history
    assert store.get("again") is None
    store.add("again", {"1": {"class_type": "New"}}, {}, ["1"], None)
    assert check(store)["queue_pending"][0][2] == {"1": {"class_type": "New"}}
    store.close()


def test_items_go_when_their_prompts_finish_or_are_deleted_without_any_poll(tmp_path):
    """Nobody may ever call GET /queue: what is kept must not grow with the prompts run."""
    store = PromptStore(tmp_path / "q.sqlite3")
    for i in range(5):
        store.add(f"p{i}", {str(i): {"class_type": "T", "inputs": {"text": "y" * 1000}}}, {}, [str(i)], None)
    kept = store._queue_items
    for _ in range(2):
        row = store.claim_next()
        store.finish(row.prompt_id, SUCCESS, {}, [])
    assert set(kept._items) == {"p2", "p3", "p4"}
    store.delete_pending(["p3", "nope"])
    assert set(kept._items) == {"p2", "p4"}
    store.delete_pending(None)
    assert kept._items == {} and kept._bytes == 0
    store.close()
