"""Blocking and asyncio clients for seqd's binary protocol.

A Client holds one Unix-socket connection. Calls are blocking; many
requests can go in one write with Client.pipeline(). After the
connection breaks, the next call reconnects, and a call that failed because
the connection broke is retried once on a new one: a ``*_next`` whose reply
was lost then skips a number, it never repeats one. Errors answered by seqd
raise SeqdError with its ``code`` (a subclass per code:
Unavailable, InvalidArgument, ...);
when seqd cannot be reached at all, Unavailable names
the socket. A Client may be shared between threads: a lock lets
one exchange run at a time, so threads sharing one client wait for each
other (open one per thread for parallel requests; connections are
cheap). An AsyncClient may be awaited from many tasks at once, in
the same way.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import socket
import struct
import threading
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _ops, wire
from ._ops import DayArg, Event, Op
from .wire import (
    CacheDeleted,
    CacheItem,
    ConvNumber,
    DailyNumber,
    GapResult,
    ProtocolError,
    SeqdError,
    StreamStats,
    TooLarge,
    Unavailable,
)

DEFAULT_SOCKET = "/run/seqd/seqd.sock"
DEFAULT_TIMEOUT = 5.0
#: Requests, and request bytes, sent before their answers are read: the
#: daemon stops reading a connection while 256 KiB of its answers are
#: unsent, so a client must read while it writes (PROTOCOL.md §1.6).
WINDOW_REQUESTS = 128
WINDOW_BYTES = 64 * 1024

T = TypeVar("T")


class NotInvalidated(Exception):
    """Raised by ``write_through`` when the database **was written** but
    the cache could be neither updated nor invalidated before the call's
    deadline (seqd stayed unreachable). Readers may get the old value until
    the key is invalidated: call ``delete(key)`` once seqd is back, or let
    its TTL run out. ``written`` is what ``db_write`` returned; ``cause``
    the last error of the cache step."""

    def __init__(self, key: str, written: Any, cause: BaseException):
        super().__init__(f"database written, but the cache key {key!r} was not invalidated: {cause}")
        self.key = key
        self.written = written
        self.cause = cause


def _unavailable(e: BaseException) -> bool:
    """True when ``e`` means the cache cannot be reached or cannot answer
    now: seqd not running or the connection broken (``OSError``), or an
    ``unavailable`` answer."""
    if isinstance(e, SeqdError):
        return e.code == "unavailable"
    return isinstance(e, OSError)


class _WriteThrough:
    """What a write-through's cache step does after each failure, for both
    clients: try again after a pause, invalidating (a value set late could
    overwrite a newer writer's), or give up."""

    def __init__(self, key: str, written: Any, has_value: bool, window: float):
        self.key = key
        self.written = written
        self.deadline = time.monotonic() + window
        self.pause = 0.01
        self.set = has_value

    def failed(self, e: BaseException) -> float:
        """The pause before the next try; raises when there is none."""
        retry = _unavailable(e)
        if not retry and not self.set:
            raise e  # a key the cache refuses holds no value
        was_set, self.set = self.set, False
        if not retry and was_set:
            return 0.0  # a refused SET (too large) leaves the old value
        pause = self.pause
        if time.monotonic() + pause >= self.deadline:
            raise NotInvalidated(self.key, self.written, e) from e
        self.pause = min(self.pause * 2, 0.2)
        return pause


class _Exchange:
    """What Client and AsyncClient share of an exchange with seqd: the
    hello's outcome, the windows of requests, the filing of answers. The
    calls themselves are in _ops; each client runs them its way."""

    version: int
    max_frame: int
    _next_id: int

    def _hello_done(self, msg: Any) -> bool:
        """After the answer to a hello: True when connected, False to say
        hello again (a daemon older than this client: protocol 1)."""
        if isinstance(msg, wire.ServerHello):
            return True
        if isinstance(msg, wire.Fatal):
            if msg.error.code == "version_mismatch" and self.version > wire.MIN_PROTOCOL_VERSION:
                self.version = wire.MIN_PROTOCOL_VERSION
                return False
            raise msg.error
        raise ProtocolError(f"unexpected answer to hello: {msg!r}")

    def _window(self, requests: Sequence[wire.Request], i: int, results: List[Any]) -> Tuple[bytes, Dict[int, int], int]:
        """The frames of the next window of requests from ``i``, the ids
        they wait for, and where the next window starts. A request over the
        frame limit fails here (seqd would close the connection over it)."""
        out = bytearray()
        ids: Dict[int, int] = {}
        while i < len(requests) and len(ids) < WINDOW_REQUESTS and len(out) < WINDOW_BYTES:
            rid = self._next_id
            self._next_id += 1
            frame = wire.encode_request(rid, requests[i])
            if len(frame) - 4 > self.max_frame:
                results[i] = _too_large(len(frame) - 4, self.max_frame)
            else:
                out += frame
                ids[rid] = i
            i += 1
        return bytes(out), ids, i

    @staticmethod
    def _accept(msg: Any, ids: Dict[int, int], results: List[Any]) -> None:
        """Files one answer of a window under its request."""
        if isinstance(msg, wire.Fatal):
            raise msg.error
        if not isinstance(msg, wire.Response) or msg.id not in ids:
            raise ProtocolError(f"unexpected message {msg!r}")
        results[ids.pop(msg.id)] = msg.error if msg.error is not None else msg.answer


def _too_large(size: int, limit: int) -> SeqdError:
    return TooLarge("too_large", f"request of {size} bytes is over the frame limit of {limit}; not sent")


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("seqd closed the connection")
        buf += chunk
    return bytes(buf)


def _unreachable(path: str, e: BaseException) -> Unavailable:
    """seqd could not be reached or did not answer: an Unavailable
    naming the socket."""
    if isinstance(e, Unavailable):
        return e
    if isinstance(e, (TimeoutError, asyncio.TimeoutError, socket.timeout)):
        why = "did not answer in time"
    else:
        why = f"is not reachable ({e})"
    return Unavailable("unavailable", f"seqd at {path} {why}")


def _not_up_yet(e: BaseException) -> bool:
    """True for a socket that is missing or refuses: seqd not started yet
    (a sidecar starting beside its application), or restarting."""
    return isinstance(e, (FileNotFoundError, ConnectionRefusedError))


class Client(_Exchange):
    """A blocking connection to seqd (see the module docs). Connecting
    waits for a seqd that is not up yet, for up to ``timeout``."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 max_frame: int = wire.DEFAULT_MAX_FRAME):
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self.version = wire.PROTOCOL_VERSION
        self._next_id = 1
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        deadline = time.monotonic() + (timeout or DEFAULT_TIMEOUT)
        pause = 0.01
        while True:
            try:
                self._sock = self._open()
                return
            except OSError as e:
                if not _not_up_yet(e) or time.monotonic() >= deadline:
                    raise _unreachable(path, e) from e
                pause = min(pause, max(deadline - time.monotonic(), 0.0))
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    # -- connection
    def _open(self) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                sock.sendall(wire.encode_hello(self.version, "seqd-python/0.1"))
                msg = self._read(sock)
            except BaseException:
                sock.close()
                raise
            try:
                if self._hello_done(msg):
                    return sock
            except BaseException:
                sock.close()
                raise
            sock.close()

    def _read(self, sock: socket.socket) -> wire.ServerMessage:
        (n,) = struct.unpack(">I", _read_exact(sock, 4))
        if n > self.max_frame:
            raise ProtocolError(f"frame of {n} bytes is over the limit of {self.max_frame}")
        return wire.decode_server_message(_read_exact(sock, n))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- exchanges
    def pipeline(self, requests: Sequence[wire.Request]) -> List[Union[Any, SeqdError]]:
        """Sends many requests and returns one answer per request, in order:
        the decoded answer, or the SeqdError it failed with (not
        raised). Requests go in windows, each window's answers read before
        the next is sent."""
        with self._lock:
            try:
                return self._pipeline(requests)
            except OSError:
                # Broken connection (or a restarted daemon): once more on a
                # new one.
                self.close()
                try:
                    return self._pipeline(requests)
                except OSError as e:
                    raise _unreachable(self.path, e) from e

    def _pipeline(self, requests: Sequence[wire.Request]) -> List[Union[Any, SeqdError]]:
        if self._sock is None:
            self._sock = self._open()
        sock = self._sock
        results: List[Any] = [None] * len(requests)
        try:
            i = 0
            while i < len(requests):
                out, ids, i = self._window(requests, i, results)
                sock.sendall(out)
                while ids:
                    self._accept(self._read(sock), ids, results)
        except BaseException:
            # A broken, confused or timed-out exchange: start over next time.
            self.close()
            raise
        return results

    def request(self, request: wire.Request) -> Any:
        """One request; its answer, or raises its SeqdError."""
        (result,) = self.pipeline([request])
        if isinstance(result, SeqdError):
            raise result
        return result

    def _run(self, op: Op[T]) -> T:
        return op.convert(None if op.request is None else self.request(op.request))

    # -- the calls (see _ops)
    def ping(self) -> None:
        return self._run(_ops.ping())

    def daily_next(self, user: str, tz: Optional[str] = None, at: DayArg = None) -> DailyNumber:
        """Issues the next daily number of ``user`` for the local date of ``at`` (default now) in ``tz`` (default: the zone of ``at``, else seqd's)."""
        return self._run(_ops.daily_next(user, tz, at))

    def daily_get(self, user: str, tz: Optional[str] = None, at: DayArg = None) -> DailyNumber:
        """The current daily number of ``user`` (0 when none was issued)."""
        return self._run(_ops.daily_get(user, tz, at))

    def private_next(self, a: str, b: str) -> ConvNumber:
        """Next number of the private chat of ``a`` and ``b`` (either order)."""
        return self._run(_ops.private_next(a, b))

    def private_get(self, a: str, b: str) -> ConvNumber:
        """Current number of the private chat of ``a`` and ``b``."""
        return self._run(_ops.private_get(a, b))

    def group_next(self, group: str) -> ConvNumber:
        """Next number of group chat ``group``."""
        return self._run(_ops.group_next(group))

    def group_get(self, group: str) -> ConvNumber:
        """Current number of group chat ``group``."""
        return self._run(_ops.group_get(group))

    def check_sequence(self, exchange: str, symbol: str, sequence: int, timestamp: Any = None) -> GapResult:
        """Classifies one market-data sequence number. ``timestamp`` is accepted for the tracker's signature and not sent: seqd stamps state changes itself."""
        return self._run(_ops.check_sequence(exchange, symbol, sequence))

    def check_sequence_batch(self, events: Sequence[Event]) -> List[GapResult]:
        """Classifies ``(exchange, symbol, sequence[, timestamp])`` events in order, atomically; one GapResult per event."""
        return self._run(_ops.check_sequence_batch(events))

    def get_stats(self, exchange: str, symbol: str) -> Optional[StreamStats]:
        """What is known of a stream, None when nothing."""
        return self._run(_ops.get_stats(exchange, symbol))

    def clear_symbol(self, exchange: str, symbol: str) -> None:
        """Forgets one stream."""
        return self._run(_ops.clear_symbol(exchange, symbol))

    def clear_all(self) -> int:
        """Forgets every stream; returns how many."""
        return self._run(_ops.clear_all())

    def get(self, key: str) -> Optional[bytes]:
        """A cached value, None on a miss; Unavailable while Redis is down (read your database)."""
        return self._run(_ops.get(key))

    def get_many(self, keys: Sequence[str]) -> List[Optional[bytes]]:
        """Cached values of ``keys``, in order (None for a miss)."""
        return self._run(_ops.get_many(keys))

    def set(self, key: str, value: bytes, ttl: Optional[float] = None) -> str:
        """Caches ``value`` for ``ttl`` seconds or until invalidated: "stored", "invalidated" or "deferred"."""
        return self._run(_ops.set_(key, value, ttl))

    def set_many(self, items: Union[Dict[str, bytes], Iterable[CacheItem]], ttl: Optional[float] = None) -> str:
        """Caches many values; answers the worst outcome (stored < invalidated < deferred)."""
        return self._run(_ops.set_many(items, ttl))

    def delete(self, *keys: str) -> CacheDeleted:
        """Invalidates keys."""
        return self._run(_ops.delete(keys))

    def delete_prefix(self, prefix: str) -> CacheDeleted:
        """Invalidates every key starting with ``prefix``."""
        return self._run(_ops.delete_prefix(prefix))

    def health(self) -> Dict[str, str]:
        """The daemon's HEALTH fields."""
        return self._run(_ops.health())

    def info(self) -> Dict[str, str]:
        """The daemon's version, protocols, mode, host id and limits."""
        return self._run(_ops.info())

    def metrics(self) -> str:
        """The daemon's metrics in the Prometheus text format."""
        return self._run(_ops.metrics())

    def increment_daily_sequence(self, user_id: Union[str, int], now: _dt.datetime) -> DailyNumber:
        """The next number of ``user_id``'s counter for the local date of ``now`` in ``now``'s zone."""
        return self.daily_next(str(user_id), at=now)

    def get_current_sequence(self, user_id: Union[str, int], now: _dt.datetime) -> DailyNumber:
        """The current number for the local date of ``now``."""
        return self.daily_get(str(user_id), at=now)

    generate_private_chat_sequence = private_next
    generate_group_chat_sequence = group_next

    # -- cache-aside and write-through
    def get_or_load(self, key: str, loader: Callable[[], bytes], ttl: Optional[float] = None) -> bytes:
        """Cache-aside: a hit returns the cached value; a miss calls
        ``loader`` (your database read) and caches its result; while the
        cache is unavailable, ``loader`` alone answers and nothing is cached
        (a value superseded during an outage is never written back)."""
        try:
            value = self.get(key)
        except (SeqdError, OSError) as e:
            if _unavailable(e):
                return loader()
            raise
        if value is not None:
            return value
        value = loader()
        try:
            self.set(key, value, ttl)
        except SeqdError:
            pass  # a failed populate only costs a later miss
        return value

    def write_through(self, key: str, value: Optional[bytes], db_write: Callable[[], Any],
                      ttl: Optional[float] = None) -> Tuple[Any, str]:
        """Write-through: runs ``db_write`` (the database is the truth), then
        caches ``value``, or with ``None`` invalidates the key. Returns the
        database write's result and the cache outcome (``stored``,
        ``invalidated``, ``deferred``). While seqd cannot be reached the
        cache step is tried again, as an invalidation, for up to the
        client's timeout (5 s without one); NotInvalidated says the
        database was written but the cache could not be invalidated."""
        written = db_write()
        steps = _WriteThrough(key, written, value is not None, self.timeout or DEFAULT_TIMEOUT)
        while True:
            try:
                if steps.set and value is not None:
                    return written, self.set(key, value, ttl)
                deleted = self.delete(key)
                return written, "deferred" if deleted.deferred else "invalidated"
            except (SeqdError, OSError) as e:
                time.sleep(steps.failed(e))


class _Pipelined:
    """One asyncio connection: requests are written as they come, a reader
    task hands each answer to its request's future by id (as the Go
    client's reader goroutine does), so many tasks share the connection
    without waiting for each other."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 read: Callable[[asyncio.StreamReader], Awaitable[wire.ServerMessage]]) -> None:
        self.writer = writer
        self.pending: Dict[int, "asyncio.Future[Any]"] = {}
        self.write_lock = asyncio.Lock()
        self.broken: Optional[BaseException] = None
        self.task = asyncio.ensure_future(self._read_all(reader, read))

    async def _read_all(self, reader: asyncio.StreamReader,
                        read: Callable[[asyncio.StreamReader], Awaitable[wire.ServerMessage]]) -> None:
        try:
            while True:
                msg = await read(reader)
                if isinstance(msg, wire.Fatal):
                    raise msg.error
                if not isinstance(msg, wire.Response):
                    raise ProtocolError(f"unexpected message {msg!r}")
                fut = self.pending.pop(msg.id, None)
                # An answer nobody waits for any more (its call timed out)
                # is dropped.
                if fut is not None and not fut.done():
                    fut.set_result(msg.error if msg.error is not None else msg.answer)
        except BaseException as e:  # noqa: BLE001 - every waiter learns it
            self.fail(e if isinstance(e, Exception) else ConnectionError("connection closed"))

    def fail(self, e: BaseException) -> None:
        """The connection is done: every request waiting on it fails."""
        if self.broken is None:
            self.broken = e
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(e)
        self.pending.clear()
        self.writer.close()

    def close(self) -> None:
        self.task.cancel()
        self.fail(ConnectionError("client closed"))


class AsyncClient(_Exchange):
    """The asyncio variant: the same calls, awaited. Many tasks may await
    calls of one client at once: their requests are pipelined on its one
    connection. Reconnects like Client; ``timeout`` bounds every call (a
    call that runs out of it fails with Unavailable; its answer, if it
    comes, is dropped)."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 max_frame: int = wire.DEFAULT_MAX_FRAME):
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self.version = wire.PROTOCOL_VERSION
        self._next_id = 1
        self._conn: Optional[_Pipelined] = None
        # Made in the running loop, on first use: one connect at a time.
        self._connecting: Optional[asyncio.Lock] = None

    @classmethod
    async def connect(cls, path: str = DEFAULT_SOCKET, timeout: Optional[float] = DEFAULT_TIMEOUT) -> "AsyncClient":
        """Connects, waiting for a seqd that is not up yet for up to
        ``timeout``."""
        c = cls(path, timeout)
        deadline = time.monotonic() + (timeout or DEFAULT_TIMEOUT)
        pause = 0.01
        while True:
            try:
                reader, writer = await asyncio.wait_for(c._open(), max(deadline - time.monotonic(), 0.001))
                c._conn = _Pipelined(reader, writer, c._read)
                return c
            except (OSError, asyncio.TimeoutError) as e:
                if not _not_up_yet(e) or time.monotonic() >= deadline:
                    raise _unreachable(path, e) from e
                pause = min(pause, max(deadline - time.monotonic(), 0.0))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _open(self) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            reader, writer = await asyncio.open_unix_connection(self.path)
            writer.write(wire.encode_hello(self.version, "seqd-python-asyncio/0.1"))
            await writer.drain()
            msg = await self._read(reader)
            try:
                if self._hello_done(msg):
                    return reader, writer
            except BaseException:
                writer.close()
                raise
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> wire.ServerMessage:
        try:
            (n,) = struct.unpack(">I", await reader.readexactly(4))
            if n > self.max_frame:
                raise ProtocolError(f"frame of {n} bytes is over the limit of {self.max_frame}")
            return wire.decode_server_message(await reader.readexactly(n))
        except asyncio.IncompleteReadError:
            raise ConnectionError("seqd closed the connection") from None

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _connection(self) -> _Pipelined:
        """The open connection, or a new one (one task connects; the others
        wait for it)."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None or self._conn.broken is not None:
                reader, writer = await self._open()
                self._conn = _Pipelined(reader, writer, self._read)
            return self._conn

    async def pipeline(self, requests: Sequence[wire.Request]) -> List[Union[Any, SeqdError]]:
        """As Client.pipeline(). A connection that breaks under it is
        replaced and the requests sent once more (a ``*_next`` whose answer
        was lost then skips a number, never repeats one)."""
        try:
            return await asyncio.wait_for(self._send_retrying(requests), self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise _unreachable(self.path, e) from e

    async def _send_retrying(self, requests: Sequence[wire.Request]) -> List[Union[Any, SeqdError]]:
        try:
            return await self._send(requests)
        except OSError:
            return await self._send(requests)

    async def _send(self, requests: Sequence[wire.Request]) -> List[Union[Any, SeqdError]]:
        conn = await self._connection()
        loop = asyncio.get_running_loop()
        results: List[Any] = [None] * len(requests)
        waiting: List[Tuple[int, int, "asyncio.Future[Any]"]] = []
        try:
            i = 0
            while i < len(requests):
                out, ids, i = self._window(requests, i, results)
                for rid, at in ids.items():
                    fut: "asyncio.Future[Any]" = loop.create_future()
                    conn.pending[rid] = fut
                    waiting.append((rid, at, fut))
                if conn.broken is not None:
                    raise conn.broken
                async with conn.write_lock:
                    conn.writer.write(out)
                    await conn.writer.drain()
            for _, at, fut in waiting:
                results[at] = await fut
            return results
        except OSError as e:
            conn.fail(e)
            raise
        finally:
            for rid, _, fut in waiting:
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    fut.exception()  # retrieved: one failure was raised for all
                conn.pending.pop(rid, None)

    async def request(self, request: wire.Request) -> Any:
        (result,) = await self.pipeline([request])
        if isinstance(result, SeqdError):
            raise result
        return result

    async def _run(self, op: Op[T]) -> T:
        return op.convert(None if op.request is None else await self.request(op.request))

    # -- the calls (see _ops)
    async def ping(self) -> None:
        """As Client.ping()."""
        return await self._run(_ops.ping())

    async def daily_next(self, user: str, tz: Optional[str] = None, at: DayArg = None) -> DailyNumber:
        """As Client.daily_next()."""
        return await self._run(_ops.daily_next(user, tz, at))

    async def daily_get(self, user: str, tz: Optional[str] = None, at: DayArg = None) -> DailyNumber:
        """As Client.daily_get()."""
        return await self._run(_ops.daily_get(user, tz, at))

    async def private_next(self, a: str, b: str) -> ConvNumber:
        """As Client.private_next()."""
        return await self._run(_ops.private_next(a, b))

    async def private_get(self, a: str, b: str) -> ConvNumber:
        """As Client.private_get()."""
        return await self._run(_ops.private_get(a, b))

    async def group_next(self, group: str) -> ConvNumber:
        """As Client.group_next()."""
        return await self._run(_ops.group_next(group))

    async def group_get(self, group: str) -> ConvNumber:
        """As Client.group_get()."""
        return await self._run(_ops.group_get(group))

    async def check_sequence(self, exchange: str, symbol: str, sequence: int, timestamp: Any = None) -> GapResult:
        """As Client.check_sequence()."""
        return await self._run(_ops.check_sequence(exchange, symbol, sequence))

    async def check_sequence_batch(self, events: Sequence[Event]) -> List[GapResult]:
        """As Client.check_sequence_batch()."""
        return await self._run(_ops.check_sequence_batch(events))

    async def get_stats(self, exchange: str, symbol: str) -> Optional[StreamStats]:
        """As Client.get_stats()."""
        return await self._run(_ops.get_stats(exchange, symbol))

    async def clear_symbol(self, exchange: str, symbol: str) -> None:
        """As Client.clear_symbol()."""
        return await self._run(_ops.clear_symbol(exchange, symbol))

    async def clear_all(self) -> int:
        """As Client.clear_all()."""
        return await self._run(_ops.clear_all())

    async def get(self, key: str) -> Optional[bytes]:
        """As Client.get()."""
        return await self._run(_ops.get(key))

    async def get_many(self, keys: Sequence[str]) -> List[Optional[bytes]]:
        """As Client.get_many()."""
        return await self._run(_ops.get_many(keys))

    async def set(self, key: str, value: bytes, ttl: Optional[float] = None) -> str:
        """As Client.set()."""
        return await self._run(_ops.set_(key, value, ttl))

    async def set_many(self, items: Union[Dict[str, bytes], Iterable[CacheItem]], ttl: Optional[float] = None) -> str:
        """As Client.set_many()."""
        return await self._run(_ops.set_many(items, ttl))

    async def delete(self, *keys: str) -> CacheDeleted:
        """As Client.delete()."""
        return await self._run(_ops.delete(keys))

    async def delete_prefix(self, prefix: str) -> CacheDeleted:
        """As Client.delete_prefix()."""
        return await self._run(_ops.delete_prefix(prefix))

    async def health(self) -> Dict[str, str]:
        """As Client.health()."""
        return await self._run(_ops.health())

    async def info(self) -> Dict[str, str]:
        """As Client.info()."""
        return await self._run(_ops.info())

    async def metrics(self) -> str:
        """As Client.metrics()."""
        return await self._run(_ops.metrics())

    async def increment_daily_sequence(self, user_id: Union[str, int], now: _dt.datetime) -> DailyNumber:
        """As Client.increment_daily_sequence()."""
        return await self.daily_next(str(user_id), at=now)

    async def get_current_sequence(self, user_id: Union[str, int], now: _dt.datetime) -> DailyNumber:
        """As Client.get_current_sequence()."""
        return await self.daily_get(str(user_id), at=now)

    generate_private_chat_sequence = private_next
    generate_group_chat_sequence = group_next

    async def get_or_load(self, key: str, loader: Callable[[], Awaitable[bytes]], ttl: Optional[float] = None) -> bytes:
        """As Client.get_or_load(), with an async ``loader``."""
        try:
            value = await self.get(key)
        except (SeqdError, OSError) as e:
            if _unavailable(e):
                return await loader()
            raise
        if value is not None:
            return value
        value = await loader()
        try:
            await self.set(key, value, ttl)
        except SeqdError:
            pass
        return value

    async def write_through(self, key: str, value: Optional[bytes], db_write: Callable[[], Awaitable[Any]],
                            ttl: Optional[float] = None) -> Tuple[Any, str]:
        """As Client.write_through(), with an async ``db_write``."""
        written = await db_write()
        steps = _WriteThrough(key, written, value is not None, self.timeout or DEFAULT_TIMEOUT)
        while True:
            try:
                if steps.set and value is not None:
                    return written, await self.set(key, value, ttl)
                deleted = await self.delete(key)
                return written, "deferred" if deleted.deferred else "invalidated"
            except (SeqdError, OSError) as e:
                await asyncio.sleep(steps.failed(e))
