"""The Python client against a live seqd, in local mode and in Redis mode."""

import asyncio
import datetime as dt
import os
import shutil
import signal
import subprocess
import threading
import unittest
from zoneinfo import ZoneInfo

import seqd
from seqd import wire

from live import SEQCTL, Redis, Seqd

KOLKATA = ZoneInfo("Asia/Kolkata")


class OneLocalSeqd(unittest.TestCase):
    """A local-mode seqd shared by the tests of a class."""

    @classmethod
    def setUpClass(cls):
        cls.seqd = Seqd()

    @classmethod
    def tearDownClass(cls):
        cls.seqd.stop()

    def client(self):
        c = seqd.Client(self.seqd.socket)
        self.addCleanup(c.close)
        return c


class LocalMode(OneLocalSeqd):
    def test_daily_numbers_follow_the_local_date_of_now(self):
        c = self.client()
        # The last second of yesterday and the first of today, in Kolkata
        # (seqd issues numbers for days within a day of today).
        after = dt.datetime.now(KOLKATA).replace(hour=0, minute=0, second=0, microsecond=0)
        before = after - dt.timedelta(seconds=1)
        ymd = lambda d: int(d.strftime("%Y%m%d"))  # noqa: E731
        n = c.increment_daily_sequence(123, before)
        self.assertEqual((n.seq, n.day, n.source), (1, ymd(before), "local"))
        self.assertEqual(c.increment_daily_sequence("123", before).seq, 2)
        self.assertEqual(c.increment_daily_sequence(123, after), seqd.DailyNumber(1, ymd(after), "local"))
        self.assertEqual(c.get_current_sequence(123, before).seq, 2)
        # The same instant in UTC (18:29:59Z) is that UTC date's counter.
        utc = before.astimezone(dt.timezone.utc)
        self.assertEqual(c.daily_next("123", at=utc).day, ymd(utc))
        with self.assertRaises(ValueError):
            c.increment_daily_sequence(1, dt.datetime(2026, 1, 6))  # naive

    def test_conversations(self):
        c = self.client()
        self.assertEqual(c.private_next("alice", "bob").seq, 1)
        self.assertEqual(c.generate_private_chat_sequence("bob", "alice").seq, 2)
        self.assertEqual(c.private_get("alice", "bob").seq, 2)
        self.assertEqual(c.group_next("g1"), seqd.ConvNumber(1, "local"))
        self.assertEqual(c.generate_group_chat_sequence("g1").seq, 2)

    def test_gap_tracker_with_the_seed_names(self):
        c = self.client()
        self.assertEqual(c.check_sequence("asx", "BHP", 100).kind, "normal")
        r = c.check_sequence("asx", "BHP", 105)
        self.assertEqual((r.kind, r.expected, r.gap), ("gap", 101, 4))
        r = c.check_sequence("asx", "BHP", 102)
        self.assertEqual((r.kind, r.filled), ("out_of_order", True))
        kinds = [r.kind for r in c.check_sequence_batch(
            [("asx", "CBA", 1), ("asx", "CBA", 2, None), ("asx", "CBA", 2)])]
        self.assertEqual(kinds, ["normal", "normal", "duplicate"])
        self.assertEqual(c.check_sequence_batch([]), [])
        stats = c.get_stats("asx", "BHP")
        self.assertEqual((stats.last_seq, stats.gap_count, stats.missing), (105, 1, [(101, 101), (103, 104)]))
        c.clear_symbol("asx", "BHP")
        self.assertIsNone(c.get_stats("asx", "BHP"))
        self.assertGreaterEqual(c.clear_all(), 1)
        self.assertIsNone(c.get_stats("asx", "CBA"))

    def test_the_trackers_own_shapes_need_no_adapter(self):
        from seqd.tracker import RedisSequenceTracker, SequenceEventType, SequenceResult

        t = RedisSequenceTracker(self.client())
        self.assertEqual(
            t.check_sequence("lse", "VOD", 7),
            SequenceResult(SequenceEventType.NORMAL, None, 7, None, "VOD", "lse"),
        )
        r = t.check_sequence("lse", "VOD", 10, dt.datetime.now(dt.timezone.utc))
        self.assertEqual((r.event_type, r.expected_sequence, r.gap_size), (SequenceEventType.GAP, 8, 2))
        results = t.check_sequence_batch([("lse", "VOD", 10), ("lse", "VOD", 11, None), ("lse", "VOD", 1)])
        self.assertEqual(
            [(r.event_type, r.gap_size) for r in results],
            [(SequenceEventType.DUPLICATE, None), (SequenceEventType.NORMAL, None), (SequenceEventType.RESET, None)],
        )
        stats = t.get_stats("lse", "VOD")
        self.assertEqual(
            {k: stats[k] for k in ("exists", "last_sequence", "gap_count", "reset_count")},
            {"exists": True, "last_sequence": 1, "gap_count": 0, "reset_count": 1},
        )
        dt.datetime.fromisoformat(stats["last_timestamp"])
        t.clear_symbol("lse", "VOD")
        self.assertEqual(t.get_stats("lse", "VOD"), {"exists": False})
        t.clear_all()

    def test_cache_values_are_bytes(self):
        c = self.client()
        value = bytes(range(256))
        self.assertEqual(c.set("ct:bin", value), "stored")
        self.assertEqual(c.get("ct:bin"), value)
        self.assertIsNone(c.get("ct:none"))
        c.set_many({"ct:a": b"1", "ct:b": b"2"}, ttl=60)
        self.assertEqual(c.get_many(["ct:a", "ct:b", "ct:c"]), [b"1", b"2", None])
        self.assertEqual(c.delete("ct:a", "ct:zz"), seqd.CacheDeleted(1, False))
        self.assertEqual(c.delete_prefix("ct:").count, 2)
        calls = []
        load = lambda: calls.append(1) or b"db"  # noqa: E731
        self.assertEqual(c.get_or_load("ct:x", load), b"db")
        self.assertEqual(c.get_or_load("ct:x", load), b"db")
        self.assertEqual(len(calls), 1, "the second read is a hit")
        self.assertEqual(c.write_through("ct:x", None, lambda: "row"), ("row", "invalidated"))
        self.assertIsNone(c.get("ct:x"))

    def test_errors_carry_their_code_and_keep_the_connection(self):
        c = self.client()
        for call, code in [
            (lambda: c.daily_next("no:colons"), "invalid_argument"),
            (lambda: c.daily_next("u", tz="Mars/Olympus"), "invalid_argument"),
            (lambda: c.set("seq:group:g1", b"x"), "forbidden"),
            (lambda: c.set("bin:big", b"x" * (8 * 1024 * 1024 + 1)), "too_large"),
        ]:
            with self.assertRaises(seqd.SeqdError) as e:
                call()
            self.assertEqual(e.exception.code, code)
        c.ping()

    def test_a_long_pipeline_keeps_order_and_never_deadlocks(self):
        c = self.client()
        answers = c.pipeline([wire.group_next("piped")] * 3000)
        self.assertEqual([a.seq for a in answers], list(range(1, 3001)))
        # Big answers too: 300 reads of a 100 KiB value (30 MB of answers).
        c.set("bin:big", b"v" * 100_000)
        answers = c.pipeline([wire.cache_get("bin:big")] * 300)
        self.assertTrue(all(a.value == b"v" * 100_000 for a in answers))
        # A failed request in a pipeline fails alone.
        answers = c.pipeline([wire.group_next("ok"), wire.group_next("bad id"), wire.group_next("ok")])
        self.assertEqual(answers[0].seq + 1, answers[2].seq)
        self.assertEqual(answers[1].code, "invalid_argument")

    def test_info_names_the_limits(self):
        info = self.client().info()
        self.assertEqual(info["mode"], "local")
        self.assertEqual(info["protocols"], "1,2")
        self.assertEqual(info["requests"].split(","), list(wire.REQUEST_NAMES))
        self.assertEqual(int(info["max_frame"]), wire.DEFAULT_MAX_FRAME)
        self.assertEqual(self.client().health()["mode"], "local")

    def test_asyncio_client(self):
        async def run():
            c = await seqd.AsyncClient.connect(self.seqd.socket)
            try:
                a = await c.group_next("aio")
                b = await c.group_next("aio")
                self.assertEqual(b.seq, a.seq + 1)
                self.assertEqual((await c.increment_daily_sequence(7, dt.datetime.now(KOLKATA))).seq, 1)
                await c.set("bin:aio", b"\x00")
                self.assertEqual(await c.get("bin:aio"), b"\x00")

                async def loader():
                    return b"db"
                self.assertEqual(await c.get_or_load("bin:aio2", loader), b"db")
                with self.assertRaises(seqd.SeqdError) as e:
                    await c.group_next("bad id")
                self.assertEqual(e.exception.code, "invalid_argument")
                answers = await c.pipeline([wire.group_next("aio")] * 500)
                self.assertEqual(answers[-1].seq, b.seq + 500)
            finally:
                await c.close()
        asyncio.run(run())


