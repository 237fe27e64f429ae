"""The SQLite queue on its own: order, numbering across reopenings, recovery, paging."""

from __future__ import annotations

from server.store import ERROR, PENDING, RUNNING, STOPPED_MESSAGE, SUCCESS, PromptStore


def add(store: PromptStore, pid: str, front: bool = False) -> float:
    return store.add(pid, {"1": {"class_type": "X", "inputs": {}}}, {}, ["1"], None, front=front)


def test_order_positions_and_front(tmp_path):
    store = PromptStore(tmp_path / "q.sqlite3")
    assert [add(store, p) for p in ("a", "b", "c")] == [1, 2, 3]
    assert add(store, "f", front=True) == -4
    assert [r.prompt_id for r in store.pending()] == ["f", "a", "b", "c"]
    assert [store.position(p) for p in ("f", "a", "b", "c")] == [0, 1, 2, 3]
    row = store.claim_next()
    assert row.prompt_id == "f" and row.status == RUNNING
    assert store.position("f") is None and store.position("a") == 0
    assert store.remaining() == 4
    store.finish("f", SUCCESS, {"1": {"text": ["x"]}}, [["execution_success", {}]])
    assert store.get("f").history_entry()["status"]["completed"] is True
    assert store.delete_pending(["b", "f"]) == 1  # finished prompts are not pending
    assert [r.prompt_id for r in store.pending()] == ["a", "c"]
    store.close()


def test_reopen_keeps_numbering_and_fails_the_running_prompt(tmp_path):
    store = PromptStore(tmp_path / "q.sqlite3")
    for p in ("a", "b", "c"):
        add(store, p)
    store.claim_next()  # "a" is running when the process "dies"
    store.close()

    store = PromptStore(tmp_path / "q.sqlite3")
    assert store.recover() == ["a"]
    a = store.get("a")
    assert a.status == ERROR and a.error["exception_message"] == STOPPED_MESSAGE
    assert a.messages[0][0] == "execution_error"
    assert [r.prompt_id for r in store.pending()] == ["b", "c"]
    assert add(store, "d") == 4  # numbers never repeat across restarts
    assert store.get("d").status == PENDING
    assert store.recover() == []
    store.close()


def test_history_paging(tmp_path):
    store = PromptStore(tmp_path / "q.sqlite3")
    for i in range(5):
        add(store, f"p{i}")
        store.claim_next()
        store.finish(f"p{i}", SUCCESS, {}, [])
    ids = lambda rows: [r.prompt_id for r in rows]  # noqa: E731
    assert ids(store.history()) == ["p0", "p1", "p2", "p3", "p4"]
    assert ids(store.history(2)) == ["p3", "p4"]
    assert ids(store.history(2, 0)) == ["p0", "p1"]
    assert ids(store.history(None, 3)) == ["p3", "p4"]
    assert ids(store.history(0)) == []
    assert store.delete_history(["p0"]) == 1 and store.delete_history(None) == 4
    store.close()
