// Package seqd is a client for seqd, the sequence-number sidecar daemon,
// over its binary protocol (protocol/PROTOCOL.md). Standard library only.
//
// A Client is safe for concurrent use by many goroutines: their requests
// are pipelined on one Unix-socket connection, and a reader goroutine
// hands each answer to its caller by id. Every call takes a context; its
// deadline or cancellation ends the wait (the answer, if it comes, is
// dropped). After the connection breaks, the next call reconnects, and a
// call that failed because the connection broke is retried once on a new
// one: a Next call whose reply was lost then skips a number, it never
// repeats one. A call ended by its context leaves its request to run in
// seqd (the answer is dropped): a cancelled Next may use up a number.
// Errors answered by seqd are *Error values with a Code.
package seqd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultSocket is where seqd listens by default.
const DefaultSocket = "/run/seqd/seqd.sock"

// Client is a connection to seqd, safe for concurrent use.
type Client struct {
	// CallTimeout bounds each call whose context has no deadline
	// (DefaultCallTimeout after Dial; 0: no bound). Set it before the
	// client is shared.
	CallTimeout time.Duration

	path     string
	maxFrame int

	mu      sync.Mutex
	conn    *conn
	version uint32
	nextID  uint64
}

// conn is one open connection and the calls waiting on it.
type conn struct {
	nc      net.Conn
	wmu     sync.Mutex // one frame written at a time
	pmu     sync.Mutex
	pending map[uint64]chan result
	dead    bool
}

type result struct {
	resp *response
	err  error
}

// brokenError is a connection that broke under a call: the call may be
// retried on a new connection.
type brokenError struct{ err error }

func (e *brokenError) Error() string        { return "seqd connection broken: " + e.err.Error() }
func (e *brokenError) Unwrap() error        { return e.err }
func (e *brokenError) Is(target error) bool { return target == ErrUnavailable }

// unreachableError is a failure to connect to seqd's socket.
type unreachableError struct {
	path string
	err  error
}

func (e *unreachableError) Error() string {
	return "seqd at " + e.path + " is not reachable: " + e.err.Error()
}
func (e *unreachableError) Unwrap() error        { return e.err }
func (e *unreachableError) Is(target error) bool { return target == ErrUnavailable }

// ErrTimeout is matched (errors.Is) by the error of a call whose deadline
// passed before seqd answered (its context's, or CallTimeout); the error
// also matches context.DeadlineExceeded.
var ErrTimeout = errors.New("seqd did not answer in time")

type timeoutError struct{ err error }

func (e *timeoutError) Error() string        { return ErrTimeout.Error() + ": " + e.err.Error() }
func (e *timeoutError) Unwrap() error        { return e.err }
func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }

// DefaultCallTimeout bounds a call whose context has no deadline, so that
// a hung seqd never blocks a caller for ever; set Client.CallTimeout to
// change it (0: no bound).
const DefaultCallTimeout = 5 * time.Second

// Dial connects to seqd's socket at path and says hello. While seqd is not
// up yet (a sidecar starting beside its application) it tries again until
// ctx is done (for DefaultCallTimeout when ctx has no deadline); the error
// then matches ErrUnavailable and names the socket.
func Dial(ctx context.Context, path string) (*Client, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	c := &Client{CallTimeout: DefaultCallTimeout, path: path, maxFrame: DefaultMaxFrame, version: ProtocolVersion}
	c.mu.Lock()
	defer c.mu.Unlock()
	pause := 10 * time.Millisecond
	for {
		_, err := c.connLocked(ctx)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pause):
		}
		if pause *= 2; pause > 200*time.Millisecond {
			pause = 200 * time.Millisecond
		}
	}
}

// Close closes the connection; calls waiting on it fail.
func (c *Client) Close() error {
	c.mu.Lock()
	cn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if cn != nil {
		cn.fail(errors.New("client closed"))
	}
	return nil
}