class Restarts(unittest.TestCase):
    def test_the_client_reconnects_after_seqd_restarts(self):
        s = Seqd()
        self.addCleanup(s.stop)
        c = seqd.Client(s.socket)
        self.addCleanup(c.close)
        self.assertEqual(c.group_next("r").seq, 1)
        s.restart()
        self.assertEqual(c.group_next("r").seq, 2, "retried once on a new connection")


class RedisMode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = Redis()
        cls.seqd = Seqd(cls.redis, "--redis-timeout-ms", "200")

    @classmethod
    def tearDownClass(cls):
        cls.seqd.stop()
        cls.redis.stop()

    def test_numbers_come_from_redis(self):
        c = seqd.Client(self.seqd.socket)
        self.addCleanup(c.close)
        n = c.increment_daily_sequence(42, dt.datetime.now(KOLKATA))
        self.assertEqual((n.seq, n.source, n.host), (1, "redis", None))
        self.assertEqual(self.redis.cli("GET", f"user:42:sequence:{n.day}"), "1")
        self.assertEqual(c.info()["mode"], "redis")

    def test_while_redis_hangs_reads_fall_back_to_the_loader_and_numbers_to_the_store(self):
        c = seqd.Client(self.seqd.socket)
        self.addCleanup(c.close)
        c.set("bin:live", b"cached")
        self.redis.pause()
        try:
            n = c.group_next("outage")
            self.assertEqual(n.source, "local")
            self.assertIsNotNone(n.host)
            with self.assertRaises(seqd.SeqdError) as e:
                c.get("bin:live")
            self.assertEqual(e.exception.code, "unavailable")
            self.assertEqual(c.get_or_load("bin:live", lambda: b"from db"), b"from db")
            self.assertEqual(c.set("bin:live", b"new"), "deferred")
        finally:
            self.redis.resume()


