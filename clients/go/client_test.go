package seqd

// The client against live seqd processes (SEQD_BIN, default
// ../../target/debug/seqd) in local and Redis mode.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type daemon struct {
	t      *testing.T
	dir    string
	socket string
	args   []string
	cmd    *exec.Cmd
}

func seqdBin() string {
	if b := os.Getenv("SEQD_BIN"); b != "" {
		return b
	}
	b, _ := filepath.Abs("../../target/debug/seqd")
	return b
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func textCmd(socket, line string) string {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\n", line)
	reply, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(reply)
}

func startSeqd(t *testing.T, extra ...string) *daemon {
	t.Helper()
	if _, err := os.Stat(seqdBin()); err != nil {
		t.Skipf("no seqd binary at %s (cargo build first)", seqdBin())
	}
	d := &daemon{t: t, dir: t.TempDir()}
	d.socket = filepath.Join(d.dir, "seqd.sock")
	d.args = append([]string{"--socket", d.socket, "--data-dir", filepath.Join(d.dir, "data")}, extra...)
	d.start()
	t.Cleanup(d.kill)
	return d
}

func (d *daemon) start() {
	d.cmd = exec.Command(seqdBin(), d.args...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDIS_") && !strings.HasPrefix(kv, "SEQD_") {
			env = append(env, kv)
		}
	}
	d.cmd.Env = env
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	waitUntil(d.t, "seqd", func() bool { return textCmd(d.socket, "PING") == "OK pong" })
}

func (d *daemon) kill() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
	}
}

type redis struct {
	port int
	cmd  *exec.Cmd
}

func startRedis(t *testing.T) *redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("no redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &redis{port: port}
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGCONT)
		r.cmd.Process.Kill()
		r.cmd.Wait()
	})
	waitUntil(t, "redis", func() bool { return r.cli("PING") == "PONG" })
	return r
}

func (r *redis) cli(args ...string) string {
	out, _ := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(r.port)}, args...)...).Output()
	return strings.TrimSpace(string(out))
}

func dial(t *testing.T, d *daemon) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, d.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// bg is a context for one call of a test: 10 s, cancelled at its end.
func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestDailyNumbersFollowTheLocalDateOfNow(t *testing.T) {
	c := dial(t, startSeqd(t))
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Skip("no tzdata")
	}
	now := time.Now().In(kolkata)
	after := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, kolkata)
	before := after.Add(-time.Second)
	ymd := func(t time.Time) uint32 { v, _ := strconv.Atoi(t.Format("20060102")); return uint32(v) }
	n, err := c.IncrementDailySequence(bg(t), "123", before)
	if err != nil || n.Seq != 1 || n.Day != ymd(before) || n.Source != "local" || n.Host != nil {
		t.Fatalf("%+v %v", n, err)
	}
	if n, _ := c.IncrementDailySequence(bg(t), "123", before); n.Seq != 2 {
		t.Fatalf("second: %+v", n)
	}
	if n, _ := c.IncrementDailySequence(bg(t), "123", after); n.Seq != 1 || n.Day != ymd(after) {
		t.Fatalf("after midnight: %+v", n)
	}
	if n, _ := c.GetCurrentSequence(bg(t), "123", before); n.Seq != 2 {
		t.Fatalf("current: %+v", n)
	}
	if _, err := c.IncrementDailySequence(bg(t), "123", time.Now().In(time.FixedZone("IST", 19800))); err == nil {
		t.Fatal("a fixed zone has no IANA name: refused")
	}
}