// connLocked returns the open connection, dialing a new one when there is
// none (c.mu held).
func (c *Client) connLocked(ctx context.Context) (*conn, error) {
	if c.conn != nil && !c.conn.isDead() {
		return c.conn, nil
	}
	for {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "unix", c.path)
		if err != nil {
			return nil, &unreachableError{c.path, err}
		}
		if dl, ok := ctx.Deadline(); ok {
			nc.SetDeadline(dl)
		}
		msg, err := func() (serverMessage, error) {
			if _, err := nc.Write(encodeHello(c.version, "seqd-go/0.1")); err != nil {
				return serverMessage{}, err
			}
			return readMessage(nc, c.maxFrame)
		}()
		if err != nil {
			nc.Close()
			return nil, err
		}
		nc.SetDeadline(time.Time{})
		switch {
		case msg.Hello != nil:
			cn := &conn{nc: nc, pending: map[uint64]chan result{}}
			go cn.readLoop(c.maxFrame)
			c.conn = cn
			return cn, nil
		case msg.Fatal != nil && msg.Fatal.Code == CodeVersionMismatch && c.version > MinProtocolVersion:
			// A daemon older than this client: speak protocol 1.
			nc.Close()
			c.version = MinProtocolVersion
		case msg.Fatal != nil:
			nc.Close()
			return nil, msg.Fatal
		default:
			nc.Close()
			return nil, protoErr("unexpected answer to hello")
		}
	}
}

func readMessage(r io.Reader, maxFrame int) (serverMessage, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return serverMessage{}, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if int(n) > maxFrame {
		return serverMessage{}, protoErr("frame of %d bytes is over the limit of %d", n, maxFrame)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return serverMessage{}, err
	}
	return decodeServerMessage(payload)
}

func (cn *conn) isDead() bool {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	return cn.dead
}

// fail ends the connection: every waiting call gets err.
func (cn *conn) fail(err error) {
	cn.pmu.Lock()
	if cn.dead {
		cn.pmu.Unlock()
		return
	}
	cn.dead = true
	pending := cn.pending
	cn.pending = nil
	cn.pmu.Unlock()
	cn.nc.Close()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

func (cn *conn) readLoop(maxFrame int) {
	for {
		msg, err := readMessage(cn.nc, maxFrame)
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				cn.fail(err)
			} else {
				cn.fail(&brokenError{err})
			}
			return
		}
		switch {
		case msg.Response != nil:
			cn.pmu.Lock()
			ch := cn.pending[msg.Response.ID]
			delete(cn.pending, msg.Response.ID)
			cn.pmu.Unlock()
			if ch != nil {
				ch <- result{resp: msg.Response}
			}
		case msg.Fatal != nil:
			// The daemon closes after it (idle timeout, shutdown, ...).
			cn.fail(msg.Fatal)
			return
		default:
			cn.fail(protoErr("unexpected message"))
			return
		}
	}
}

// do sends one request and waits for its answer (one of the answer types
// of wire.go) or its error.
func (c *Client) do(ctx context.Context, req request) (interface{}, error) {
	if _, ok := ctx.Deadline(); !ok && c.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.CallTimeout)
		defer cancel()
	}
	answer, err := c.try(ctx, req)
	var broken *brokenError
	if errors.As(err, &broken) && ctx.Err() == nil {
		answer, err = c.try(ctx, req)
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		err = &timeoutError{err}
	}
	return answer, err
}

