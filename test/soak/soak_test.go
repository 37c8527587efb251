// Package soak offers skyjoin twice the rate this machine sustains, from a
// separate process on loopback, bounded in count and time, and checks that
// overload is answered with 503 and Retry-After (admission control), that
// every event answered 202 is stored exactly once, that the server's memory
// stays bounded and that the backlog drains once the load stops.
//
//	go test ./test/soak -v                  # 60 s of overload
//	go test ./test/soak -v -short           # 10 s
//	SKYJOIN_SOAK_DURATION=5m SKYJOIN_SOAK_RATE=20000 SKYJOIN_SOAK_MAX_RSS_MB=768 go test ./test/soak -v -timeout 30m
package soak

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/bench"
	"github.com/skyjoin/skyjoin/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

const (
	batchSize   = 100
	concurrency = 8
	// maxEvents bounds the events offered in all, refused ones included (the
	// seq table below: a byte per event).
	maxEvents = 8_000_000
	// defaultMaxRSSMB is the bound on the server's peak RSS (VmHWM). Measured
	// (Nov 2026, this 2-core machine, 60 s at 2x): see docs/guarantees.md;
	// the bound leaves room for the work on memory going on.
	defaultMaxRSSMB = 1024
)

// envDuration, envFloat: settings of a longer or different soak.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func envFloat(t *testing.T, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return f
}

// startUp starts `skyjoin up --demo` (weather from the built-in simulator,
// no collector) and returns its API and admin listener base URLs and its
// process id.
func startUp(t *testing.T, extra ...string) (string, string, int) {
	t.Helper()
	args := append([]string{"up", "--demo", "--collect=false", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--log-level", "warn", "--stats-every", "0"}, extra...)
	p, base := testbin.Options{LogTail: 8 << 10}.StartAPI(t, binary, args...)
	return base, p.Ready(testbin.AdminURL), p.Pid()
}

// Event states in the offered table.
const (
	unsent = iota
	accepted
	refused    // 503 with Retry-After
	refusedBad // 503 without Retry-After
	otherCode
	noAnswer
)

// offered is what the load generator did with each event, by sequence
// number; each request writes only its own events' entries.
type offered struct {
	state []uint8
	n     atomic.Int64 // events offered
}

// tally counts the answers of one phase.
type tally struct {
	requests, accepted, refused, refusedBad, other, noAnswer atomic.Int64
	firstOther                                               atomic.Value
}

func (ta *tally) String() string {
	return fmt.Sprintf("%d requests: %d events accepted (202), %d requests refused with 503 + Retry-After, %d 503 without Retry-After, %d other answers, %d without an answer",
		ta.requests.Load(), ta.accepted.Load(), ta.refused.Load(), ta.refusedBad.Load(), ta.other.Load(), ta.noAnswer.Load())
}

// offer sends batches of new events from concurrency workers for d, at rate
// events/s in all (0: as fast as they can), without retrying: a refused
// batch is not sent again (the point is the load offered, and a refused
// event was not accepted).
func offer(ctx context.Context, c *bench.Client, evs *bench.Events, tab *offered, rate float64, d time.Duration) *tally {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	ta := &tally{}
	var pace <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) * batchSize / rate))
		defer t.Stop()
		pace = t.C
	}
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			buf := make([]byte, 0, 256<<10)
			for {
				if pace != nil {
					select {
					case <-ctx.Done():
						return
					case <-pace:
					}
				}
				if ctx.Err() != nil || tab.n.Add(batchSize) > maxEvents {
					return
				}
				var first int64
				buf, first = evs.Batch(buf, batchSize)
				ta.requests.Add(1)
				// Each request gets its own deadline beyond the phase's, so
				// that the end of the phase does not count as a timeout.
				rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
				a := c.PostAnswer(rctx, buf)
				rcancel()
				st := uint8(accepted)
				switch {
				case a.Status == http.StatusAccepted:
					ta.accepted.Add(batchSize)
				case a.Status == http.StatusServiceUnavailable && a.RetryAfter != "":
					st = refused
					ta.refused.Add(1)
				case a.Status == http.StatusServiceUnavailable:
					st = refusedBad
					ta.refusedBad.Add(1)
				case a.Status != 0:
					st = otherCode
					ta.other.Add(1)
					ta.firstOther.CompareAndSwap(nil, fmt.Sprintf("status %d", a.Status))
				default:
					st = noAnswer
					ta.noAnswer.Add(1)
					ta.firstOther.CompareAndSwap(nil, fmt.Sprint(a.Err))
				}
				for i := range int64(batchSize) {
					tab.state[first+i] = st
				}
			}
		})
	}
	wg.Wait()
	return ta
}

