package seqd

// The binary protocol: frames, bincode 1.3.3 encoding, messages.
// protocol/PROTOCOL.md is the contract; protocol/golden/vectors.txt pins
// the bytes (wire_test.go).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ProtocolVersion is the newest protocol this client speaks; it says
// hello with it and falls back to MinProtocolVersion for an older daemon.
const (
	ProtocolVersion    = 2
	MinProtocolVersion = 1
	DefaultMaxFrame    = 8 * 1024 * 1024
)

// Error codes of both protocols (PROTOCOL.md §1.3).
const (
	CodeBadRequest      = "bad_request"
	CodeInvalidArgument = "invalid_argument"
	CodeUnknownCommand  = "unknown_command"
	CodeForbidden       = "forbidden"
	CodeTooLarge        = "too_large"
	CodeUnavailable     = "unavailable"
	CodeInternal        = "internal"
	CodeVersionMismatch = "version_mismatch"
)

// Where a number came from (DailyNumber.Source, ConvNumber.Source,
// GapResult.Source).
const (
	SourceRedis = "redis"
	SourceLocal = "local"
)

// What a gap check found (GapResult.Kind).
const (
	KindNormal     = "normal"
	KindGap        = "gap"
	KindDuplicate  = "duplicate"
	KindOutOfOrder = "out_of_order"
	KindReset      = "reset"
)

// What a cache write did (Set, SetMany, WriteThrough).
const (
	OutcomeStored      = "stored"
	OutcomeInvalidated = "invalidated"
	OutcomeDeferred    = "deferred"
)

var errorCodes = []string{CodeBadRequest, CodeInvalidArgument, CodeUnknownCommand, CodeForbidden,
	CodeTooLarge, CodeUnavailable, CodeInternal, CodeVersionMismatch}
var sources = []string{SourceRedis, SourceLocal}
var gapKinds = []string{KindNormal, KindGap, KindDuplicate, KindOutOfOrder, KindReset}
var writeOutcomes = []string{OutcomeStored, OutcomeInvalidated, OutcomeDeferred}

// Error is an error answered by seqd. Use errors.As to get its Code, or
// errors.Is with an *Error holding just a Code to test for one
// (errors.Is(err, &seqd.Error{Code: seqd.CodeInvalidArgument})).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Is matches ErrUnavailable for an "unavailable" answer, and an *Error
// with the same Code (and the same Message, when the target has one).
func (e *Error) Is(target error) bool {
	if target == ErrUnavailable {
		return e.Code == CodeUnavailable
	}
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// ErrUnavailable is matched (errors.Is) by every error that means seqd
// cannot serve the call now, whatever the cause: its socket is absent or
// refuses connections (seqd stopped or not started yet), the connection
// broke, or seqd answered "unavailable" (say, a cache read while Redis is
// out of reach). Cache-aside reads the database on it.
var ErrUnavailable = errors.New("seqd unavailable")

// ErrProtocol wraps bytes that are not the protocol.
var ErrProtocol = errors.New("seqd protocol error")

func protoErr(format string, args ...interface{}) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// ---------------------------------------------------------------- encoding

type writer struct{ buf []byte }

func (w *writer) u8(v uint8)   { w.buf = append(w.buf, v) }
func (w *writer) u32(v uint32) { w.buf = binary.LittleEndian.AppendUint32(w.buf, v) }
func (w *writer) u64(v uint64) { w.buf = binary.LittleEndian.AppendUint64(w.buf, v) }
func (w *writer) i64(v int64)  { w.u64(uint64(v)) }
func (w *writer) bytes(v []byte) {
	w.u64(uint64(len(v)))
	w.buf = append(w.buf, v...)
}
func (w *writer) str(v string) {
	w.u64(uint64(len(v)))
	w.buf = append(w.buf, v...)
}
func (w *writer) optStr(v *string) {
	if v == nil {
		w.u8(0)
		return
	}
	w.u8(1)
	w.str(*v)
}
func (w *writer) optI64(v *int64) {
	if v == nil {
		w.u8(0)
		return
	}
	w.u8(1)
	w.i64(*v)
}
func (w *writer) optU64(v *uint64) {
	if v == nil {
		w.u8(0)
		return
	}
	w.u8(1)
	w.u64(*v)
}

type reader struct {
	data []byte
	pos  int
	err  error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.data)-r.pos {
		r.err = protoErr("payload ends early")
		return nil
	}
	b := r.data[r.pos : r.pos+n]
	r.pos += n
	return b
}
func (r *reader) u8() uint8 {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}
func (r *reader) u16() uint16 {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}
func (r *reader) u32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}
func (r *reader) u64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}
func (r *reader) i64() int64 { return int64(r.u64()) }
func (r *reader) boolean() bool {
	b := r.u8()
	if b > 1 && r.err == nil {
		r.err = protoErr("invalid bool %d", b)
	}
	return b == 1
}
func (r *reader) length() int {
	n := r.u64()
	if r.err == nil && n > uint64(len(r.data)-r.pos) {
		r.err = protoErr("length runs past the end of the payload")
		return 0
	}
	return int(n)
}
func (r *reader) bytes() []byte {
	b := r.take(r.length())
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}
func (r *reader) str() string {
	b := r.take(r.length())
	if r.err == nil && !utf8.Valid(b) {
		r.err = protoErr("invalid UTF-8")
	}
	return string(b)
}
func (r *reader) some() bool {
	tag := r.u8()
	if tag > 1 && r.err == nil {
		r.err = protoErr("invalid option tag %d", tag)
	}
	return tag == 1
}
func (r *reader) count() int {
	n := r.u64()
	if r.err == nil && n > uint64(len(r.data)-r.pos) {
		r.err = protoErr("count runs past the end of the payload")
		return 0
	}
	return int(n)
}
func (r *reader) name(names []string, what string) string {
	i := r.u32()
	if r.err != nil {
		return ""
	}
	if int(i) >= len(names) {
		r.err = protoErr("unknown %s %d", what, i)
		return ""
	}
	return names[i]
}