func (c *Client) try(ctx context.Context, req request) (interface{}, error) {
	c.mu.Lock()
	cn, err := c.connLocked(ctx)
	c.nextID++
	id := c.nextID
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	f := encodeRequest(id, req)
	if len(f)-4 > c.maxFrame {
		// seqd would close the connection over it.
		return nil, &Error{CodeTooLarge, fmt.Sprintf("request of %d bytes is over the frame limit of %d; not sent", len(f)-4, c.maxFrame)}
	}
	ch := make(chan result, 1)
	cn.pmu.Lock()
	if cn.dead {
		cn.pmu.Unlock()
		return nil, &brokenError{errors.New("connection closed")}
	}
	cn.pending[id] = ch
	cn.pmu.Unlock()

	cn.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		cn.nc.SetWriteDeadline(dl)
	} else {
		cn.nc.SetWriteDeadline(time.Time{})
	}
	_, err = cn.nc.Write(f)
	cn.wmu.Unlock()
	if err != nil {
		// A partial frame leaves the stream unusable.
		cn.fail(&brokenError{err})
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.resp.Err != nil {
			return nil, r.resp.Err
		}
		return r.resp.Answer, nil
	case <-ctx.Done():
		cn.pmu.Lock()
		delete(cn.pending, id)
		cn.pmu.Unlock()
		return nil, ctx.Err()
	}
}

func unexpected(a interface{}) error { return protoErr("unexpected answer %T", a) }

// ------------------------------------------------------------ sequences

// zoneOf names t's zone for seqd, which needs an IANA name: a location
// from time.LoadLocation, UTC, or Local when $TZ or /etc/localtime names
// one. A fixed zone (time.FixedZone) has none: an error.
func zoneOf(t time.Time) (string, error) {
	name := t.Location().String()
	if name == "Local" {
		name = ""
		if tz := os.Getenv("TZ"); tz != "" {
			name = strings.TrimPrefix(tz, ":")
		} else if target, err := os.Readlink("/etc/localtime"); err == nil {
			if i := strings.Index(target, "zoneinfo/"); i >= 0 {
				name = target[i+len("zoneinfo/"):]
			}
		}
	}
	if name == "UTC" {
		return name, nil
	}
	if _, err := time.LoadLocation(name); name == "" || err != nil {
		return "", fmt.Errorf("seqd: cannot tell the IANA zone of %q: use time.LoadLocation", t.Location())
	}
	return name, nil
}

func (c *Client) daily(ctx context.Context, req request) (DailyNumber, error) {
	a, err := c.do(ctx, req)
	if err != nil {
		return DailyNumber{}, err
	}
	if n, ok := a.(DailyNumber); ok {
		return n, nil
	}
	return DailyNumber{}, unexpected(a)
}

func dayArgs(now time.Time) (*string, *int64, error) {
	tz, err := zoneOf(now)
	if err != nil {
		return nil, nil, err
	}
	ms := now.UnixMilli()
	return &tz, &ms, nil
}

// IncrementDailySequence issues the next number of userID's counter for
// the local date of now in now's zone (the name Go services know).
func (c *Client) IncrementDailySequence(ctx context.Context, userID string, now time.Time) (DailyNumber, error) {
	tz, ms, err := dayArgs(now)
	if err != nil {
		return DailyNumber{}, err
	}
	return c.daily(ctx, dailyNextRequest(userID, tz, ms))
}

// GetCurrentSequence reads the current number for the local date of now
// (0 when none was issued).
func (c *Client) GetCurrentSequence(ctx context.Context, userID string, now time.Time) (DailyNumber, error) {
	tz, ms, err := dayArgs(now)
	if err != nil {
		return DailyNumber{}, err
	}
	return c.daily(ctx, dailyGetRequest(userID, tz, ms))
}

func (c *Client) conv(ctx context.Context, req request) (ConvNumber, error) {
	a, err := c.do(ctx, req)
	if err != nil {
		return ConvNumber{}, err
	}
	if n, ok := a.(ConvNumber); ok {
		return n, nil
	}
	return ConvNumber{}, unexpected(a)
}

// GeneratePrivateChatSequence issues the next message number of the
// private chat of a and b (in either order).
func (c *Client) GeneratePrivateChatSequence(ctx context.Context, a, b string) (ConvNumber, error) {
	return c.conv(ctx, privateNextRequest(a, b))
}

// GenerateGroupChatSequence issues the next message number of a group.
func (c *Client) GenerateGroupChatSequence(ctx context.Context, groupID string) (ConvNumber, error) {
	return c.conv(ctx, groupNextRequest(groupID))
}

