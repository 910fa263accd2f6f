"""The binary protocol of seqd: frames, bincode 1.3.3 encoding, messages.

Standard library only. ``protocol/PROTOCOL.md`` is the contract; the golden
vectors in ``protocol/golden/vectors.txt`` pin the bytes (``tests/``).

Requests are built with the functions at the end of this module
(``daily_next(...)``, ``cache_set(...)``, ...), each returning a
Request; answers decode to the dataclasses below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

T = TypeVar("T")

PROTOCOL_VERSION = 2
MIN_PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 8 * 1024 * 1024

ERROR_CODES = (
    "bad_request",
    "invalid_argument",
    "unknown_command",
    "forbidden",
    "too_large",
    "unavailable",
    "internal",
    "version_mismatch",
)
SOURCES = ("redis", "local")
GAP_KINDS = ("normal", "gap", "duplicate", "out_of_order", "reset")
WRITE_OUTCOMES = ("stored", "invalidated", "deferred")


class SeqdError(Exception):
    """An error answered by seqd: ``code`` is one of ERROR_CODES.
    Each code has its subclass (InvalidArgument,
    Unavailable, ...), so ``except seqd.Unavailable`` catches one
    kind and ``except seqd.SeqdError`` every kind."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BadRequest(SeqdError):
    """``bad_request``: a malformed request or frame."""


class InvalidArgument(SeqdError, ValueError):
    """``invalid_argument``: a value is not acceptable (an id's characters,
    a zone, an instant, a number out of range)."""


class UnknownCommand(SeqdError):
    """``unknown_command``."""


class Forbidden(SeqdError):
    """``forbidden``: a key of the counter families, or a peer not allowed."""


class TooLarge(SeqdError):
    """``too_large``: a value, a frame or a batch over its limit."""


class Unavailable(SeqdError, ConnectionError):
    """``unavailable``: seqd cannot serve the call now. Raised too (with
    the socket's path) when seqd cannot be reached at all: not running, not
    up yet, or the connection broke. Cache-aside reads the database on it."""


class Internal(SeqdError):
    """``internal``: a failure inside seqd (or Redis) for this request."""


class VersionMismatch(SeqdError):
    """``version_mismatch``: the daemon speaks no protocol this client does."""


_ERRORS = {
    "bad_request": BadRequest,
    "invalid_argument": InvalidArgument,
    "unknown_command": UnknownCommand,
    "forbidden": Forbidden,
    "too_large": TooLarge,
    "unavailable": Unavailable,
    "internal": Internal,
    "version_mismatch": VersionMismatch,
}


def error_of(code: str, message: str) -> SeqdError:
    """The exception of ``code``: its subclass of SeqdError."""
    return _ERRORS.get(code, SeqdError)(code, message)


class ProtocolError(Exception):
    """Bytes that are not the protocol (a bug on one side, or not seqd)."""


# ---------------------------------------------------------------- encoding


class _Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, v: int) -> None:
        self.buf += struct.pack("<B", v)

    def u32(self, v: int) -> None:
        self.buf += struct.pack("<I", v)

    def u64(self, v: int) -> None:
        if not 0 <= v < 1 << 64:
            raise InvalidArgument("invalid_argument", f"{v} is not a number from 0 to 2^64-1")
        self.buf += struct.pack("<Q", v)

    def i64(self, v: int) -> None:
        if not -(1 << 63) <= v < 1 << 63:
            raise InvalidArgument("invalid_argument", f"{v} is out of the signed 64-bit range")
        self.buf += struct.pack("<q", v)

    def bytes_(self, v: bytes) -> None:
        self.u64(len(v))
        self.buf += v

    def string(self, v: str) -> None:
        self.bytes_(v.encode("utf-8"))

    def option(self, v: Optional[T], put: Callable[[T], None]) -> None:
        if v is None:
            self.u8(0)
        else:
            self.u8(1)
            put(v)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError("payload ends early")
        b = self.data[self.pos : end]
        self.pos = end
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def i64(self) -> int:
        return int(struct.unpack("<q", self.take(8))[0])

    def bool_(self) -> bool:
        b = self.u8()
        if b > 1:
            raise ProtocolError(f"invalid bool {b}")
        return b == 1

    def length(self) -> int:
        n = self.u64()
        if n > len(self.data) - self.pos:
            raise ProtocolError("length runs past the end of the payload")
        return n

    def bytes_(self) -> bytes:
        return bytes(self.take(self.length()))

    def string(self) -> str:
        try:
            return self.bytes_().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"invalid UTF-8: {e}") from None

    def option(self, get: Callable[[], T]) -> Optional[T]:
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return get()
        raise ProtocolError(f"invalid option tag {tag}")

    def vec(self, get: Callable[[], T]) -> List[T]:
        n = self.u64()
        if n > len(self.data) - self.pos:
            raise ProtocolError("count runs past the end of the payload")
        return [get() for _ in range(n)]

    def name(self, names: Sequence[str], what: str) -> str:
        i = self.u32()
        if i >= len(names):
            raise ProtocolError(f"unknown {what} {i}")
        return names[i]