// frame prefixes a payload with its length (big-endian u32).
func frame(payload []byte) []byte {
	out := make([]byte, 4, 4+len(payload))
	binary.BigEndian.PutUint32(out, uint32(len(payload)))
	return append(out, payload...)
}

// ---------------------------------------------------------------- requests

// request is one request of the binary protocol; build it with the
// functions below (DailyNextRequest, CacheSetRequest, ...).
type request struct {
	index  uint32
	encode func(w *writer)
}

// CacheItem is a value to cache; TTL 0 keeps it until invalidated.
type CacheItem struct {
	Key   string
	Value []byte
	TTL   uint64 // milliseconds; 0 = none
}

// GapEvent is one market-data sequence number of a stream.
type GapEvent struct {
	Exchange, Symbol string
	Seq              uint64
}

// requestNames are the requests by name, in variant-index order (Info's
// "requests").
var requestNames = []string{"ping", "daily_next", "daily_get", "conv_next", "conv_get", "health",
	"metrics", "gap_check", "gap_batch", "gap_stats", "gap_clear", "gap_clear_all", "cache_get",
	"cache_get_many", "cache_set", "cache_set_many", "cache_del", "cache_del_prefix", "info"}

func nothing(*writer) {}

func dailyQuery(user string, tz *string, atMs *int64) func(*writer) {
	return func(w *writer) {
		w.str(user)
		w.optStr(tz)
		w.optI64(atMs)
	}
}

func streamFields(exchange, symbol string) func(*writer) {
	return func(w *writer) {
		w.str(exchange)
		w.str(symbol)
	}
}

func (e GapEvent) encode(w *writer) {
	w.str(e.Exchange)
	w.str(e.Symbol)
	w.u64(e.Seq)
}

func (i CacheItem) encode(w *writer) {
	w.str(i.Key)
	w.bytes(i.Value)
	if i.TTL == 0 {
		w.u8(0)
	} else {
		w.u8(1)
		w.u64(i.TTL)
	}
}

func stringsField(items []string) func(*writer) {
	return func(w *writer) {
		w.u64(uint64(len(items)))
		for _, s := range items {
			w.str(s)
		}
	}
}

func pingRequest() request    { return request{0, nothing} }
func healthRequest() request  { return request{5, nothing} }
func metricsRequest() request { return request{6, nothing} }
func infoRequest() request    { return request{18, nothing} }