// CurrentPrivateChatSequence reads a private chat's current number.
func (c *Client) CurrentPrivateChatSequence(ctx context.Context, a, b string) (ConvNumber, error) {
	return c.conv(ctx, privateGetRequest(a, b))
}

// CurrentGroupChatSequence reads a group's current number.
func (c *Client) CurrentGroupChatSequence(ctx context.Context, groupID string) (ConvNumber, error) {
	return c.conv(ctx, groupGetRequest(groupID))
}

// ------------------------------------------------------------ gap tracker

// CheckSequence classifies one market-data sequence number of a stream.
func (c *Client) CheckSequence(ctx context.Context, exchange, symbol string, seq uint64) (GapResult, error) {
	a, err := c.do(ctx, gapCheckRequest(exchange, symbol, seq))
	if err != nil {
		return GapResult{}, err
	}
	if r, ok := a.(GapResult); ok {
		return r, nil
	}
	return GapResult{}, unexpected(a)
}

// CheckSequenceBatch classifies events in order, atomically; one result
// per event.
func (c *Client) CheckSequenceBatch(ctx context.Context, events []GapEvent) ([]GapResult, error) {
	if len(events) == 0 {
		return nil, nil
	}
	a, err := c.do(ctx, gapBatchRequest(events))
	if err != nil {
		return nil, err
	}
	if r, ok := a.(gapBatch); ok {
		return r.Results, nil
	}
	return nil, unexpected(a)
}

// GetStats is what is known of a stream; nil when nothing.
func (c *Client) GetStats(ctx context.Context, exchange, symbol string) (*StreamStats, error) {
	a, err := c.do(ctx, gapStatsRequest(exchange, symbol))
	if err != nil {
		return nil, err
	}
	if r, ok := a.(gapStats); ok {
		return r.Stats, nil
	}
	return nil, unexpected(a)
}

// ClearSymbol forgets a stream.
func (c *Client) ClearSymbol(ctx context.Context, exchange, symbol string) error {
	a, err := c.do(ctx, gapClearRequest(exchange, symbol))
	if err != nil {
		return err
	}
	if _, ok := a.(doneAnswer); ok {
		return nil
	}
	return unexpected(a)
}

// ClearAll forgets every stream; returns how many.
func (c *Client) ClearAll(ctx context.Context) (uint64, error) {
	a, err := c.do(ctx, gapClearAllRequest())
	if err != nil {
		return 0, err
	}
	if r, ok := a.(cleared); ok {
		return r.Count, nil
	}
	return 0, unexpected(a)
}

// ------------------------------------------------------------ cache

// Get reads a cached value: (value, true) on a hit, (nil, false) on a
// miss; an *Error with Code "unavailable" while Redis is down (read your
// database). Values are bytes.
func (c *Client) Get(ctx context.Context, key string) ([]byte, bool, error) {
	a, err := c.do(ctx, cacheGetRequest(key))
	if err != nil {
		return nil, false, err
	}
	if r, ok := a.(cacheValue); ok {
		return r.Value, r.Value != nil, nil
	}
	return nil, false, unexpected(a)
}

// GetMany reads several values; nil for a miss, in the order asked.
func (c *Client) GetMany(ctx context.Context, keys ...string) ([][]byte, error) {
	a, err := c.do(ctx, cacheGetManyRequest(keys))
	if err != nil {
		return nil, err
	}
	if r, ok := a.(cacheValues); ok {
		return r.Values, nil
	}
	return nil, unexpected(a)
}

func written(a interface{}, err error) (string, error) {
	if err != nil {
		return "", err
	}
	if r, ok := a.(cacheWritten); ok {
		return r.Outcome, nil
	}
	return "", unexpected(a)
}