def frame(payload: bytes) -> bytes:
    """A frame: the payload's length as a big-endian u32, then the payload."""
    return struct.pack(">I", len(payload)) + payload


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """One request: its variant index and a function writing its fields."""

    name: str
    index: int
    fields: Tuple[Any, ...] = ()

    def encode(self, w: _Writer) -> None:
        w.u32(self.index)
        encode: Callable[..., None] = _ENCODERS[self.name]
        encode(w, *self.fields)


@dataclass(frozen=True)
class CacheItem:
    key: str
    value: bytes
    ttl_ms: Optional[int] = None


def _daily(w: _Writer, user: str, tz: Optional[str], at_ms: Optional[int]) -> None:
    w.string(user)
    w.option(tz, w.string)
    w.option(at_ms, w.i64)


def _conv(w: _Writer, kind: str, *ids: str) -> None:
    w.u32(0 if kind == "private" else 1)
    for i in ids:
        w.string(i)


def _stream(w: _Writer, exchange: str, symbol: str) -> None:
    w.string(exchange)
    w.string(symbol)


def _event(w: _Writer, exchange: str, symbol: str, seq: int) -> None:
    _stream(w, exchange, symbol)
    w.u64(seq)


def _item(w: _Writer, item: CacheItem) -> None:
    w.string(item.key)
    w.bytes_(bytes(item.value))
    w.option(item.ttl_ms, w.u64)


def _strings(w: _Writer, items: Sequence[str]) -> None:
    w.u64(len(items))
    for s in items:
        w.string(s)


def _none(w: _Writer) -> None:
    pass


def _batch(w: _Writer, events: Sequence[Tuple[str, str, int]]) -> None:
    w.u64(len(events))
    for e in events:
        _event(w, *e)


def _items(w: _Writer, items: Sequence["CacheItem"]) -> None:
    w.u64(len(items))
    for i in items:
        _item(w, i)


_ENCODERS: Dict[str, Callable[..., None]] = {
    "ping": _none,
    "daily_next": _daily,
    "daily_get": _daily,
    "conv_next": _conv,
    "conv_get": _conv,
    "health": _none,
    "metrics": _none,
    "gap_check": _event,
    "gap_batch": _batch,
    "gap_stats": _stream,
    "gap_clear": _stream,
    "gap_clear_all": _none,
    "cache_get": lambda w, key: w.string(key),
    "cache_get_many": _strings,
    "cache_set": _item,
    "cache_set_many": _items,
    "cache_del": _strings,
    "cache_del_prefix": lambda w, prefix: w.string(prefix),
    "info": _none,
}
#: Request names in variant-index order (``Info``'s ``requests``).
REQUEST_NAMES = tuple(_ENCODERS)


def _req(name: str, *fields: Any) -> Request:
    return Request(name, REQUEST_NAMES.index(name), tuple(fields))


def ping() -> Request:
    return _req("ping")


def daily_next(user: str, tz: Optional[str] = None, at_ms: Optional[int] = None) -> Request:
    return _req("daily_next", user, tz, at_ms)


def daily_get(user: str, tz: Optional[str] = None, at_ms: Optional[int] = None) -> Request:
    return _req("daily_get", user, tz, at_ms)


def private_next(a: str, b: str) -> Request:
    return _req("conv_next", "private", a, b)


def private_get(a: str, b: str) -> Request:
    return _req("conv_get", "private", a, b)


def group_next(group: str) -> Request:
    return _req("conv_next", "group", group)


def group_get(group: str) -> Request:
    return _req("conv_get", "group", group)