// DailyNextRequest issues the next daily number of user; tz nil = the
// daemon's default zone, atMs nil = now.
func dailyNextRequest(user string, tz *string, atMs *int64) request {
	return request{1, dailyQuery(user, tz, atMs)}
}
func dailyGetRequest(user string, tz *string, atMs *int64) request {
	return request{2, dailyQuery(user, tz, atMs)}
}
func private(a, b string) func(*writer) {
	return func(w *writer) { w.u32(0); w.str(a); w.str(b) }
}
func group(g string) func(*writer) {
	return func(w *writer) { w.u32(1); w.str(g) }
}
func privateNextRequest(a, b string) request { return request{3, private(a, b)} }
func privateGetRequest(a, b string) request  { return request{4, private(a, b)} }
func groupNextRequest(g string) request      { return request{3, group(g)} }
func groupGetRequest(g string) request       { return request{4, group(g)} }
func gapCheckRequest(exchange, symbol string, seq uint64) request {
	return request{7, GapEvent{exchange, symbol, seq}.encode}
}
func gapBatchRequest(events []GapEvent) request {
	return request{8, func(w *writer) {
		w.u64(uint64(len(events)))
		for _, e := range events {
			e.encode(w)
		}
	}}
}
func gapStatsRequest(exchange, symbol string) request {
	return request{9, streamFields(exchange, symbol)}
}
func gapClearRequest(exchange, symbol string) request {
	return request{10, streamFields(exchange, symbol)}
}
func gapClearAllRequest() request { return request{11, nothing} }
func cacheGetRequest(key string) request {
	return request{12, func(w *writer) { w.str(key) }}
}
func cacheGetManyRequest(keys []string) request { return request{13, stringsField(keys)} }
func cacheSetRequest(item CacheItem) request    { return request{14, item.encode} }
func cacheSetManyRequest(items []CacheItem) request {
	return request{15, func(w *writer) {
		w.u64(uint64(len(items)))
		for _, i := range items {
			i.encode(w)
		}
	}}
}
func cacheDelRequest(keys []string) request { return request{16, stringsField(keys)} }
func cacheDelPrefixRequest(prefix string) request {
	return request{17, func(w *writer) { w.str(prefix) }}
}

// encodeHello is the frame that opens a binary connection.
func encodeHello(version uint32, client string) []byte {
	w := &writer{}
	w.u32(0)
	w.u32(version)
	w.str(client)
	return frame(w.buf)
}

// encodeRequest is one request frame with the given id.
func encodeRequest(id uint64, req request) []byte {
	w := &writer{buf: make([]byte, 0, 64)}
	w.u32(1)
	w.u64(id)
	w.u32(req.index)
	req.encode(w)
	return frame(w.buf)
}

// ---------------------------------------------------------------- answers

// DailyNumber is a daily number: Day is the local date as YYYYMMDD, Host
// the id of the host that issued it from its store while Redis could not
// answer (nil: from Redis, a read, or local mode).
type DailyNumber struct {
	Seq    uint64
	Day    uint32
	Source string
	Host   *uint16
}

// FormatDailySeq formats a daily number in the 5-digit form of order ids
// ("00042"); past 99999 it keeps all its digits ("100000"): it never wraps.
func FormatDailySeq(seq uint64) string { return fmt.Sprintf("%05d", seq) }

// FormatOrderID builds an order id that stays unique across a fleet of
// hosts sharing one Redis: "ORD-20261122-00042" for a number from Redis
// (or local mode), "ORD-20261122-L7-00042" for one host 7 issued from its
// local store while Redis could not answer — another host may have handed
// out the bare 00042 meanwhile, never with L7. Build order ids with it,
// never from Seq alone.
func FormatOrderID(n DailyNumber) string {
	if n.Host != nil {
		return fmt.Sprintf("ORD-%d-L%d-%s", n.Day, *n.Host, FormatDailySeq(n.Seq))
	}
	return fmt.Sprintf("ORD-%d-%s", n.Day, FormatDailySeq(n.Seq))
}

// ConvNumber is a conversation's message number (Host as in DailyNumber).
type ConvNumber struct {
	Seq    uint64
	Source string
	Host   *uint16
}

// GapResult is how a sequence number relates to its stream (Kind is
// normal, gap, duplicate, out_of_order or reset).
type GapResult struct {
	Kind     string
	Seq      uint64
	Expected *uint64
	Gap      uint64
	Filled   *bool
	Source   string
}

// StreamStats is what is known of a stream.
type StreamStats struct {
	LastSeq    uint64
	LastTsMs   int64
	GapCount   uint64
	ResetCount uint64
	Missing    [][2]uint64
	Source     string
}

// CacheDeleted is what a delete removed now, and whether the removal was
// queued until Redis is back.
type CacheDeleted struct {
	Count    uint64
	Deferred bool
}

// Answer kinds (the Response variants).
type (
	pong         struct{}
	doneAnswer   struct{}
	cleared      struct{ Count uint64 }
	fieldsAnswer struct {
		Kind  string // "health" or "info"
		Pairs [][2]string
	}
	metricsAnswer struct{ Text string }
	gapBatch      struct{ Results []GapResult }
	gapStats      struct{ Stats *StreamStats }
	cacheValue    struct{ Value []byte } // nil on a miss
	cacheValues   struct{ Values [][]byte }
	cacheWritten  struct{ Outcome string }
)

