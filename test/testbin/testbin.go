// Package testbin is the harness of the system tests under test/: it builds
// the skyjoin binary, runs it as a separate process, waits for it to be up
// and reads back what it stored, through its HTTP API only.
package testbin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/platform/readyfile"
)

// Fields of the JSON file a skyjoin process writes once it is ready
// (--ready-file): the API's base URL (the stage commands), the admin
// listener's (metrics and debug: /debug/pipeline), the broker's URL
// (`broker`) and the simulated weather API's (`sim`).
const (
	APIURL     = "url"
	AdminURL   = "admin_url"
	BrokerURL  = "broker"
	WeatherURL = "weather"
)

// The key that seals webhook secrets in test processes that share a
// registry (every deliver stage on one broker must have the same): give
// WebhookKeyArgs to the process and WebhookKeyEnv in Options.Env.
const webhookKeyVar = "SKYJOIN_TEST_WEBHOOK_KEY"

var (
	WebhookKeyArgs = []string{"--webhook-secret-key", "env://" + webhookKeyVar}
	WebhookKeyEnv  = webhookKeyVar + "=dGVzdC1vbmx5LXdlYmhvb2sta2V5LTMyLWJ5dGVzLiE=" // 32 bytes, tests only
)

// Build builds ../../cmd/skyjoin (the tests run in test/NAME) into dir and
// returns the binary's path; the go tool's output goes to out.
func Build(dir string, out io.Writer) (string, error) {
	bin := filepath.Join(dir, "skyjoin")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/skyjoin")
	build.Stdout, build.Stderr = out, out
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build skyjoin: %w", err)
	}
	return bin, nil
}

// Main is a TestMain: it builds skyjoin into a temporary directory, sets
// *binary to its path, runs the tests, removes the directory and exits.
func Main(m *testing.M, binary *string) {
	wd, _ := os.Getwd()
	dir, err := os.MkdirTemp("", "skyjoin-"+filepath.Base(wd))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *binary, err = Build(dir, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Options are the ways a test's processes differ; the zero value is the
// common case.
type Options struct {
	// StartWait bounds the wait for the ready file; 0 means 60 s.
	StartWait time.Duration
	// LogTail is how much of the end of stderr is shown on failure; 0
	// means all of it.
	LogTail int
	// Env is added to the process's environment (KEY=VALUE).
	Env []string
	// Term makes the cleanup send SIGTERM first (SIGKILL after 30 s);
	// otherwise the cleanup sends SIGKILL.
	Term bool
}

// Proc is a running skyjoin process. Its stderr is kept and shown when the
// test fails; at the end of the test it is killed (see Options.Term).
type Proc struct {
	cmd  *exec.Cmd
	name string // the subcommand
	tail int
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
	logs lockedBuf

	ready map[string]any // the ready file
}

// Ready is a string field of the process's ready file ("" if absent).
func (p *Proc) Ready(field string) string {
	v, _ := p.ready[field].(string)
	return v
}

// Start runs binary with args under the default Options.
func Start(t testing.TB, binary string, field string, args ...string) (*Proc, string) {
	t.Helper()
	return Options{}.Start(t, binary, field, args...)
}

// StartAPI runs binary with args, waits for its ready file and for /readyz,
// and returns the process and the API's base URL.
func StartAPI(t testing.TB, binary string, args ...string) (*Proc, string) {
	t.Helper()
	return Options{}.StartAPI(t, binary, args...)
}

// StartAPI is StartAPI under o.
func (o Options) StartAPI(t testing.TB, binary string, args ...string) (*Proc, string) {
	t.Helper()
	p, base := o.Start(t, binary, APIURL, args...)
	WaitReady(t, base)
	return p, base
}

// Start runs binary with args and --ready-file, waits for the process to
// write that file, and returns the process and the file's string field.
func (o Options) Start(t testing.TB, binary string, field string, args ...string) (*Proc, string) {
	t.Helper()
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	cmd := exec.Command(binary, append(args, "--ready-file", readyFile)...)
	cmd.Stdout = io.Discard
	// These tests page through every record and post as fast as they can:
	// they test the pipeline, not one caller's rate limit (which the
	// platform and app tests do). o.Env can set the limits again.
	cmd.Env = append(os.Environ(), "SKYJOIN_RATE_INGEST=0", "SKYJOIN_RATE_READ=0")
	cmd.Env = append(cmd.Env, o.Env...)
	p := &Proc{cmd: cmd, name: "skyjoin", tail: o.LogTail, done: make(chan struct{})}
	if len(args) > 0 {
		p.name += " " + args[0]
	}
	cmd.Stderr = &p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if o.Term {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
			}
		}
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.Logs())
		}
	})
	wait := o.StartWait
	if wait == 0 {
		wait = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var ready map[string]any
	switch err := readyfile.Wait(ctx, readyFile, p.done, &ready); {
	case errors.Is(err, readyfile.ErrExited):
		t.Fatalf("%s exited at start: %v\n%s", p.name, p.err, p.Logs())
	case errors.Is(err, context.DeadlineExceeded):
		t.Fatalf("%s did not write its ready file within %s\n%s", p.name, wait, p.Logs())
	case err != nil:
		t.Fatalf("%s: %v", p.name, err)
	}
	p.ready = ready
	v, _ := ready[field].(string)
	if v == "" {
		t.Fatalf("%s: ready file has no %q: %v", p.name, field, ready)
	}
	return p, v
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	p.Signal(t, syscall.SIGKILL)
}

