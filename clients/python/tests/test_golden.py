"""The Python encoder and decoder against protocol/golden/vectors.txt: every
request the Rust side encodes, byte for byte, and every answer decoded to
the value the Rust side encoded."""

import os
import unittest

from seqd import wire
from seqd.wire import (
    CacheDeleted, CacheItem, ConvNumber, DailyNumber, GapResult, SeqdError, StreamStats,
)

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "protocol", "golden", "vectors.txt")


def load():
    out = {}
    with open(VECTORS) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, hexed = line.split(" ", 1)
                out[name] = bytes.fromhex(hexed)
    return out


def req(rid, request):
    return wire.encode_request(rid, request)


# Client messages, as the Python client builds them.
REQUESTS = {
    "hello": wire.encode_hello(1, "c"),
    "hello_v2": wire.encode_hello(2, "c"),
    "ping": req(1, wire.ping()),
    "daily_next_full": req(7, wire.daily_next("123", "Asia/Kolkata", 1767724199000)),
    "daily_get_defaults": req(8, wire.daily_get("u")),
    "conv_next_private": req(9, wire.private_next("a", "b")),
    # E-mail-like ids: the admitted alphabet's wider classes.
    "daily_next_email_user": req(60, wire.daily_next("alice+orders@example.com")),
    "conv_next_private_email": req(61, wire.private_next("bob@example.com", "alice+orders@example.com")),
    "conv_get_group": req(10, wire.group_get("g")),
    "health": req(11, wire.health()),
    "metrics": req(12, wire.metrics()),
    "gap_check": req(13, wire.gap_check("x", "BTC", 5)),
    "gap_batch": req(14, wire.gap_batch([("x", "A", 1), ("x", "A", 3)])),
    "gap_stats": req(15, wire.gap_stats("x", "A")),
    "gap_clear": req(16, wire.gap_clear("x", "A")),
    "gap_clear_all": req(17, wire.gap_clear_all()),
    "cache_get": req(18, wire.cache_get("k")),
    "cache_set": req(19, wire.cache_set("k", b"v", 5000)),
    "cache_del": req(20, wire.cache_del(["a", "b"])),
    "cache_del_prefix": req(21, wire.cache_del_prefix("user:1:")),
    "cache_get_many": req(22, wire.cache_get_many(["a", "b"])),
    "cache_set_many": req(23, wire.cache_set_many([CacheItem("a", b"\x00\xff"), CacheItem("b", b"", 1)])),
    "info": req(24, wire.info()),
}


def ok(rid, answer):
    return wire.Response(rid, answer=answer)


def err(rid, code, message):
    return wire.Response(rid, error=SeqdError(code, message))


# Server messages, as the Python client decodes them.
ANSWERS = {
    "server_hello": wire.ServerHello(1, "s"),
    "pong": ok(1, wire.Pong()),
    "daily_reply": ok(7, DailyNumber(1, 20260106, "redis")),
    "conv_reply_local": ok(9, ConvNumber(300, "local")),
    "health_reply": ok(11, wire.Fields("health", [("redis", "up")])),
    "metrics_reply": ok(12, wire.Metrics("m 1\n")),
    "error_reply": err(5, "invalid_argument", "bad"),
    "gap_reply": ok(13, GapResult("gap", 105, 101, 4, None, "redis")),
    "gap_out_of_order_reply": ok(13, GapResult("out_of_order", 102, 106, 0, True, "local")),
    "gap_stats_reply": ok(15, wire.GapStats(StreamStats(105, 1767724199000, 1, 0, [(101, 104)], "redis"))),
    "gap_stats_none": ok(15, wire.GapStats(None)),
    "done": ok(16, wire.Done()),
    "cleared": ok(17, wire.Cleared(3)),
    "cache_hit": ok(18, wire.CacheValue(b"v")),
    "cache_miss": ok(18, wire.CacheValue(None)),
    "cache_deferred": ok(19, wire.CacheWritten("deferred")),
    "cache_deleted": ok(20, CacheDeleted(2, False)),
    "fatal_version_mismatch": wire.Fatal(SeqdError("version_mismatch", "v")),
    "daily_number_local_host": ok(7, DailyNumber(42, 20261122, "local", 513)),
    "conv_number_redis": ok(9, ConvNumber(300, "redis", None)),
    "conv_reply_redis_v1": ok(9, ConvNumber(7, "redis")),
    "gap_batch_reply": ok(14, wire.GapBatch([
        GapResult("normal", 1, None, 0, None, "redis"),
        GapResult("duplicate", 1, 2, 0, None, "redis"),
    ])),
    "cache_values": ok(22, wire.CacheValues([b"\x00\xff", None])),
    "cache_stored": ok(23, wire.CacheWritten("stored")),
    "cache_invalidated": ok(23, wire.CacheWritten("invalidated")),
    "info_reply": ok(24, wire.Fields("info", [("max_batch", "10000")])),
    "error_invalid_argument": err(25, "invalid_argument", "tz"),
    "error_unknown_command": err(25, "unknown_command", "x"),
    "error_forbidden": err(25, "forbidden", "seq:"),
    "error_too_large": err(25, "too_large", "big"),
    "error_unavailable": err(25, "unavailable", "redis"),
    "error_internal": err(25, "internal", "bug"),
    "fatal_bad_request": wire.Fatal(SeqdError("bad_request", "hello first")),
}