func TestManyGoroutinesShareOneClient(t *testing.T) {
	c := dial(t, startSeqd(t))
	const goroutines, each = 50, 40
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := uint64(0)
			for i := 0; i < each; i++ {
				n, err := c.GenerateGroupChatSequence(bg(t), "shared")
				if err != nil {
					t.Error(err)
					return
				}
				if n.Seq <= last {
					t.Errorf("not increasing for one goroutine: %d after %d", n.Seq, last)
				}
				last = n.Seq
				mu.Lock()
				if seen[n.Seq] {
					t.Errorf("%d twice", n.Seq)
				}
				seen[n.Seq] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := uint64(1); i <= goroutines*each; i++ {
		if !seen[i] {
			t.Fatalf("%d missing", i)
		}
	}
	if n, _ := c.CurrentGroupChatSequence(bg(t), "shared"); n.Seq != goroutines*each {
		t.Fatalf("current %d", n.Seq)
	}
	if n, _ := c.GeneratePrivateChatSequence(bg(t), "b", "a"); n.Seq != 1 {
		t.Fatalf("private %+v", n)
	}
	if n, _ := c.CurrentPrivateChatSequence(bg(t), "a", "b"); n.Seq != 1 {
		t.Fatalf("private current %+v", n)
	}
}

func TestGapTrackerAndCache(t *testing.T) {
	c := dial(t, startSeqd(t))
	ctx := bg(t)
	if r, _ := c.CheckSequence(ctx, "asx", "BHP", 100); r.Kind != "normal" {
		t.Fatalf("%+v", r)
	}
	if r, _ := c.CheckSequence(ctx, "asx", "BHP", 105); r.Kind != "gap" || r.Gap != 4 || *r.Expected != 101 {
		t.Fatalf("%+v", r)
	}
	rs, err := c.CheckSequenceBatch(ctx, []GapEvent{{"asx", "CBA", 1}, {"asx", "CBA", 1}})
	if err != nil || len(rs) != 2 || rs[1].Kind != "duplicate" {
		t.Fatalf("%+v %v", rs, err)
	}
	st, _ := c.GetStats(ctx, "asx", "BHP")
	if st == nil || st.LastSeq != 105 || len(st.Missing) != 1 || st.Missing[0] != [2]uint64{101, 104} {
		t.Fatalf("%+v", st)
	}
	if err := c.ClearSymbol(ctx, "asx", "BHP"); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.GetStats(ctx, "asx", "BHP"); st != nil {
		t.Fatalf("cleared: %+v", st)
	}
	if n, _ := c.ClearAll(ctx); n != 1 {
		t.Fatalf("clear all: %d", n)
	}

	value := []byte{0, 255, '\n', 'x'}
	if o, err := c.Set(ctx, "cfg:1", value, time.Minute); err != nil || o != "stored" {
		t.Fatalf("%s %v", o, err)
	}
	if v, hit, _ := c.Get(ctx, "cfg:1"); !hit || string(v) != string(value) {
		t.Fatalf("%v %q", hit, v)
	}
	if _, hit, _ := c.Get(ctx, "cfg:none"); hit {
		t.Fatal("miss expected")
	}
	c.SetMany(ctx, []CacheItem{{"cfg:2", []byte("two"), 0}})
	vs, _ := c.GetMany(ctx, "cfg:1", "cfg:2", "cfg:3")
	if len(vs) != 3 || string(vs[1]) != "two" || vs[2] != nil {
		t.Fatalf("%q", vs)
	}
	if d, _ := c.Delete(ctx, "cfg:2", "cfg:9"); d.Count != 1 || d.Deferred {
		t.Fatalf("%+v", d)
	}
	loads := 0
	loader := func(context.Context) ([]byte, error) { loads++; return []byte("db"), nil }
	c.GetOrLoad(ctx, "cfg:x", 0, loader)
	if v, _ := c.GetOrLoad(ctx, "cfg:x", 0, loader); string(v) != "db" || loads != 1 {
		t.Fatalf("%q after %d loads", v, loads)
	}
	if o, _ := c.WriteThrough(ctx, "cfg:x", nil, 0, func(context.Context) error { return nil }); o != "invalidated" {
		t.Fatal(o)
	}
	if d, _ := c.DeletePrefix(ctx, "cfg:"); d.Count != 1 {
		t.Fatalf("%+v", d)
	}

	// Errors carry their code; the connection stays usable.
	if _, err := c.GenerateGroupChatSequence(ctx, "bad id"); code(err) != CodeInvalidArgument {
		t.Fatalf("%v", err)
	}
	if _, err := c.Set(ctx, "seq:group:g", []byte("x"), 0); code(err) != CodeForbidden {
		t.Fatalf("%v", err)
	}
	if _, err := c.Set(ctx, "cfg:big", make([]byte, DefaultMaxFrame+1), 0); code(err) != CodeTooLarge {
		t.Fatalf("%v", err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.Mode != "local" || strings.Join(info.Requests, ",") != strings.Join(requestNames, ",") ||
		info.MaxFrame != DefaultMaxFrame || info.Fields["requests"] == "" {
		t.Fatalf("%+v %v", info, err)
	}
	if h, _ := c.Health(ctx); h.Mode != "local" || h.Redis != "disabled" || h.Breaker != "closed" {
		t.Fatalf("%+v", h)
	}
	if m, _ := c.Metrics(ctx); !strings.Contains(m, "seqd_requests_total") {
		t.Fatal("metrics")
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDeadlinesEndTheWait(t *testing.T) {
	// A socket that accepts and never answers (a hung daemon).
	path := filepath.Join(t.TempDir(), "hung.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Dial(ctx, path); err == nil {
		t.Fatal("dialed a daemon that never answers")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the deadline did not end the wait")
	}
}

func TestTheClientReconnectsAfterSeqdRestarts(t *testing.T) {
	d := startSeqd(t)
	c := dial(t, d)
	if n, _ := c.GenerateGroupChatSequence(bg(t), "r"); n.Seq != 1 {
		t.Fatalf("%+v", n)
	}
	d.kill()
	d.start()
	n, err := c.GenerateGroupChatSequence(bg(t), "r")
	if err != nil || n.Seq != 2 {
		t.Fatalf("after the restart: %+v %v", n, err)
	}
}

func TestWriteThroughWhileSeqdRestartsLeavesNoStaleValue(t *testing.T) {
	r := startRedis(t)
	d := startSeqd(t, "--redis-url", fmt.Sprintf("redis://127.0.0.1:%d/0", r.port))
	c := dial(t, d)
	ctx := bg(t)
	if o, err := c.Set(ctx, "cfg:wt", []byte("old"), 0); err != nil || o != "stored" {
		t.Fatalf("%q %v", o, err)
	}
	d.kill()
	// seqd comes back a moment later, as systemd restarts it; the
	// database write and the first cache tries happen while it is away.
	restarted := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		d.cmd = exec.Command(seqdBin(), d.args...)
		restarted <- d.cmd.Start()
	}()
	o, err := c.WriteThrough(ctx, "cfg:wt", []byte("new"), 0, func(context.Context) error { return nil })
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if err != nil || o != "invalidated" {
		t.Fatalf("%q %v", o, err)
	}
	if got := r.cli("EXISTS", "cfg:wt"); got != "0" {
		t.Fatalf("the old value is still cached (EXISTS %s)", got)
	}
	v, err := c.GetOrLoad(ctx, "cfg:wt", 0, func(context.Context) ([]byte, error) { return []byte("new"), nil })
	if err != nil || string(v) != "new" {
		t.Fatalf("%q %v", v, err)
	}
}

func TestWriteThroughSaysWhenTheCacheWasNotInvalidated(t *testing.T) {
	r := startRedis(t)
	d := startSeqd(t, "--redis-url", fmt.Sprintf("redis://127.0.0.1:%d/0", r.port))
	c := dial(t, d)
	c.Set(bg(t), "cfg:wt", []byte("old"), 0)
	d.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	written := false
	_, err := c.WriteThrough(ctx, "cfg:wt", nil, 0, func(context.Context) error { written = true; return nil })
	if !written || !errors.Is(err, ErrNotInvalidated) {
		t.Fatalf("written=%v err=%v", written, err)
	}
	if got := r.cli("GET", "cfg:wt"); got != "old" {
		t.Fatalf("redis holds %q", got)
	}
	// With seqd away, cache-aside reads the database.
	v, err := c.GetOrLoad(bg(t), "cfg:wt", 0, func(context.Context) ([]byte, error) { return []byte("db"), nil })
	if err != nil || string(v) != "db" {
		t.Fatalf("%q %v", v, err)
	}
}

func TestErrorsMatchErrUnavailableAndTheirCode(t *testing.T) {
	// Nothing listens: Dial keeps trying until its context ends, then
	// says so in an error that matches ErrUnavailable and names the path.
	path := filepath.Join(t.TempDir(), "none.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, path)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), path) {
		t.Fatalf("%v", err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("gave up after %v, before its context ended", time.Since(start))
	}
	// An answered error matches an *Error of its code, and is no
	// ErrUnavailable.
	d := startSeqd(t)
	c := dial(t, d)
	_, err = c.GenerateGroupChatSequence(bg(t), "bad id")
	if !errors.Is(err, &Error{Code: CodeInvalidArgument}) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v", err)
	}
	if errors.Is(err, &Error{Code: CodeForbidden}) {
		t.Fatalf("%v matched another code", err)
	}
	// seqd stopped: a call fails with an error that matches ErrUnavailable.
	d.kill()
	_, err = c.GenerateGroupChatSequence(bg(t), "g")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v", err)
	}
}

func TestEMailIdsAreUsers(t *testing.T) {
	d := startSeqd(t)
	c := dial(t, d)
	ctx := bg(t)
	n, err := c.IncrementDailySequence(ctx, "alice+orders@example.com", time.Now().UTC())
	if err != nil || n.Seq != 1 || n.Source != SourceLocal {
		t.Fatalf("%+v %v", n, err)
	}
	for _, bad := range []string{"a:b", "a*", "{a}", "a b"} {
		if _, err := c.IncrementDailySequence(ctx, bad, time.Now().UTC()); !errors.Is(err, &Error{Code: CodeInvalidArgument}) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestDialWaitsForSeqdToComeUp(t *testing.T) {
	d := startSeqd(t)
	d.kill()
	os.Remove(d.socket)
	started := make(chan *exec.Cmd, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		cmd := exec.Command(seqdBin(), d.args...)
		if err := cmd.Start(); err != nil {
			cmd = nil
		}
		started <- cmd
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, d.socket)
	if d.cmd = <-started; d.cmd == nil {
		t.Fatal("seqd did not start")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.GenerateGroupChatSequence(ctx, "up"); err != nil || n.Seq != 1 {
		t.Fatalf("%+v %v", n, err)
	}
}

func TestAHungSeqdEndsACallWithoutADeadlineAfterCallTimeout(t *testing.T) {
	d := startSeqd(t)
	c := dial(t, d)
	c.CallTimeout = 300 * time.Millisecond
	d.cmd.Process.Signal(syscall.SIGSTOP)
	defer d.cmd.Process.Signal(syscall.SIGCONT)
	start := time.Now()
	_, err := c.GenerateGroupChatSequence(context.Background(), "hung")
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
}

func TestRedisMode(t *testing.T) {
	r := startRedis(t)
	d := startSeqd(t, "--redis-url", fmt.Sprintf("redis://127.0.0.1:%d/0", r.port), "--redis-timeout-ms", "200")
	c := dial(t, d)
	ctx := bg(t)
	n, err := c.GenerateGroupChatSequence(ctx, "g")
	if err != nil || n.Seq != 1 || n.Source != "redis" || n.Host != nil {
		t.Fatalf("%+v %v", n, err)
	}
	if got := r.cli("GET", "seq:group:g"); got != "1" {
		t.Fatalf("redis holds %q", got)
	}
	c.Set(ctx, "cfg:live", []byte("cached"), 0)
	r.cmd.Process.Signal(syscall.SIGSTOP)
	defer r.cmd.Process.Signal(syscall.SIGCONT)
	n, err = c.GenerateGroupChatSequence(ctx, "g")
	if err != nil || n.Source != "local" || n.Host == nil || n.Seq != 2 {
		t.Fatalf("during the outage: %+v %v", n, err)
	}
	if _, _, err := c.Get(ctx, "cfg:live"); code(err) != CodeUnavailable || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v", err)
	}
	v, err := c.GetOrLoad(ctx, "cfg:live", 0, func(context.Context) ([]byte, error) { return []byte("db"), nil })
	if err != nil || string(v) != "db" {
		t.Fatalf("%q %v", v, err)
	}
}

// A module outside the repository uses the client with one replace
// directive (the module path resolves once the repository is published;
// until then the replace points at a checkout), offline.
func TestAFreshModuleUsesTheClientWithAReplace(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool")
	}
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	app := t.TempDir()
	gomod := "module example.com/app\n\ngo 1.19\n\nreplace github.com/seqd/seqd/clients/go => " + here + "\n"
	main := `package main

import (
	"fmt"

	seqd "github.com/seqd/seqd/clients/go"
)

func main() { fmt.Println(seqd.FormatOrderID(seqd.DailyNumber{Seq: 1, Day: 20261122})) }
`
	for name, text := range map[string]string{"go.mod": gomod, "main.go": main} {
		if err := os.WriteFile(filepath.Join(app, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"vet", "./..."}, {"run", "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = app
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
		if args[0] == "run" && strings.TrimSpace(string(out)) != "ORD-20261122-00001" {
			t.Fatalf("go run printed %q", out)
		}
	}
}