def health() -> Request:
    return _req("health")


def metrics() -> Request:
    return _req("metrics")


def info() -> Request:
    return _req("info")


def gap_check(exchange: str, symbol: str, seq: int) -> Request:
    return _req("gap_check", exchange, symbol, seq)


def gap_batch(events: Sequence[Tuple[str, str, int]]) -> Request:
    return _req("gap_batch", [tuple(e[:3]) for e in events])


def gap_stats(exchange: str, symbol: str) -> Request:
    return _req("gap_stats", exchange, symbol)


def gap_clear(exchange: str, symbol: str) -> Request:
    return _req("gap_clear", exchange, symbol)


def gap_clear_all() -> Request:
    return _req("gap_clear_all")


def cache_get(key: str) -> Request:
    return _req("cache_get", key)


def cache_get_many(keys: Sequence[str]) -> Request:
    return _req("cache_get_many", list(keys))


def cache_set(key: str, value: bytes, ttl_ms: Optional[int] = None) -> Request:
    return _req("cache_set", CacheItem(key, bytes(value), ttl_ms))


def cache_set_many(items: Sequence[CacheItem]) -> Request:
    return _req("cache_set_many", list(items))


def cache_del(keys: Sequence[str]) -> Request:
    return _req("cache_del", list(keys))


def cache_del_prefix(prefix: str) -> Request:
    return _req("cache_del_prefix", prefix)


def encode_hello(version: int = PROTOCOL_VERSION, client: str = "seqd-python") -> bytes:
    """The hello frame that opens a binary connection."""
    w = _Writer()
    w.u32(0)
    w.u32(version)
    w.string(client)
    return frame(bytes(w.buf))


def encode_request(request_id: int, request: Request) -> bytes:
    """One request frame."""
    w = _Writer()
    w.u32(1)
    w.u64(request_id)
    request.encode(w)
    return frame(bytes(w.buf))


# ---------------------------------------------------------------- answers


@dataclass(frozen=True)
class DailyNumber:
    """A daily number. ``day`` is the local date as YYYYMMDD; ``host`` is the
    id of the host that issued it from its store while Redis could not
    answer (``None``: from Redis, a read, or local mode)."""

    seq: int
    day: int
    source: str
    host: Optional[int] = None


def format_daily_seq(seq: int) -> str:
    """A daily number in the 5-digit form of order ids (``00042``); past
    99999 it keeps all its digits (``100000``): it never wraps."""
    return f"{seq:05d}"


def format_order_id(n: "DailyNumber") -> str:
    """An order id that stays unique across a fleet of hosts sharing one
    Redis: ``ORD-20261122-00042`` for a number from Redis (or local mode),
    ``ORD-20261122-L7-00042`` for one host 7 issued from its local store
    while Redis could not answer (another host may have handed out the bare
    ``00042`` meanwhile, never with ``L7``). Build order ids with it, never
    from ``seq`` alone."""
    if n.host is not None:
        return f"ORD-{n.day}-L{n.host}-{format_daily_seq(n.seq)}"
    return f"ORD-{n.day}-{format_daily_seq(n.seq)}"


@dataclass(frozen=True)
class ConvNumber:
    """A conversation's message number (``host`` as in DailyNumber)."""

    seq: int
    source: str
    host: Optional[int] = None


@dataclass(frozen=True)
class GapResult:
    """How a market-data sequence number relates to its stream (the tracker's
    ``SequenceResult``): ``kind`` is one of GAP_KINDS."""

    kind: str
    seq: int
    expected: Optional[int]
    gap: int
    filled: Optional[bool]
    source: str


@dataclass(frozen=True)
class StreamStats:
    last_seq: int
    last_ts_ms: int
    gap_count: int
    reset_count: int
    missing: List[Tuple[int, int]] = field(default_factory=list)
    source: str = "redis"


@dataclass(frozen=True)
class CacheDeleted:
    """Keys removed now, and whether the removal was queued (Redis down)."""

    count: int
    deferred: bool


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Cleared:
    count: int


@dataclass(frozen=True)
class Fields:
    """``Health`` or ``Info``: ordered name=value pairs."""

    kind: str
    pairs: List[Tuple[str, str]]

    def as_dict(self) -> Dict[str, str]:
        return dict(self.pairs)


@dataclass(frozen=True)
class Metrics:
    text: str