def same(a, b):
    """Equality that compares errors by code and message."""
    if isinstance(a, SeqdError) and isinstance(b, SeqdError):
        return (a.code, a.message) == (b.code, b.message)
    if isinstance(a, (wire.Response, wire.Fatal)) and type(a) is type(b):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


class GoldenVectors(unittest.TestCase):
    def test_every_vector_is_covered(self):
        self.assertEqual(set(load()), set(REQUESTS) | set(ANSWERS))

    def test_requests_encode_to_the_recorded_bytes(self):
        vectors = load()
        for name, encoded in REQUESTS.items():
            with self.subTest(name=name):
                self.assertEqual(encoded.hex(), vectors[name].hex())

    def test_answers_decode_to_the_recorded_values(self):
        vectors = load()
        for name, expected in ANSWERS.items():
            with self.subTest(name=name):
                data = vectors[name]
                self.assertEqual(int.from_bytes(data[:4], "big"), len(data) - 4)
                got = wire.decode_server_message(data[4:])
                self.assertTrue(same(got, expected), f"{got!r} != {expected!r}")

    def test_trailing_bytes_and_truncation_are_refused(self):
        payload = load()["pong"][4:]
        with self.assertRaises(wire.ProtocolError):
            wire.decode_server_message(payload + b"\x00")
        for cut in range(len(payload)):
            with self.assertRaises(wire.ProtocolError):
                wire.decode_server_message(payload[:cut])

    def test_a_length_beyond_the_payload_is_refused_without_allocating(self):
        # Response { id: 1, Ok(Metrics { text }) } whose text claims 2^60 bytes.
        payload = (b"\x01\x00\x00\x00" + (1).to_bytes(8, "little") + b"\x00" * 4
                   + (4).to_bytes(4, "little") + (1 << 60).to_bytes(8, "little"))
        with self.assertRaises(wire.ProtocolError):
            wire.decode_server_message(payload)


if __name__ == "__main__":
    unittest.main()


class Fuzz(unittest.TestCase):
    """Any bytes decode or raise ProtocolError: never another exception."""

    def test_random_payloads_and_mutated_vectors(self):
        import random
        rng = random.Random(1234)
        payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(3000)]
        for data in load().values():
            p = data[4:]
            for i in range(len(p)):
                payloads.append(p[:i])
                payloads.append(p[:i] + bytes([p[i] ^ 0xFF]) + p[i + 1:])
        for p in payloads:
            try:
                wire.decode_server_message(p)
            except wire.ProtocolError:
                pass


class OrderIds(unittest.TestCase):
    def test_order_ids_carry_the_host_of_locally_issued_numbers(self):
        from seqd import DailyNumber, format_order_id

        self.assertEqual(format_order_id(DailyNumber(42, 20261122, "redis")), "ORD-20261122-00042")
        self.assertEqual(format_order_id(DailyNumber(42, 20261122, "local", 7)), "ORD-20261122-L7-00042")
        self.assertEqual(format_order_id(DailyNumber(100000, 20261122, "redis")), "ORD-20261122-100000")


class Docs(unittest.TestCase):
    def test_help_reads_as_plain_text(self):
        import pydoc
        import re

        import seqd

        for obj in (seqd, seqd.Client, seqd.AsyncClient, seqd.wire):
            text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
            self.assertIsNone(re.search(r":(class|meth|data|func|attr|mod):`", text), obj)


class Packaging(unittest.TestCase):
    def test_building_the_wheel_leaves_the_source_tree_as_it_was(self):
        try:
            from flit_core import buildapi
        except ImportError:
            self.skipTest("flit_core is not installed")
        import tempfile

        root = os.path.join(os.path.dirname(__file__), "..")
        before = sorted(os.listdir(root))
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as out:
            os.chdir(root)
            try:
                wheel = buildapi.build_wheel(out)
            finally:
                os.chdir(cwd)
            self.assertTrue(wheel.startswith("seqd-") and wheel.endswith(".whl"), wheel)
            import zipfile

            names = zipfile.ZipFile(os.path.join(out, wheel)).namelist()
            self.assertIn("seqd/py.typed", names)
            self.assertIn("seqd/tracker.py", names)
        self.assertEqual(sorted(os.listdir(root)), before, "the source tree is unchanged")