// waitDrained waits until the broker holds no message for the worker.
func waitDrained(t *testing.T, c *bench.Client, limit time.Duration) bench.Debug {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(250 * time.Millisecond) {
		d := debug(t, c)
		if d.Backlog == 0 {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("(d) backlog of %d messages not drained %s after the load stopped", d.Backlog, limit)
		}
	}
}

// debug reads GET /debug/pipeline.
func debug(t *testing.T, c *bench.Client) bench.Debug {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := c.Debug(ctx)
	if err != nil {
		t.Fatalf("read the server's counters: %v", err)
	}
	return d
}

// TestSoakTwiceSustainable finds the rate this machine sustains (the
// pipeline's stored events/s while ingest runs flat out for 5 s, batches of
// 100), then offers twice that, paced, for 60 s (10 s under -short), and
// checks: (a) every event answered 202 is stored exactly once; (b) the
// overload is answered 503 with Retry-After, never another error or a
// timeout; (c) the server's peak RSS (VmHWM) stays under the bound; (d) the
// backlog drains once the load stops.
//
// Under -short the server's backlog limit is 16 MiB instead of 64 MiB, so
// that 10 s reach it.
//
// SKYJOIN_SOAK_RATE sets the offered rate (events/s) instead of measuring;
// SKYJOIN_SOAK_DURATION the overload's length; SKYJOIN_SOAK_MAX_RSS_MB the
// bound (default 1024).
func TestSoakTwiceSustainable(t *testing.T) {
	dur := envDuration(t, "SKYJOIN_SOAK_DURATION", 60*time.Second)
	var upArgs []string
	if testing.Short() && os.Getenv("SKYJOIN_SOAK_DURATION") == "" {
		// 10 s at twice the rate fill the default backlog limit (64 MiB,
		// about 100,000 events) only just: a quarter of it makes sure the
		// short run reaches the admission control.
		dur, upArgs = 10*time.Second, []string{"--ingest-max-backlog-bytes", strconv.Itoa(16 << 20)}
	}
	maxRSS := int64(envFloat(t, "SKYJOIN_SOAK_MAX_RSS_MB", defaultMaxRSSMB) * (1 << 20))
	rate := envFloat(t, "SKYJOIN_SOAK_RATE", 0)

	base, admin, pid := startUp(t, upArgs...)
	if err := bench.CheckLoopback(base); err != nil {
		t.Fatal(err)
	}
	c := bench.NewClient(base, concurrency)
	c.Admin = admin
	evs, err := bench.NewEvents(time.Now().UTC().Format("150405.000"), 2000)
	if err != nil {
		t.Fatal(err)
	}
	tab := &offered{state: make([]uint8, maxEvents+batchSize+1)}
	ctx := context.Background()

	// 1. The sustainable rate: the events the whole pipeline takes in and
	// stores per second, closed loop: ingest offered all it can take for 5 s,
	// then the backlog drained; stored events over the time both took. (The
	// worker's rate while ingest runs flat out underestimates it: ingest
	// takes the CPU; the worker alone overestimates it.)
	if rate == 0 {
		const measure = 5 * time.Second
		d0 := debug(t, c)
		t0 := time.Now()
		ta := offer(ctx, c, evs, tab, 0, measure)
		el := time.Since(t0)
		d1 := debug(t, c)
		d2 := waitDrained(t, c, 2*time.Minute)
		total := time.Since(t0)
		sustained := float64(d2.Stored-d0.Stored) / total.Seconds()
		t.Logf("measure, %s flat out: %s; accepted %.0f events/s, stored %.0f events/s meanwhile; drained after %s: %.0f events/s sustained (accepted and stored)",
			el.Round(time.Millisecond), ta, float64(ta.accepted.Load())/el.Seconds(), float64(d1.Stored-d0.Stored)/el.Seconds(),
			total.Round(100*time.Millisecond), sustained)
		if sustained <= 0 {
			t.Fatal("nothing stored while measuring the sustainable rate")
		}
		rate = 2 * sustained
	}

	// 2. The soak: twice that, paced.
	d0 := debug(t, c)
	t0 := time.Now()
	ta := offer(ctx, c, evs, tab, rate, dur)
	el := time.Since(t0)
	d1 := debug(t, c)
	offeredRate := float64(ta.requests.Load()*batchSize) / el.Seconds()
	if tab.n.Load() > maxEvents {
		t.Logf("the soak stopped at the bound of %d events offered", maxEvents)
	}
	acceptedRate := float64(ta.accepted.Load()) / el.Seconds()
	t.Logf("soak, %s at %.0f events/s offered (%.0f achieved, %.1fx what was accepted): %s; accepted %.0f events/s, stored %.0f events/s; backlog at the end %d messages",
		el.Round(time.Millisecond), rate, offeredRate, offeredRate/acceptedRate, ta, acceptedRate,
		float64(d1.Stored-d0.Stored)/el.Seconds(), d1.Backlog)
	if ta.other.Load() > 0 || ta.noAnswer.Load() > 0 || ta.refusedBad.Load() > 0 {
		t.Errorf("(b) overload must be answered 503 with Retry-After only: %s; first other: %v", ta, ta.firstOther.Load())
	}
	if ta.refused.Load() == 0 {
		t.Errorf("(b) no 503 at %.0f events/s offered: not an overload (the sustainable rate was measured too low?)", offeredRate)
	}

	// 3. The backlog drains once the load stops (bounded wait).
	stopped := time.Now()
	drained := waitDrained(t, c, 5*time.Minute)
	t.Logf("(d) backlog drained %s after the load stopped; %d stored in all, %d dead-lettered",
		time.Since(stopped).Round(100*time.Millisecond), drained.Stored, drained.Dead)

	// 4. Every event answered 202 is stored exactly once.
	var want, refusedStored int64
	for _, st := range tab.state {
		if st == accepted {
			want++
		}
	}
	var copies []uint8
	var pages int
	pageStart := time.Now()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		copies, pages = storedCopies(t, c, evs, len(tab.state))
		missing := int64(0)
		for seq, st := range tab.state {
			if st == accepted && copies[seq] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("(a) %d of %d events answered 202 are not stored", missing, want)
		}
	}
	var dups int64
	for seq, st := range tab.state {
		if copies[seq] > 1 {
			dups++
			if dups <= 10 {
				t.Errorf("(a) %s stored %d times", evs.ID(int64(seq)), copies[seq])
			}
		}
		if st != accepted && st != unsent && copies[seq] > 0 {
			refusedStored++ // e.g. a publish that timed out after the broker had it: allowed
		}
	}
	if dups > 0 {
		t.Errorf("(a) %d events stored more than once", dups)
	}
	t.Logf("(a) %d events answered 202, all stored exactly once (%d pages of 1000 read in %s); %d refused events stored anyway",
		want, pages, time.Since(pageStart).Round(100*time.Millisecond), refusedStored)

	// 5. Memory stayed bounded.
	m, err := bench.ReadProcMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("(c) server memory: peak RSS %d MiB (VmHWM), %d MiB now; bound %d MiB", m.HWM>>20, m.RSS>>20, maxRSS>>20)
	if m.HWM > maxRSS {
		t.Errorf("(c) the server's peak RSS %d MiB is over the bound of %d MiB", m.HWM>>20, maxRSS>>20)
	}
}

// storedCopies pages through GET /v1/events and counts the stored copies of
// each event of this run, by sequence number.
func storedCopies(t *testing.T, c *bench.Client, evs *bench.Events, n int) ([]uint8, int) {
	t.Helper()
	copies := make([]uint8, n)
	pages := testbin.ListEach(t, c.HC, c.Base, func(e testbin.ID) {
		if seq := evs.Seq(e.EventID); seq >= 0 && seq < int64(n) && copies[seq] < 255 {
			copies[seq]++
		}
	})
	return copies, pages
}