// Signal sends sig and waits (30 s at most) for the process to exit; after
// SIGTERM it must exit cleanly.
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30 s of %v", p.name, sig)
	}
	if sig == syscall.SIGTERM && p.err != nil {
		t.Fatalf("%s exited with %v after SIGTERM\n%s", p.name, p.err, p.Logs())
	}
}

// Err is how the process exited; read it after Done is closed.
func (p *Proc) Err() error { return p.err }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Logs is the process's stderr so far (its end, under Options.LogTail).
func (p *Proc) Logs() string {
	p.logs.mu.Lock()
	defer p.logs.mu.Unlock()
	b := p.logs.b
	if p.tail > 0 && len(b) > p.tail {
		return fmt.Sprintf("(last %d bytes)\n%s", p.tail, b[len(b)-p.tail:])
	}
	return string(b)
}

type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

// WaitReady waits (30 s at most) until base/readyz answers 200.
func WaitReady(t testing.TB, base string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("%s/readyz did not answer 200 within 30 s", base)
}

// FreeAddr is a loopback address with a port free right now: for a process
// that must come back on the same port after a restart.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Post sends body (JSON) to base/v1/events once and returns the answer's
// status, 0 when there was none.
func Post(hc *http.Client, base string, body []byte) int {
	resp, err := hc.Post(base+"/v1/events", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// ListEach pages through GET base/v1/events in storage order, 1000 records
// a page, and calls fn with each record decoded as an R; it returns the
// number of pages read.
func ListEach[R any](t testing.TB, hc *http.Client, base string, fn func(R)) (pages int) {
	t.Helper()
	cursor := ""
	for {
		u := base + "/v1/events?order=asc&limit=1000"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("list stored events: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("list stored events: %v", err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list stored events: GET %s: %d %s", u, resp.StatusCode, b)
		}
		var page struct {
			Events     []R    `json:"events"`
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatalf("list stored events: %v", err)
		}
		pages++
		for _, r := range page.Events {
			fn(r)
		}
		if page.NextCursor == "" {
			return pages
		}
		cursor = page.NextCursor
	}
}

// List is every stored record, in storage order, decoded as an R.
func List[R any](t testing.TB, hc *http.Client, base string) []R {
	t.Helper()
	var out []R
	ListEach(t, hc, base, func(r R) { out = append(out, r) })
	return out
}

// ID is the event id of a stored record, for ListEach when that is all a
// test reads.
type ID struct {
	EventID string `json:"event_id"`
}

// ListIDs counts the stored records of each event id.
func ListIDs(t testing.TB, hc *http.Client, base string) map[string]int {
	t.Helper()
	out := map[string]int{}
	ListEach(t, hc, base, func(r ID) { out[r.EventID]++ })
	return out
}

// Missing counts the ids not in stored (as ListIDs counts them).
func Missing(stored map[string]int, ids map[string]bool) int {
	n := 0
	for id := range ids {
		if stored[id] == 0 {
			n++
		}
	}
	return n
}

// Duplicated reports each id stored more than once (as ListIDs counts them)
// as an error of t, and returns how many there are.
func Duplicated(t testing.TB, stored map[string]int) int {
	t.Helper()
	n := 0
	for id, k := range stored {
		if k > 1 {
			n++
			t.Errorf("%s stored %d times", id, k)
		}
	}
	return n
}

// GetJSON decodes the 200 answer to GET u into v.
func GetJSON(t testing.TB, hc *http.Client, u string, v any) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// PipelineCounters is the part of GET /debug/pipeline the tests read.
type PipelineCounters struct {
	Stored int64 `json:"stored"`
	Dead   int64 `json:"dead_lettered"`
	Failed int64 `json:"failed_batches"`
}

// Counters reads GET /debug/pipeline on the admin listener at admin.
func Counters(t testing.TB, admin string) PipelineCounters {
	t.Helper()
	var c PipelineCounters
	GetJSON(t, http.DefaultClient, admin+"/debug/pipeline", &c)
	return c
}

// DeliveredIDs reads the body of a webhook delivery (docs/webhooks.md) and
// returns the event ids of its records, in order.
func DeliveredIDs(r io.Reader) ([]string, error) {
	var body struct {
		Records []struct {
			EventID string `json:"event_id"`
		} `json:"records"`
	}
	if err := json.NewDecoder(r).Decode(&body); err != nil {
		return nil, err
	}
	ids := make([]string, len(body.Records))
	for i, rec := range body.Records {
		ids[i] = rec.EventID
	}
	return ids, nil
}