// Set caches value for ttl (0 = until invalidated). The outcome is
// "stored", "invalidated" or "deferred" (PROTOCOL.md §1.5).
func (c *Client) Set(ctx context.Context, key string, value []byte, ttl time.Duration) (string, error) {
	return written(c.do(ctx, cacheSetRequest(CacheItem{key, value, uint64(ttl.Milliseconds())})))
}

// SetMany caches several values; the outcome is the worst of them.
func (c *Client) SetMany(ctx context.Context, items []CacheItem) (string, error) {
	return written(c.do(ctx, cacheSetManyRequest(items)))
}

func deleted(a interface{}, err error) (CacheDeleted, error) {
	if err != nil {
		return CacheDeleted{}, err
	}
	if r, ok := a.(CacheDeleted); ok {
		return r, nil
	}
	return CacheDeleted{}, unexpected(a)
}

// Delete invalidates keys.
func (c *Client) Delete(ctx context.Context, keys ...string) (CacheDeleted, error) {
	return deleted(c.do(ctx, cacheDelRequest(keys)))
}

// DeletePrefix invalidates every key that starts with prefix.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (CacheDeleted, error) {
	return deleted(c.do(ctx, cacheDelPrefixRequest(prefix)))
}

// GetOrLoad is cache-aside: a hit returns the cached value; a miss calls
// loader (your database read) and caches its result; while the cache is
// unavailable or seqd cannot be reached, loader alone answers and nothing
// is cached (a value superseded during an outage is never written back).
func (c *Client) GetOrLoad(ctx context.Context, key string, ttl time.Duration, loader func(context.Context) ([]byte, error)) ([]byte, error) {
	v, hit, err := c.Get(ctx, key)
	switch {
	case err == nil && hit:
		return v, nil
	case err == nil:
		v, err := loader(ctx)
		if err != nil {
			return nil, err
		}
		c.Set(ctx, key, v, ttl) // a failed populate only costs a later miss
		return v, nil
	case unavailable(err):
		return loader(ctx)
	default:
		return nil, err
	}
}

// ErrNotInvalidated is matched (errors.Is) by a WriteThrough error that
// means: the database WAS written, but the cache could be neither updated
// nor invalidated before the call's deadline (seqd stayed unreachable).
// Readers may get the old value until the key is invalidated: call Delete
// for it once seqd is back, or let its TTL run out.
var ErrNotInvalidated = errors.New("seqd: database written, but the cache was not invalidated")

type notInvalidated struct{ err error }

func (e *notInvalidated) Error() string        { return ErrNotInvalidated.Error() + ": " + e.err.Error() }
func (e *notInvalidated) Is(target error) bool { return target == ErrNotInvalidated }
func (e *notInvalidated) Unwrap() error        { return e.err }

// WriteThroughWindow is how long WriteThrough keeps trying its cache step
// when the context has no deadline (a seqd restart takes about a second).
const WriteThroughWindow = 5 * time.Second

// unavailable reports whether err means the cache cannot be reached or
// cannot answer now.
func unavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// WriteThrough runs dbWrite (the database is the truth), then caches
// value, or with nil invalidates the key; returns the cache outcome
// ("stored", "invalidated" or "deferred"). While seqd cannot be reached
// the cache step is tried again, as an invalidation (a value set late
// could overwrite a newer writer's), until ctx's deadline or for
// WriteThroughWindow; if it never succeeds, the error matches
// ErrNotInvalidated: the database was written, the cache was not.
func (c *Client) WriteThrough(ctx context.Context, key string, value []byte, ttl time.Duration, dbWrite func(context.Context) error) (string, error) {
	if err := dbWrite(ctx); err != nil {
		return "", err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, WriteThroughWindow)
		defer cancel()
	}
	pause := 10 * time.Millisecond
	set := value != nil
	for {
		var outcome string
		var err error
		if set {
			outcome, err = c.Set(ctx, key, value, ttl)
		} else {
			var d CacheDeleted
			if d, err = c.Delete(ctx, key); err == nil {
				outcome = OutcomeInvalidated
				if d.Deferred {
					outcome = OutcomeDeferred
				}
			}
		}
		if err == nil {
			return outcome, nil
		}
		retry := unavailable(err)
		if !retry && !set {
			return "", err // a key the cache refuses holds no value
		}
		wasSet := set
		set = false // from now on, invalidate
		if !retry && wasSet {
			continue // a refused SET (too large) leaves the old value
		}
		select {
		case <-ctx.Done():
			return "", &notInvalidated{err}
		case <-time.After(pause):
		}
		if pause *= 2; pause > 200*time.Millisecond {
			pause = 200 * time.Millisecond
		}
	}
}