@dataclass(frozen=True)
class CacheValue:
    value: Optional[bytes]


@dataclass(frozen=True)
class CacheValues:
    values: List[Optional[bytes]]


@dataclass(frozen=True)
class CacheWritten:
    outcome: str


@dataclass(frozen=True)
class GapStats:
    stats: Optional[StreamStats]


@dataclass(frozen=True)
class GapBatch:
    results: List[GapResult]


Answer = Union[
    Pong, DailyNumber, ConvNumber, Fields, Metrics, GapResult, GapBatch, GapStats,
    Done, Cleared, CacheValue, CacheValues, CacheWritten, CacheDeleted,
]


@dataclass(frozen=True)
class ServerHello:
    version: int
    server: str


@dataclass(frozen=True)
class Response:
    """The answer to request ``id``: ``answer``, or ``error`` when it failed."""

    id: int
    answer: Optional[Answer] = None
    error: Optional[SeqdError] = None


@dataclass(frozen=True)
class Fatal:
    """A connection-level error; the daemon closes after sending it."""

    error: SeqdError


def _source(r: _Reader) -> str:
    return r.name(SOURCES, "source")


def _gap_result(r: _Reader) -> GapResult:
    return GapResult(
        kind=r.name(GAP_KINDS, "gap kind"),
        seq=r.u64(),
        expected=r.option(r.u64),
        gap=r.u64(),
        filled=r.option(r.bool_),
        source=_source(r),
    )


def _stats(r: _Reader) -> StreamStats:
    return StreamStats(
        last_seq=r.u64(),
        last_ts_ms=r.i64(),
        gap_count=r.u64(),
        reset_count=r.u64(),
        missing=r.vec(lambda: (r.u64(), r.u64())),
        source=_source(r),
    )


def _pairs(r: _Reader) -> List[Tuple[str, str]]:
    return r.vec(lambda: (r.string(), r.string()))


def _answer(r: _Reader) -> Answer:
    i = r.u32()
    if i == 0:
        return Pong()
    if i == 1:
        return DailyNumber(r.u64(), r.u32(), _source(r))
    if i == 2:
        return ConvNumber(r.u64(), _source(r))
    if i == 3:
        return Fields("health", _pairs(r))
    if i == 4:
        return Metrics(r.string())
    if i == 5:
        return _gap_result(r)
    if i == 6:
        return GapBatch(r.vec(lambda: _gap_result(r)))
    if i == 7:
        return GapStats(r.option(lambda: _stats(r)))
    if i == 8:
        return Done()
    if i == 9:
        return Cleared(r.u64())
    if i == 10:
        return CacheValue(r.option(r.bytes_))
    if i == 11:
        return CacheValues(r.vec(lambda: r.option(r.bytes_)))
    if i == 12:
        return CacheWritten(r.name(WRITE_OUTCOMES, "write outcome"))
    if i == 13:
        return CacheDeleted(r.u64(), r.bool_())
    if i == 14:
        return DailyNumber(r.u64(), r.u32(), _source(r), r.option(r.u16))
    if i == 15:
        return ConvNumber(r.u64(), _source(r), r.option(r.u16))
    if i == 16:
        return Fields("info", _pairs(r))
    raise ProtocolError(f"unknown response variant {i}")


def _error(r: _Reader) -> SeqdError:
    code = r.name(ERROR_CODES, "error code")
    return error_of(code, r.string())


#: What a frame from the daemon decodes to.
ServerMessage = Union["ServerHello", "Response", "Fatal"]


def decode_server_message(payload: bytes) -> ServerMessage:
    """Decodes one frame's payload from the daemon."""
    r = _Reader(payload)
    kind = r.u32()
    if kind == 0:
        msg: Union[ServerHello, Response, Fatal] = ServerHello(r.u32(), r.string())
    elif kind == 1:
        rid = r.u64()
        tag = r.u32()
        if tag == 0:
            msg = Response(rid, answer=_answer(r))
        elif tag == 1:
            msg = Response(rid, error=_error(r))
        else:
            raise ProtocolError(f"invalid result tag {tag}")
    elif kind == 2:
        msg = Fatal(_error(r))
    else:
        raise ProtocolError(f"unknown server message {kind}")
    if r.pos != len(payload):
        raise ProtocolError("trailing bytes after the message")
    return msg