// serverMessage is one decoded frame from the daemon: exactly one of
// Hello, Response or Fatal is set.
type serverMessage struct {
	Hello *struct {
		Version uint32
		Server  string
	}
	Response *response
	Fatal    *Error
}

// Response is the answer to request ID: Answer, or Err when it failed.
type response struct {
	ID     uint64
	Answer interface{}
	Err    *Error
}

func (r *reader) source() string { return r.name(sources, "source") }

func (r *reader) optU64() *uint64 {
	if !r.some() {
		return nil
	}
	v := r.u64()
	return &v
}

func (r *reader) gapResult() GapResult {
	g := GapResult{Kind: r.name(gapKinds, "gap kind"), Seq: r.u64(), Expected: r.optU64(), Gap: r.u64()}
	if r.some() {
		b := r.boolean()
		g.Filled = &b
	}
	g.Source = r.source()
	return g
}

func (r *reader) pairs() [][2]string {
	n := r.count()
	out := make([][2]string, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		out = append(out, [2]string{r.str(), r.str()})
	}
	return out
}

func (r *reader) optBytes() []byte {
	if !r.some() {
		return nil
	}
	b := r.bytes()
	if b == nil {
		b = []byte{}
	}
	return b
}

func (r *reader) host() *uint16 {
	if !r.some() {
		return nil
	}
	h := r.u16()
	return &h
}

func (r *reader) answer() interface{} {
	switch i := r.u32(); i {
	case 0:
		return pong{}
	case 1:
		return DailyNumber{Seq: r.u64(), Day: r.u32(), Source: r.source()}
	case 2:
		return ConvNumber{Seq: r.u64(), Source: r.source()}
	case 3:
		return fieldsAnswer{"health", r.pairs()}
	case 4:
		return metricsAnswer{r.str()}
	case 5:
		return r.gapResult()
	case 6:
		n := r.count()
		out := make([]GapResult, 0, n)
		for j := 0; j < n && r.err == nil; j++ {
			out = append(out, r.gapResult())
		}
		return gapBatch{out}
	case 7:
		if !r.some() {
			return gapStats{}
		}
		s := StreamStats{LastSeq: r.u64(), LastTsMs: r.i64(), GapCount: r.u64(), ResetCount: r.u64()}
		n := r.count()
		for j := 0; j < n && r.err == nil; j++ {
			s.Missing = append(s.Missing, [2]uint64{r.u64(), r.u64()})
		}
		s.Source = r.source()
		return gapStats{&s}
	case 8:
		return doneAnswer{}
	case 9:
		return cleared{r.u64()}
	case 10:
		return cacheValue{r.optBytes()}
	case 11:
		n := r.count()
		out := make([][]byte, 0, n)
		for j := 0; j < n && r.err == nil; j++ {
			out = append(out, r.optBytes())
		}
		return cacheValues{out}
	case 12:
		return cacheWritten{r.name(writeOutcomes, "write outcome")}
	case 13:
		return CacheDeleted{Count: r.u64(), Deferred: r.boolean()}
	case 14:
		return DailyNumber{Seq: r.u64(), Day: r.u32(), Source: r.source(), Host: r.host()}
	case 15:
		return ConvNumber{Seq: r.u64(), Source: r.source(), Host: r.host()}
	case 16:
		return fieldsAnswer{"info", r.pairs()}
	default:
		if r.err == nil {
			r.err = protoErr("unknown response variant %d", i)
		}
		return nil
	}
}

func (r *reader) wireError() *Error {
	code := r.name(errorCodes, "error code")
	return &Error{Code: code, Message: r.str()}
}

// decodeServerMessage decodes one frame's payload from the daemon.
func decodeServerMessage(payload []byte) (serverMessage, error) {
	r := &reader{data: payload}
	var msg serverMessage
	switch kind := r.u32(); kind {
	case 0:
		msg.Hello = &struct {
			Version uint32
			Server  string
		}{r.u32(), r.str()}
	case 1:
		resp := &response{ID: r.u64()}
		switch tag := r.u32(); tag {
		case 0:
			resp.Answer = r.answer()
		case 1:
			resp.Err = r.wireError()
		default:
			if r.err == nil {
				r.err = protoErr("invalid result tag %d", tag)
			}
		}
		msg.Response = resp
	case 2:
		msg.Fatal = r.wireError()
	default:
		if r.err == nil {
			r.err = protoErr("unknown server message %d", kind)
		}
	}
	if r.err != nil {
		return serverMessage{}, r.err
	}
	if r.pos != len(payload) {
		return serverMessage{}, protoErr("trailing bytes after the message")
	}
	return msg, nil
}