// ------------------------------------------------------------ the daemon

// Ping checks that seqd answers.
func (c *Client) Ping(ctx context.Context) error {
	a, err := c.do(ctx, pingRequest())
	if err != nil {
		return err
	}
	if _, ok := a.(pong); ok {
		return nil
	}
	return unexpected(a)
}

func fields(a interface{}, err error) (map[string]string, error) {
	if err != nil {
		return nil, err
	}
	f, ok := a.(fieldsAnswer)
	if !ok {
		return nil, unexpected(a)
	}
	m := make(map[string]string, len(f.Pairs))
	for _, p := range f.Pairs {
		m[p[0]] = p[1]
	}
	return m, nil
}

// Health is the daemon's health (redis, breaker, mode, ...).
func (c *Client) Health(ctx context.Context) (Health, error) {
	f, err := fields(c.do(ctx, healthRequest()))
	if err != nil {
		return Health{}, err
	}
	return Health{
		Redis:                 f["redis"],
		Breaker:               f["breaker"],
		Mode:                  f["mode"],
		LastError:             f["last_error"],
		LastErrorClass:        f["last_error_class"],
		PendingReconciliation: number(f["pending_reconciliation"]),
		Outbox:                number(f["outbox"]),
		Version:               f["version"],
		Fields:                f,
	}, nil
}

// Info is what the daemon is and accepts: version, protocols, mode, host
// and every limit (PROTOCOL.md, "Info").
func (c *Client) Info(ctx context.Context) (Info, error) {
	f, err := fields(c.do(ctx, infoRequest()))
	if err != nil {
		return Info{}, err
	}
	var requests []string
	if r := f["requests"]; r != "" {
		requests = strings.Split(r, ",")
	}
	return Info{
		Version:   f["version"],
		Mode:      f["mode"],
		Host:      uint16(number(f["host"])),
		MaxFrame:  number(f["max_frame"]),
		MaxValue:  number(f["max_value"]),
		MaxBatch:  number(f["max_batch"]),
		MaxKeys:   number(f["max_keys"]),
		DefaultTZ: f["default_tz"],
		Requests:  requests,
		Fields:    f,
	}, nil
}

// Health is the daemon's HEALTH answer: the fields most callers read,
// and every field by name (new ones may appear).
type Health struct {
	Redis                 string // "up", "down" or "disabled" (local mode)
	Breaker               string // "closed", "open" or "half_open"
	Mode                  string // "redis" or "local"
	LastError             string // "none" or the last Redis error
	LastErrorClass        string // "none", "oom", "readonly", "timeout", ...
	PendingReconciliation uint64
	Outbox                uint64
	Version               string
	Fields                map[string]string
}

// Info is the daemon's INFO answer: the fields most callers read, and
// every field by name.
type Info struct {
	Version   string
	Mode      string
	Host      uint16
	MaxFrame  uint64
	MaxValue  uint64
	MaxBatch  uint64
	MaxKeys   uint64
	DefaultTZ string
	Requests  []string
	Fields    map[string]string
}

// number reads a decimal field; 0 when absent or not a number.
func number(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// Metrics is the daemon's metrics in the Prometheus text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	a, err := c.do(ctx, metricsRequest())
	if err != nil {
		return "", err
	}
	if m, ok := a.(metricsAnswer); ok {
		return m.Text, nil
	}
	return "", unexpected(a)
}
