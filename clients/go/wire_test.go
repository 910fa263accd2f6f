package seqd

import (
	"bufio"
	"encoding/hex"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// The golden vectors travel with the module (testdata/vectors.txt), so its
// tests pass wherever the module is copied or vendored.
func loadVectors(t *testing.T) map[string][]byte {
	t.Helper()
	f, err := os.Open("testdata/vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hexed, _ := strings.Cut(line, " ")
		b, err := hex.DecodeString(hexed)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}

func str(s string) *string { return &s }
func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func u16(v uint16) *uint16 { return &v }
func boolean(v bool) *bool { return &v }

// The client messages, as this client builds them.
var requests = map[string][]byte{
	"hello":              encodeHello(1, "c"),
	"hello_v2":           encodeHello(2, "c"),
	"ping":               encodeRequest(1, pingRequest()),
	"daily_next_full":    encodeRequest(7, dailyNextRequest("123", str("Asia/Kolkata"), i64(1767724199000))),
	"daily_get_defaults": encodeRequest(8, dailyGetRequest("u", nil, nil)),
	"conv_next_private":  encodeRequest(9, privateNextRequest("a", "b")),
	// E-mail-like ids: the admitted alphabet's wider classes.
	"daily_next_email_user":   encodeRequest(60, dailyNextRequest("alice+orders@example.com", nil, nil)),
	"conv_next_private_email": encodeRequest(61, privateNextRequest("bob@example.com", "alice+orders@example.com")),
	"conv_get_group":          encodeRequest(10, groupGetRequest("g")),
	"health":                  encodeRequest(11, healthRequest()),
	"metrics":                 encodeRequest(12, metricsRequest()),
	"gap_check":               encodeRequest(13, gapCheckRequest("x", "BTC", 5)),
	"gap_batch":               encodeRequest(14, gapBatchRequest([]GapEvent{{"x", "A", 1}, {"x", "A", 3}})),
	"gap_stats":               encodeRequest(15, gapStatsRequest("x", "A")),
	"gap_clear":               encodeRequest(16, gapClearRequest("x", "A")),
	"gap_clear_all":           encodeRequest(17, gapClearAllRequest()),
	"cache_get":               encodeRequest(18, cacheGetRequest("k")),
	"cache_set":               encodeRequest(19, cacheSetRequest(CacheItem{"k", []byte("v"), 5000})),
	"cache_del":               encodeRequest(20, cacheDelRequest([]string{"a", "b"})),
	"cache_del_prefix":        encodeRequest(21, cacheDelPrefixRequest("user:1:")),
	"cache_get_many":          encodeRequest(22, cacheGetManyRequest([]string{"a", "b"})),
	"cache_set_many":          encodeRequest(23, cacheSetManyRequest([]CacheItem{{"a", []byte{0, 255}, 0}, {"b", []byte{}, 1}})),
	"info":                    encodeRequest(24, infoRequest()),
}

func ok(id uint64, a interface{}) serverMessage {
	return serverMessage{Response: &response{ID: id, Answer: a}}
}

func fail(id uint64, code, msg string) serverMessage {
	return serverMessage{Response: &response{ID: id, Err: &Error{code, msg}}}
}

// The server messages, as this client decodes them.
var answers = map[string]serverMessage{
	"server_hello": {Hello: &struct {
		Version uint32
		Server  string
	}{1, "s"}},
	"pong":                    ok(1, pong{}),
	"daily_reply":             ok(7, DailyNumber{Seq: 1, Day: 20260106, Source: "redis"}),
	"conv_reply_local":        ok(9, ConvNumber{Seq: 300, Source: "local"}),
	"health_reply":            ok(11, fieldsAnswer{"health", [][2]string{{"redis", "up"}}}),
	"metrics_reply":           ok(12, metricsAnswer{"m 1\n"}),
	"error_reply":             fail(5, CodeInvalidArgument, "bad"),
	"gap_reply":               ok(13, GapResult{Kind: "gap", Seq: 105, Expected: u64(101), Gap: 4, Source: "redis"}),
	"gap_out_of_order_reply":  ok(13, GapResult{Kind: "out_of_order", Seq: 102, Expected: u64(106), Filled: boolean(true), Source: "local"}),
	"gap_stats_reply":         ok(15, gapStats{&StreamStats{105, 1767724199000, 1, 0, [][2]uint64{{101, 104}}, "redis"}}),
	"gap_stats_none":          ok(15, gapStats{}),
	"done":                    ok(16, doneAnswer{}),
	"cleared":                 ok(17, cleared{3}),
	"cache_hit":               ok(18, cacheValue{[]byte("v")}),
	"cache_miss":              ok(18, cacheValue{}),
	"cache_deferred":          ok(19, cacheWritten{"deferred"}),
	"cache_deleted":           ok(20, CacheDeleted{2, false}),
	"fatal_version_mismatch":  {Fatal: &Error{CodeVersionMismatch, "v"}},
	"daily_number_local_host": ok(7, DailyNumber{Seq: 42, Day: 20261122, Source: "local", Host: u16(513)}),
	"conv_number_redis":       ok(9, ConvNumber{Seq: 300, Source: "redis"}),
	"conv_reply_redis_v1":     ok(9, ConvNumber{Seq: 7, Source: "redis"}),
	"gap_batch_reply": ok(14, gapBatch{[]GapResult{
		{Kind: "normal", Seq: 1, Source: "redis"},
		{Kind: "duplicate", Seq: 1, Expected: u64(2), Source: "redis"},
	}}),
	"cache_values":           ok(22, cacheValues{[][]byte{{0, 255}, nil}}),
	"cache_stored":           ok(23, cacheWritten{"stored"}),
	"cache_invalidated":      ok(23, cacheWritten{"invalidated"}),
	"info_reply":             ok(24, fieldsAnswer{"info", [][2]string{{"max_batch", "10000"}}}),
	"error_invalid_argument": fail(25, CodeInvalidArgument, "tz"),
	"error_unknown_command":  fail(25, CodeUnknownCommand, "x"),
	"error_forbidden":        fail(25, CodeForbidden, "seq:"),
	"error_too_large":        fail(25, CodeTooLarge, "big"),
	"error_unavailable":      fail(25, CodeUnavailable, "redis"),
	"error_internal":         fail(25, CodeInternal, "bug"),
	"fatal_bad_request":      {Fatal: &Error{CodeBadRequest, "hello first"}},
}

func TestEveryVectorIsCovered(t *testing.T) {
	for name := range loadVectors(t) {
		_, q := requests[name]
		_, a := answers[name]
		if !q && !a {
			t.Errorf("vector %s is not checked", name)
		}
	}
	if got, want := len(requests)+len(answers), len(loadVectors(t)); got != want {
		t.Errorf("%d checks for %d vectors", got, want)
	}
}

func TestRequestsEncodeToTheRecordedBytes(t *testing.T) {
	v := loadVectors(t)
	for name, encoded := range requests {
		if hex.EncodeToString(encoded) != hex.EncodeToString(v[name]) {
			t.Errorf("%s: got %x, recorded %x", name, encoded, v[name])
		}
	}
}

func TestAnswersDecodeToTheRecordedValues(t *testing.T) {
	v := loadVectors(t)
	for name, want := range answers {
		data := v[name]
		got, err := decodeServerMessage(data[4:])
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}
}

func TestTruncatedAndTrailingBytesAreRefused(t *testing.T) {
	payload := loadVectors(t)["gap_stats_reply"][4:]
	if _, err := decodeServerMessage(append(append([]byte{}, payload...), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
	for cut := 0; cut < len(payload); cut++ {
		if _, err := decodeServerMessage(payload[:cut]); err == nil {
			t.Errorf("payload cut at %d accepted", cut)
		}
	}
	// A string length of 2^60 is refused before anything is allocated.
	w := &writer{}
	w.u32(1)
	w.u64(1)
	w.u32(0)
	w.u32(4)
	w.u64(1 << 60)
	if _, err := decodeServerMessage(w.buf); err == nil {
		t.Error("huge length accepted")
	}
}

// FuzzDecodeServerMessage: any bytes decode or fail with ErrProtocol,
// never panic. `go test` runs it on the golden vectors and their
// truncations; `go test -fuzz=Fuzz` explores further.
func FuzzDecodeServerMessage(f *testing.F) {
	for _, b := range []string{
		"01000000010000000000000000000000000000000000",
		"0100000007000000000000000000000007000000016900000000000000",
	} {
		raw, _ := hex.DecodeString(b)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		msg, err := decodeServerMessage(payload)
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("error outside ErrProtocol: %v", err)
		}
		if err == nil && msg.Hello == nil && msg.Response == nil && msg.Fatal == nil {
			t.Fatal("decoded to nothing")
		}
	})
}

func TestGoldenVectorsSurviveEveryTruncationAndBitFlip(t *testing.T) {
	for name, data := range loadVectors(t) {
		payload := data[4:]
		for i := range payload {
			for _, p := range [][]byte{payload[:i], flip(payload, i)} {
				if _, err := decodeServerMessage(p); err != nil && !errors.Is(err, ErrProtocol) {
					t.Fatalf("%s: %v", name, err)
				}
			}
		}
	}
}

func flip(b []byte, i int) []byte {
	out := append([]byte{}, b...)
	out[i] ^= 0xff
	return out
}

func TestOrderIDsCarryTheHostOfLocallyIssuedNumbers(t *testing.T) {
	host := uint16(7)
	cases := []struct {
		n    DailyNumber
		want string
	}{
		{DailyNumber{Seq: 42, Day: 20261122, Source: "redis"}, "ORD-20261122-00042"},
		{DailyNumber{Seq: 42, Day: 20261122, Source: "local", Host: &host}, "ORD-20261122-L7-00042"},
		{DailyNumber{Seq: 100000, Day: 20261122, Source: "redis"}, "ORD-20261122-100000"},
	}
	for _, c := range cases {
		if got := FormatOrderID(c.n); got != c.want {
			t.Errorf("FormatOrderID(%+v) = %q, want %q", c.n, got, c.want)
		}
	}
}

// Inside the seqd repository the module's copy of the golden vectors is
// the protocol's own, byte for byte (run where the repository is not, the
// test has nothing to compare and says so).
func TestTheModulesVectorsAreTheProtocols(t *testing.T) {
	theirs, err := os.ReadFile("../../protocol/golden/vectors.txt")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("not inside the seqd repository")
	}
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile("testdata/vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	if string(ours) != string(theirs) {
		t.Fatal("testdata/vectors.txt differs from protocol/golden/vectors.txt: copy it again")
	}
}

func TestKeyBuildersFollowTheSchema(t *testing.T) {
	for got, want := range map[string]string{
		SettingsAllKey("42"):           "user:42:settings:all",
		SettingsTradingKey("42"):       "user:42:settings:trading",
		SettingsNotificationsKey("42"): "user:42:settings:notifications",
		ModeKey("42", ModeScalp):       "user:42:mode:scalp",
		ScalpReentryKey("42"):          "user:42:scalp_reentry",
		CircuitBreakerKey("42"):        "user:42:circuit_breaker",
		UserPrefix("42"):               "user:42:",
		BinancePositionsKey("42"):      "binance:42:positions",
		BinanceOrdersKey("42"):         "binance:42:orders",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}
