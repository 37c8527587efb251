// Package crash kills skyjoin with SIGKILL again and again while events
// stream in, and checks that every event answered 202 ends up stored exactly
// once. The load goes to loopback only, bounded in count and time.
package crash

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
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
	dir, err := os.MkdirTemp("", "skyjoin-crash")
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

var apiLine = regexp.MustCompile(`API\s+(http://\S+)`)

type server struct {
	cmd  *exec.Cmd
	base string
	done chan struct{}
	logs *bytes.Buffer
}

// startUp starts `skyjoin up --demo --collect=false` on addr (a fixed port,
// so that clients find it again after a restart) and waits until it is ready.
func startUp(t *testing.T, dataDir, addr string) *server {
	t.Helper()
	return startProc(t, "up", "--demo", "--collect=false", "--addr", addr, "--data-dir", dataDir,
		"--log-level", "warn", "--stats-every", "0", "--enrich-ack-wait", "3s")
}

// startProc starts skyjoin with args and waits until its API is ready.
func startProc(t *testing.T, args ...string) *server {
	t.Helper()
	cmd := exec.Command(binary, args...)
	out, _ := cmd.StdoutPipe()
	s := &server{cmd: cmd, done: make(chan struct{}), logs: &bytes.Buffer{}}
	cmd.Stderr = &lockedWriter{w: s.logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(s.done) }()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := apiLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case s.base = <-found:
	case <-s.done:
		t.Fatalf("skyjoin exited at start:\n%s", s.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("skyjoin not up within 60 s:\n%s", s.logs)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(s.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
	}
	t.Fatalf("skyjoin not ready within 30 s:\n%s", s.logs)
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (s *server) kill(t *testing.T) {
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatal("skyjoin did not die")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	// Let the kernel pick a port, then start skyjoin on it: skyjoin must
	// come back on the same port after each kill.
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func mkEvent(id int, now time.Time) event.Event {
	lat, lon := float64(id%170)-85, float64(id%350)-175
	return event.Event{EventID: fmt.Sprintf("crash-%07d", id), EventType: "crash.test", OccurredAt: now,
		User: event.User{ID: fmt.Sprintf("u%d", id%1000)}, Location: event.Location{Latitude: &lat, Longitude: &lon}}
}

// TestKillUpRepeatedly streams events from 4 clients (batches of 1 to 100,
// retried until answered 202, as a careful client does), kills `skyjoin up`
// with SIGKILL at random moments, restarts it each time, and at the end
// checks that the store holds every event answered 202 exactly once.
func TestKillUpRepeatedly(t *testing.T) {
	total, kills := 100_000, 5
	if testing.Short() {
		total, kills = 20_000, 3
	}
	dataDir := t.TempDir()
	addr := freeAddr(t)
	srv := startUp(t, dataDir, addr)
	base := srv.base
	defer func() { srv.cmd.Process.Kill(); <-srv.done }()

	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var accepted, attempts atomic.Int64
	var mu sync.Mutex
	acceptedIDs := make(map[string]bool, total)
	stop := make(chan struct{})
	deadline := time.Now().Add(10 * time.Minute)
	var wg sync.WaitGroup
	const clients = 4
	per := total / clients
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for i := c * per; i < (c+1)*per; {
				n := min(1+rng.IntN(100), (c+1)*per-i)
				batch := make([]event.Event, n)
				for k := range batch {
					batch[k] = mkEvent(i+k, now)
				}
				body, _ := json.Marshal(batch)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if time.Now().After(deadline) {
						return
					}
					attempts.Add(1)
					resp, err := hc.Post(base+"/v1/events", "application/json", bytes.NewReader(body))
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							break
						}
					}
					time.Sleep(20 * time.Millisecond) // down, or 503: retry the same events
				}
				mu.Lock()
				for _, e := range batch {
					acceptedIDs[e.EventID] = true
				}
				mu.Unlock()
				accepted.Add(int64(n))
				i += n
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	rng := rand.New(rand.NewPCG(42, 42))
	for k := range kills {
		// A random moment in the stream: after 10% to 90% of its share.
		target := int64(total) * int64(k+1) / int64(kills+1)
		target += int64(rng.IntN(total/(kills+1)/2+1)) - int64(total/(kills+1)/4)
		for accepted.Load() < target {
			select {
			case <-finished:
				t.Fatalf("the stream ended before kill %d", k+1)
			case <-time.After(5 * time.Millisecond):
			}
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		srv.kill(t)
		t.Logf("kill %d: SIGKILL with %d events accepted", k+1, accepted.Load())
		srv = startUp(t, dataDir, addr)
	}
	select {
	case <-finished:
	case <-time.After(time.Until(deadline) + time.Minute):
		close(stop)
		t.Fatal("the stream did not finish in time")
	}
	if got := accepted.Load(); got != int64(total) {
		t.Fatalf("%d of %d events accepted before the deadline", got, total)
	}

	// Wait until the store holds them all, then check exactly once.
	var stored map[string]int
	for wait := time.Now().Add(3 * time.Minute); ; {
		stored = listAll(t, hc, base)
		missing := 0
		for id := range acceptedIDs {
			if stored[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("%d events answered 202 are not stored after 3 minutes", missing)
		}
		time.Sleep(500 * time.Millisecond)
	}
	dups := 0
	for id, n := range stored {
		if n > 1 {
			dups++
			t.Errorf("%s stored %d times", id, n)
		}
	}
	t.Logf("%d events accepted (%d requests tried), %d kills; stored %d distinct, %d duplicated, 0 missing",
		total, attempts.Load(), kills, len(stored), dups)
}

func listAll(t *testing.T, hc *http.Client, base string) map[string]int {
	t.Helper()
	out := map[string]int{}
	cursor := ""
	for {
		u := base + "/v1/events?order=asc&limit=1000"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		resp, err := hc.Get(u)
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

var brokerLine = regexp.MustCompile(`broker\s+(nats://\S+)`)

// TestKillWorkerRepeatedly runs the stages as separate processes (broker,
// ingest, enrich) and kills the enrich worker with SIGKILL again and again
// while events stream in through ingest; at the end every event answered
// 202 is stored exactly once.
func TestKillWorkerRepeatedly(t *testing.T) {
	total, kills := 100_000, 5
	if testing.Short() {
		total, kills = 20_000, 3
	}
	root := t.TempDir()
	listen := freeAddr(t)
	bcmd := exec.Command(binary, "broker", "--listen", listen, "--data-dir", filepath.Join(root, "broker"), "--log-level", "warn")
	bout, _ := bcmd.StdoutPipe()
	if err := bcmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { bcmd.Process.Kill(); bcmd.Wait() }()
	sc := bufio.NewScanner(bout)
	brokerURL := ""
	for sc.Scan() {
		if m := brokerLine.FindStringSubmatch(sc.Text()); m != nil {
			brokerURL = m[1]
			break
		}
	}
	if brokerURL == "" {
		t.Fatal("the broker did not start")
	}
	go io.Copy(io.Discard, bout)

	ing := startProc(t, "ingest", "--broker", brokerURL, "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(root, "ingest"),
		"--log-level", "warn")
	defer func() { ing.cmd.Process.Kill(); <-ing.done }()
	enrichAddr := freeAddr(t)
	enrichArgs := []string{"enrich", "--demo", "--broker", brokerURL, "--addr", enrichAddr, "--data-dir", filepath.Join(root, "enrich"),
		"--log-level", "warn", "--stats-every", "0", "--enrich-ack-wait", "3s"}
	worker := startProc(t, enrichArgs...)
	defer func() { worker.cmd.Process.Kill(); <-worker.done }()

	hc := &http.Client{Timeout: 10 * time.Second}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var accepted atomic.Int64
	ids := make(map[string]bool, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(10 * time.Minute)
	const clients = 4
	per := total / clients
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			for i := c * per; i < (c+1)*per; {
				n := min(1+rng.IntN(100), (c+1)*per-i)
				batch := make([]event.Event, n)
				for k := range batch {
					batch[k] = mkEvent(i+k, now)
				}
				body, _ := json.Marshal(batch)
				for time.Now().Before(deadline) {
					resp, err := hc.Post(ing.base+"/v1/events", "application/json", bytes.NewReader(body))
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							break
						}
					}
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				for _, e := range batch {
					ids[e.EventID] = true
				}
				mu.Unlock()
				accepted.Add(int64(n))
				i += n
			}
		})
	}
	// Kill the worker while it works: at random points of its progress
	// through the stream (the store's newest seq).
	rng := rand.New(rand.NewPCG(7, 7))
	for k := range kills {
		target := int64(total) * int64(k+1) / int64(kills+1)
		target += int64(rng.IntN(total/(kills+1)/2+1)) - int64(total/(kills+1)/4)
		seq := int64(0)
		for time.Now().Before(deadline) {
			if seq = newestSeq(hc, worker.base); seq >= target {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		worker.kill(t)
		t.Logf("kill %d: worker SIGKILLed at seq %d, %d events accepted", k+1, seq, accepted.Load())
		worker = startProc(t, enrichArgs...)
	}
	wg.Wait()
	if got := accepted.Load(); got != int64(total) {
		t.Fatalf("%d of %d events accepted before the deadline", got, total)
	}
	var stored map[string]int
	for wait := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		stored = listAll(t, hc, worker.base)
		missing := 0
		for id := range ids {
			if stored[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("%d events answered 202 are not stored after 3 minutes", missing)
		}
	}
	for id, n := range stored {
		if n > 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	t.Logf("%d events accepted through ingest, worker killed %d times; %d stored, exactly once each", total, kills, len(stored))
}

// newestSeq is the seq of the newest stored record, 0 if none or unknown.
func newestSeq(hc *http.Client, base string) int64 {
	resp, err := hc.Get(base + "/v1/events?limit=1")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var page struct {
		Events []struct {
			Seq int64 `json:"seq"`
		} `json:"events"`
	}
	if json.NewDecoder(resp.Body).Decode(&page) != nil || len(page.Events) == 0 {
		return 0
	}
	return page.Events[0].Seq
}
