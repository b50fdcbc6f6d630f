"""Linearizable holds and restrictions: two sessions at the exact interleavings, and a
randomized stress test that counts violations."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from conftest import Db, hold, refused, restrict


def in_thread(target: object, *args: object) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = target(*args)  # type: ignore[operator]
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def wait_for_lock_wait(db: Db, timeout: float = 10) -> None:
    """Until some backend waits on a lock (the interleaving we are building)."""
    deadline = time.monotonic() + timeout
    while not db.su.execute("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()"
                            ).fetchone()[0]:  # type: ignore[index]
        assert time.monotonic() < deadline, "nobody waited on a lock"
        time.sleep(0.02)


def test_a_writer_in_flight_when_the_hold_is_placed_finishes_first_and_the_hold_then_binds(db: Db) -> None:
    writer = db.connect("app", autocommit=False)
    writer.execute("update orders set total = 1 where id = 30")        # row locked, not committed
    thread, box = in_thread(hold, db, 3)
    wait_for_lock_wait(db)                                             # the placement waits for the writer
    assert "result" not in box
    writer.commit()                                                    # committed before the hold returned: allowed
    thread.join(10)
    assert "error" not in box, box
    refused(db.app, "update orders set total = 2 where id = 30")       # and from now on the hold binds
    assert db.scalar("select total from orders where id = 30") == 1


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read", "serializable"])
def test_a_transaction_older_than_the_hold_cannot_change_held_rows(db: Db, isolation: str) -> None:
    writer = db.connect("app", autocommit=False)
    writer.execute(f"set transaction isolation level {isolation}")
    assert writer.execute("select total from orders where id = 30").fetchone() == (300,)  # snapshot taken before the hold
    hold(db, 3)
    with pytest.raises(psycopg.Error) as info:
        writer.execute("update orders set total = 0 where id = 30")
    assert info.value.sqlstate in ("PV001", "40001")  # refused, or a serialization failure; never success
    writer.rollback()
    assert db.scalar("select total from orders where id = 30") == 300


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_a_transaction_older_than_the_restriction_cannot_add_rows_for_the_subject(db: Db, isolation: str) -> None:
    writer = db.connect("app", autocommit=False)
    writer.execute(f"set transaction isolation level {isolation}")
    writer.execute("select count(*) from orders")  # snapshot before the restriction
    restrict(db, 2)
    with pytest.raises(psycopg.Error) as info:
        writer.execute("insert into orders values (29, 2, '2026-02-02', 1)")
        writer.execute("insert into activity_log (customer_id, what) values (2, 'x')")
        writer.commit()
    assert info.value.sqlstate in ("PV001", "40001")
    writer.rollback()
    assert db.scalar("select count(*) from orders where id = 29") == 0


def test_an_insert_in_flight_when_the_restriction_is_placed_gets_marked(db: Db) -> None:
    writer = db.connect("app", autocommit=False)
    writer.execute("insert into orders values (29, 2, '2026-02-02', 1)")  # locks customer 2's row FOR SHARE
    thread, box = in_thread(restrict, db, 2)
    wait_for_lock_wait(db)
    writer.commit()
    thread.join(10)
    assert "error" not in box, box
    assert db.scalar("select privacy_mark from orders where id = 29") == 2   # the placement saw it and marked it
    assert 29 not in db.ids("orders", "app")


def test_a_column_path_insert_in_flight_is_marked_too(db: Db) -> None:
    writer = db.connect("app", autocommit=False)
    writer.execute("insert into activity_log (customer_id, what) values (2, 'in flight')")  # guard bucket FOR SHARE
    thread, box = in_thread(restrict, db, 2)
    wait_for_lock_wait(db)
    writer.commit()
    thread.join(10)
    assert "error" not in box, box
    assert db.scalar("select privacy_mark from activity_log where what = 'in flight'") == 2


def test_no_read_that_starts_after_restrict_returns_sees_the_rows(db: Db) -> None:
    restrict(db, 2)
    reader = db.connect("app")
    assert reader.execute("select count(*) from orders where customer_id = 2").fetchone() == (0,)


def test_placement_refuses_isolation_levels_that_would_miss_concurrent_rows(db: Db) -> None:
    steward = db.connect("steward_user", autocommit=False)
    steward.execute("set transaction isolation level repeatable read")
    with pytest.raises(psycopg.Error, match="READ COMMITTED"):
        steward.execute("select privacy.place_hold('customer', '3', 'C', 'r')")
    steward.rollback()


@pytest.mark.slow
def test_randomized_stress_reports_zero_violations(db: Db) -> None:
    """Writers hammer every subject's rows at random isolation levels while holds and
    restrictions come and go; afterwards no held row changed and no reader that
    started after a restriction returned saw a restricted row."""
    stop = threading.Event()
    stats = {"ops": 0, "refused": 0, "serialization": 0, "violations": 0, "reads_after_restriction": 0, "holds": 0}
    lock = threading.Lock()
    restricted_since: dict[int, float] = {}

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        conn = db.connect("app", autocommit=False)
        while not stop.is_set():
            key = rng.choice([1, 2, 3, 4])
            conn.execute(f"set transaction isolation level {rng.choice(['read committed', 'repeatable read'])}")
            try:
                action = rng.random()
                if action < 0.4:
                    conn.execute("update orders set total = total + 1 where customer_id = %s", (key,))
                elif action < 0.6:
                    conn.execute("update activity_log set what = what || '.' where customer_id = %s", (key,))
                elif action < 0.8:
                    conn.execute("insert into activity_log (customer_id, what) values (%s, 'stress')", (key,))
                else:
                    conn.execute("delete from activity_log where customer_id = %s and what = 'stress'", (key,))
                conn.commit()
            except psycopg.Error as exc:
                conn.rollback()
                with lock:
                    if exc.sqlstate == "PV001":
                        stats["refused"] += 1
                    elif exc.sqlstate in ("40001", "40P01"):
                        stats["serialization"] += 1
                    else:
                        raise
            with lock:
                stats["ops"] += 1

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        conn = db.connect("app")
        while not stop.is_set():
            key = rng.choice([1, 2, 3, 4])
            with lock:
                since = restricted_since.get(key)
            if since is None:
                continue
            n = conn.execute("select count(*) from orders where customer_id = %s", (key,)).fetchone()[0]  # type: ignore[index]
            with lock:
                still = restricted_since.get(key) == since
                stats["reads_after_restriction"] += 1
                if n and still:
                    stats["violations"] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)] + [threading.Thread(target=reader, args=(9,))]
    for t in threads:
        t.start()
    rng = random.Random(42)
    steward = db.connect("steward_user")
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            key = rng.choice([1, 2, 3, 4])
            if rng.random() < 0.5:
                hold_id = steward.execute("select privacy.place_hold('customer', %s, 'STRESS', 'stress')", (str(key),)).fetchone()[0]  # type: ignore[index]
                time.sleep(rng.random() * 0.2)
                bad = steward.execute("select count(*) from privacy.verify_hold(%s) where status = 'violation'", (hold_id,)).fetchone()[0]  # type: ignore[index]
                with lock:
                    stats["violations"] += bad
                    stats["holds"] += 1
                steward.execute("select privacy.release_hold(%s, 'stress over', 'stress')", (hold_id,))
            else:
                rid = steward.execute("select privacy.place_restriction('customer', %s, 'unlawful', 'stress')", (str(key),)).fetchone()[0]  # type: ignore[index]
                with lock:
                    restricted_since[key] = time.monotonic()
                time.sleep(rng.random() * 0.2)
                with lock:
                    restricted_since.pop(key, None)
                steward.execute("select privacy.release_restriction(%s, 'stress over', true)", (rid,))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(f"\nstress: {stats}")
    assert stats["violations"] == 0, stats
    assert stats["ops"] > 300 and stats["holds"] > 5 and stats["refused"] > 0
    assert db.su.execute("select * from privacy.verify_ledger()").fetchall() == []