class SharedClients(OneLocalSeqd):
    """One client shared by threads, one async client by many tasks."""

    def test_eight_threads_share_one_client(self):
        c = self.client()
        got, errors = [], []

        def draw():
            try:
                for _ in range(200):
                    got.append(c.group_next("threads").seq)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=draw) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(got), list(range(1, 1601)), "none lost, none twice")

    def test_a_hundred_tasks_await_one_async_client(self):
        async def run():
            async with await seqd.AsyncClient.connect(self.seqd.socket) as c:
                got = await asyncio.gather(*(c.group_next("tasks") for _ in range(100)))
                return [n.seq for n in got]

        self.assertEqual(sorted(asyncio.run(run())), list(range(1, 101)))

    def test_each_code_has_its_exception(self):
        c = self.client()
        with self.assertRaises(seqd.InvalidArgument) as e:
            c.group_next("bad id")
        self.assertEqual(e.exception.code, "invalid_argument")
        self.assertIsInstance(e.exception, seqd.SeqdError)
        with self.assertRaises(seqd.Forbidden):
            c.set("seq:group:g", b"x")
        # A number out of range is refused before it is sent.
        with self.assertRaises(seqd.InvalidArgument):
            c.check_sequence("x", "S", -1)
        self.assertEqual(c.group_next("after").seq, 1, "the connection stays usable")

    def test_e_mail_ids_are_users(self):
        c = self.client()
        self.assertEqual(c.daily_next("alice+orders@example.com", tz="UTC").seq, 1)
        self.assertEqual(c.private_next("bob@example.com", "alice+orders@example.com").seq, 1)
        # What could reach another key or command stays out.
        for bad in ["a:b", "a*", "a?", "a[1]", "{a}", "a b", "a\tb", "é@x.com"]:
            with self.assertRaises(seqd.InvalidArgument, msg=bad):
                c.daily_next(bad, tz="UTC")


class HungSeqd(unittest.TestCase):
    def test_an_async_call_to_a_hung_seqd_ends_at_its_timeout_and_the_client_goes_on(self):
        s = Seqd()
        self.addCleanup(s.stop)

        async def run():
            async with await seqd.AsyncClient.connect(s.socket, timeout=0.3) as c:
                self.assertEqual((await c.group_next("hung")).seq, 1)
                s.proc.send_signal(signal.SIGSTOP)
                try:
                    with self.assertRaises(seqd.Unavailable) as e:
                        await c.group_next("hung")
                    self.assertIn("did not answer in time", str(e.exception))
                finally:
                    s.proc.send_signal(signal.SIGCONT)
                # The late answer is dropped; the next call is answered on
                # the same connection (the lost call used up number 2).
                self.assertEqual((await c.group_next("hung")).seq, 3)

        asyncio.run(run())


