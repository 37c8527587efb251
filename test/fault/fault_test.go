// Package fault injects faults into a running skyjoin made of separate
// processes and checks that no accepted event is lost and that it recovers
// by itself. Load goes to loopback only, bounded in count and time.
package fault

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skyjoin-fault")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "skyjoin")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/skyjoin")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build skyjoin:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	out  chan string
	logs *lockedBuf
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// start runs skyjoin with args and waits for a stdout line matching re.
func start(t *testing.T, re *regexp.Regexp, args ...string) (*proc, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, _ := cmd.StdoutPipe()
	p := &proc{cmd: cmd, done: make(chan struct{}), logs: &lockedBuf{}}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("skyjoin %s stderr:\n%s", args[0], p.logs)
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case s := <-found:
		return p, s
	case <-p.done:
		t.Fatalf("skyjoin %s exited at start:\n%s", args[0], p.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("skyjoin %s did not start within 60 s:\n%s", args[0], p.logs)
	}
	return nil, ""
}

func (p *proc) kill(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

var (
	apiLine    = regexp.MustCompile(`API\s+(http://\S+)`)
	brokerLine = regexp.MustCompile(`broker\s+(nats://\S+)`)
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func mkEvent(id int, now time.Time) event.Event {
	lat, lon := float64(id%170)-85, float64(id%350)-175
	return event.Event{EventID: fmt.Sprintf("fault-%07d", id), EventType: "fault.test", OccurredAt: now,
		User: event.User{ID: fmt.Sprintf("u%d", id%1000)}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
}

// stream sends total events in batches of 50 from 2 clients, each batch
// retried until answered 202. It returns the count accepted so far and a
// channel closed when all are accepted, and counts the 503 answers.
func stream(base string, total int, deadline time.Time) (accepted, unavailable *atomic.Int64, done chan struct{}) {
	accepted, unavailable = &atomic.Int64{}, &atomic.Int64{}
	done = make(chan struct{})
	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Go(func() {
			for i := c * total / 2; i < (c+1)*total/2; i += 50 {
				batch := make([]event.Event, 50)
				for k := range batch {
					batch[k] = mkEvent(i+k, now)
				}
				body, _ := json.Marshal(batch)
				for time.Now().Before(deadline) {
					resp, err := hc.Post(base+"/v1/events", "application/json", bytes.NewReader(body))
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							accepted.Add(50)
							break
						}
						if resp.StatusCode == http.StatusServiceUnavailable {
							unavailable.Add(1)
						}
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	return accepted, unavailable, done
}

func countStored(t *testing.T, base string) map[string]int {
	t.Helper()
	out := map[string]int{}
	cursor := ""
	for {
		u := base + "/v1/events?order=asc&limit=1000"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Events []struct {
				EventID string `json:"event_id"`
			} `json:"events"`
			NextCursor string `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			out[e.EventID]++
		}
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

func waitAllStored(t *testing.T, base string, total int) {
	t.Helper()
	var stored map[string]int
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		stored = countStored(t, base)
		if len(stored) >= total {
			break
		}
	}
	for i := range total {
		id := mkEvent(i, time.Time{}).EventID
		if stored[id] != 1 {
			t.Fatalf("%s stored %d times (%d distinct stored)", id, stored[id], len(stored))
		}
	}
	if len(stored) != total {
		t.Fatalf("%d distinct stored, want %d", len(stored), total)
	}
}

// TestBrokerDown: the broker runs as its own process; it is killed for a
// few seconds mid-stream. Ingest answers 503 meanwhile, nothing accepted is
// lost, and skyjoin carries on by itself when the broker is back.
func TestBrokerDown(t *testing.T) {
	total := 20_000
	if testing.Short() {
		total = 5_000
	}
	brokerDir, upDir := t.TempDir(), t.TempDir()
	listen := freePort(t)
	br, brokerURL := start(t, brokerLine, "broker", "--listen", listen, "--data-dir", brokerDir, "--log-level", "warn")
	_, base := start(t, apiLine, "up", "--demo", "--collect=false", "--broker", brokerURL, "--addr", "127.0.0.1:0",
		"--data-dir", upDir, "--log-level", "warn", "--stats-every", "0")

	accepted, unavailable, done := stream(base, total, time.Now().Add(3*time.Minute))
	for accepted.Load() < int64(total/3) {
		time.Sleep(5 * time.Millisecond)
	}
	br.kill(t)
	t.Logf("broker killed with %d events accepted", accepted.Load())
	before := accepted.Load()
	time.Sleep(3 * time.Second)
	if during := accepted.Load() - before; during > 100 {
		t.Errorf("%d events accepted while the broker was down", during)
	}
	start(t, brokerLine, "broker", "--listen", listen, "--data-dir", brokerDir, "--log-level", "warn")
	t.Logf("broker back; %d answers were 503 meanwhile", unavailable.Load())
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the stream did not finish: %d accepted", accepted.Load())
	}
	if unavailable.Load() == 0 {
		t.Error("no 503 while the broker was down")
	}
	waitAllStored(t, base, total)
	t.Logf("%d events accepted, all stored exactly once", total)
}
