"""Each call of the clients as data: the request to send and how to read
its answer, typed. Client and AsyncClient only run them, the one blocking,
the other awaiting, so the two cannot drift apart."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import wire
from .wire import CacheDeleted, CacheItem, ConvNumber, DailyNumber, GapResult, ProtocolError, StreamStats

T = TypeVar("T")

#: A daily request's instant: a timezone-aware datetime (its zone picks
#: the day), milliseconds since the epoch, or None for now.
DayArg = Union[_dt.datetime, int, None]
#: A gap event: ``(exchange, symbol, sequence[, timestamp])``.
Event = Union[Tuple[str, str, int], Tuple[str, str, int, Any]]


@dataclass(frozen=True)
class Op(Generic[T]):
    """A request and how to read its answer; without a request, the answer
    is known without asking seqd (an empty batch)."""

    request: Optional[wire.Request]
    convert: Callable[[Any], T]


def _expect(answer: Any, kind: Type[T]) -> T:
    if not isinstance(answer, kind):
        raise ProtocolError(f"unexpected answer {answer!r}")
    return answer


def _ttl_ms(ttl: Optional[float]) -> Optional[int]:
    return None if ttl is None else int(round(ttl * 1000))


def day_args(now: DayArg, tz: Optional[str]) -> Tuple[Optional[str], Optional[int]]:
    """The zone and instant of a daily request. A timezone-aware ``now``
    names its zone (a zoneinfo.ZoneInfo, or UTC) and its instant; an int is
    milliseconds since the epoch; None means now."""
    if now is None or isinstance(now, int):
        return tz, now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (for example datetime.now(ZoneInfo('Asia/Kolkata')))")
    if tz is None:
        key = getattr(now.tzinfo, "key", None)
        if key is None and now.utcoffset() == _dt.timedelta(0):
            key = "UTC"
        if key is None:
            raise ValueError(f"cannot tell the IANA zone of {now.tzinfo!r}: use a zoneinfo.ZoneInfo or pass tz=")
        tz = key
    return tz, int(now.timestamp() * 1000)


def _nothing(kind: Type[Any]) -> Callable[[Any], None]:
    def convert(a: Any) -> None:
        _expect(a, kind)

    return convert


def ping() -> Op[None]:
    return Op(wire.ping(), _nothing(wire.Pong))


def daily_next(user: str, tz: Optional[str], at: DayArg) -> Op[DailyNumber]:
    zone, at_ms = day_args(at, tz)
    return Op(wire.daily_next(user, zone, at_ms), lambda a: _expect(a, DailyNumber))


def daily_get(user: str, tz: Optional[str], at: DayArg) -> Op[DailyNumber]:
    zone, at_ms = day_args(at, tz)
    return Op(wire.daily_get(user, zone, at_ms), lambda a: _expect(a, DailyNumber))


def private_next(a: str, b: str) -> Op[ConvNumber]:
    return Op(wire.private_next(a, b), lambda x: _expect(x, ConvNumber))


def private_get(a: str, b: str) -> Op[ConvNumber]:
    return Op(wire.private_get(a, b), lambda x: _expect(x, ConvNumber))


def group_next(group: str) -> Op[ConvNumber]:
    return Op(wire.group_next(group), lambda x: _expect(x, ConvNumber))


def group_get(group: str) -> Op[ConvNumber]:
    return Op(wire.group_get(group), lambda x: _expect(x, ConvNumber))


def check_sequence(exchange: str, symbol: str, sequence: int) -> Op[GapResult]:
    return Op(wire.gap_check(exchange, symbol, sequence), lambda a: _expect(a, GapResult))


def check_sequence_batch(events: Sequence[Event]) -> Op[List[GapResult]]:
    if not events:
        return Op(None, lambda _: [])
    triples = [(e[0], e[1], e[2]) for e in events]
    return Op(wire.gap_batch(triples), lambda a: _expect(a, wire.GapBatch).results)


def get_stats(exchange: str, symbol: str) -> Op[Optional[StreamStats]]:
    return Op(wire.gap_stats(exchange, symbol), lambda a: _expect(a, wire.GapStats).stats)


def clear_symbol(exchange: str, symbol: str) -> Op[None]:
    return Op(wire.gap_clear(exchange, symbol), _nothing(wire.Done))


def clear_all() -> Op[int]:
    return Op(wire.gap_clear_all(), lambda a: _expect(a, wire.Cleared).count)


def get(key: str) -> Op[Optional[bytes]]:
    return Op(wire.cache_get(key), lambda a: _expect(a, wire.CacheValue).value)


def get_many(keys: Sequence[str]) -> Op[List[Optional[bytes]]]:
    return Op(wire.cache_get_many(keys), lambda a: _expect(a, wire.CacheValues).values)


def set_(key: str, value: bytes, ttl: Optional[float]) -> Op[str]:
    return Op(wire.cache_set(key, value, _ttl_ms(ttl)), lambda a: _expect(a, wire.CacheWritten).outcome)


def set_many(items: Union[Dict[str, bytes], Iterable[CacheItem]], ttl: Optional[float]) -> Op[str]:
    if isinstance(items, dict):
        listed = [CacheItem(k, bytes(v), _ttl_ms(ttl)) for k, v in items.items()]
    else:
        listed = list(items)
    return Op(wire.cache_set_many(listed), lambda a: _expect(a, wire.CacheWritten).outcome)


def delete(keys: Sequence[str]) -> Op[CacheDeleted]:
    return Op(wire.cache_del(keys), lambda a: _expect(a, CacheDeleted))


def delete_prefix(prefix: str) -> Op[CacheDeleted]:
    return Op(wire.cache_del_prefix(prefix), lambda a: _expect(a, CacheDeleted))


def health() -> Op[Dict[str, str]]:
    return Op(wire.health(), lambda a: _expect(a, wire.Fields).as_dict())


def info() -> Op[Dict[str, str]]:
    return Op(wire.info(), lambda a: _expect(a, wire.Fields).as_dict())


def metrics() -> Op[str]:
    return Op(wire.metrics(), lambda a: _expect(a, wire.Metrics).text)