class SeqdAway(unittest.TestCase):
    def test_unreachable_seqd_is_unavailable_naming_the_socket(self):
        s = Seqd()
        self.addCleanup(s.stop)
        c = seqd.Client(s.socket, timeout=0.5)
        self.addCleanup(c.close)
        s.kill9()
        self.addCleanup(s.start)
        with self.assertRaises(seqd.Unavailable) as e:
            c.group_next("away")
        self.assertIn(s.socket, str(e.exception))
        self.assertIsInstance(e.exception, ConnectionError)
        with self.assertRaises(seqd.Unavailable):
            seqd.Client(s.socket, timeout=0.3)

    def test_connecting_waits_for_seqd_to_come_up(self):
        s = Seqd()
        self.addCleanup(s.stop)
        s.kill9()
        os.remove(s.socket)
        t = threading.Timer(0.3, s.start)
        t.start()
        self.addCleanup(t.join)
        c = seqd.Client(s.socket, timeout=10)
        self.addCleanup(c.close)
        self.assertEqual(c.group_next("up").seq, 1)


class WriteThroughAcrossRestarts(unittest.TestCase):
    """Write-through while seqd restarts (Redis mode): the database write
    and the first cache tries happen while seqd is away."""

    def setUp(self):
        self.redis = Redis()
        self.addCleanup(self.redis.stop)
        self.seqd = Seqd(self.redis)
        self.addCleanup(self.seqd.stop)

    def restart_later(self):
        self.seqd.kill9()
        t = threading.Timer(0.3, self.seqd.start)
        t.start()
        self.addCleanup(t.join)
        return t

    def test_blocking_write_through_leaves_no_stale_value(self):
        c = seqd.Client(self.seqd.socket)
        self.addCleanup(c.close)
        c.set("wt:k", b"old")
        restarted = self.restart_later()
        self.assertEqual(c.write_through("wt:k", b"new", lambda: "row"), ("row", "invalidated"))
        restarted.join()
        self.assertEqual(self.redis.cli("EXISTS", "wt:k"), "0")
        self.assertEqual(c.get_or_load("wt:k", lambda: b"new"), b"new")
        self.assertEqual(c.get("wt:k"), b"new")

    def test_async_write_through_leaves_no_stale_value(self):
        async def run():
            c = await seqd.AsyncClient.connect(self.seqd.socket)
            try:
                await c.set("wt:a", b"old")
                restarted = self.restart_later()

                async def db_write():
                    return "row"

                self.assertEqual(await c.write_through("wt:a", None, db_write), ("row", "invalidated"))
                restarted.join()
                self.assertEqual(self.redis.cli("EXISTS", "wt:a"), "0")

                async def load():
                    return b"new"

                self.assertEqual(await c.get_or_load("wt:a", load), b"new")
            finally:
                await c.close()

        asyncio.run(run())

    def test_a_cache_left_uninvalidated_is_reported(self):
        c = seqd.Client(self.seqd.socket, timeout=0.3)
        self.addCleanup(c.close)
        c.set("wt:n", b"old")
        self.seqd.kill9()
        self.addCleanup(self.seqd.start)
        with self.assertRaises(seqd.NotInvalidated) as e:
            c.write_through("wt:n", None, lambda: "row")
        self.assertEqual(e.exception.written, "row")
        self.assertEqual(self.redis.cli("GET", "wt:n"), "old")
        # With seqd away, cache-aside reads the database.
        self.assertEqual(c.get_or_load("wt:n", lambda: b"db"), b"db")


@unittest.skipUnless(shutil.which("socat") and os.path.exists(SEQCTL), "socat and seqctl")
class OneCounter(unittest.TestCase):
    def test_python_rust_go_and_socat_advance_one_counter(self):
        s = Seqd()
        self.addCleanup(s.stop)
        c = seqd.Client(s.socket)
        self.addCleanup(c.close)
        seen = [c.group_next("shared").seq]
        out = subprocess.run([SEQCTL, "--socket", s.socket, "conv", "next", "group", "shared"],
                             capture_output=True, text=True, check=True).stdout
        seen.append(int(out.split("seq=")[1].split()[0]))
        out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{s.socket}"], input="CONV NEXT group shared\n",
                             capture_output=True, text=True, check=True).stdout
        seen.append(int(out.split("seq=")[1].split()[0]))
        go_example = os.environ.get("SEQD_GO_EXAMPLE")
        if go_example:
            out = subprocess.run([go_example, "-socket", s.socket, "-group", "shared"],
                                 capture_output=True, text=True, check=True).stdout
            seen.append(int(out.split("seq=")[1].split()[0]))
        seen.append(c.group_next("shared").seq)
        self.assertEqual(len(seen), 5 if go_example else 4)
        self.assertEqual(seen, list(range(1, len(seen) + 1)), "one counter, every client in turn")


if __name__ == "__main__":
    unittest.main()
