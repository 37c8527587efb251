package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Config says what to measure.
type Config struct {
	PhaseDuration    time.Duration // each ingest phase
	PipelineDuration time.Duration // the sustained pipeline phase (>= 60 s for the figures)
	LatencyDuration  time.Duration // the fixed-rate latency phase
	LatencyRate      float64       // events/s offered in the latency phase
	MaxEvents        int64         // bound on the events of any one phase
	Concurrency      int
	Quick            bool // shorter phases, for tests
	// Phases selects the phases to run, by name (ingest, pipeline,
	// latency); empty: all of them.
	Phases []string
	// Setup says how the target runs, for the result.
	Setup string
	// ProfileDir, if set, receives the server's CPU profile of each phase
	// (<phase>.pprof, from its admin listener's /debug/pprof/profile),
	// taken over the phase's run but its first and last seconds, and its
	// heap profile after that (<phase>.heap.pprof, /debug/pprof/heap).
	ProfileDir string
	// HistoryUsers are users whose records spread over a long past (a
	// fill's), read besides the load's during the latency phase.
	HistoryUsers []string
	// ReadEvery is how often the latency phase makes a downstream read
	// (probeReads); 0 is DefaultReadEvery, negative is no reads.
	ReadEvery time.Duration
}

// Phase names of Config.Phases.
const (
	PhaseIngest   = "ingest"
	PhasePipeline = "pipeline"
	PhaseLatency  = "latency"
)

func (c Config) runs(phase string) bool {
	return len(c.Phases) == 0 || slices.Contains(c.Phases, phase)
}

// Result is what a bench run found.
type Result struct {
	Machine   string         `json:"machine"`
	StartedAt time.Time      `json:"started_at"`
	Target    string         `json:"target"`
	Setup     string         `json:"setup"` // how the target ran: auth, PII policy, load, store size
	Ingest    []IngestResult `json:"ingest"`
	Pipeline  PipelineResult `json:"pipeline"`
	Latency   []LatencyStats `json:"latency"`
	Weather   WeatherResult  `json:"weather"`
	Server    ServerResult   `json:"server"`
}

// IngestResult is the ingest throughput at one batch size.
type IngestResult struct {
	BatchSize      int      `json:"batch_size"`
	EventsPerSec   float64  `json:"events_per_sec"`
	RequestsPerSec float64  `json:"requests_per_sec"`
	Accepted       int64    `json:"accepted"`
	Refused503     int64    `json:"refused_503"`
	Errors         int64    `json:"errors"`
	Seconds        float64  `json:"seconds"`
	RSS            PhaseRSS `json:"rss"`
}

// PhaseRSS is the server's resident memory over one phase: at its start
// (after the previous phase drained) and its peak (VmHWM, reset at the
// start of the phase). 0 where the server cannot tell.
type PhaseRSS struct {
	StartMB float64 `json:"start_mb"`
	PeakMB  float64 `json:"peak_mb"`
	// AtPeak is what held the memory at the phase's highest sample of
	// RSS (one every 250 ms), if the server says (/debug/pipeline?memory=1).
	AtPeak *Memory `json:"at_peak,omitempty"`
}

// PipelineResult is the broker-to-store throughput, sustained.
type PipelineResult struct {
	StoredPerSec  float64  `json:"stored_per_sec"`
	Stored        int64    `json:"stored"`
	Seconds       float64  `json:"seconds"`
	OfferedPerSec float64  `json:"offered_per_sec"`
	MaxBacklog    int64    `json:"max_backlog"`
	RSS           PhaseRSS `json:"rss"`
}

// LatencyStats is the end-to-end latency (202 to queryable) of one phase.
type LatencyStats struct {
	Name         string   `json:"name"`
	OfferedRate  float64  `json:"offered_events_per_sec"`
	AchievedRate float64  `json:"achieved_events_per_sec"`
	Probes       int64    `json:"probes"`
	Lost         int64    `json:"lost"`
	P50ms        float64  `json:"p50_ms"`
	P95ms        float64  `json:"p95_ms"`
	P99ms        float64  `json:"p99_ms"`
	Maxms        float64  `json:"max_ms"`
	RSS          PhaseRSS `json:"rss"`
	Stalls       Stalls   `json:"writer_stalls"`
	// Reads are the downstream reads made during the phase (the
	// fixed-rate phase only), at most one every ReadEveryMS.
	Reads       []ReadStats `json:"reads,omitempty"`
	ReadEveryMS float64     `json:"read_every_ms,omitempty"`
}

// DefaultReadEvery is how often the fixed-rate phase makes a downstream
// read unless Config.ReadEvery says otherwise. The reads run one at a
// time, so with reads slower than this (a page of a week of history on a
// large store) the probe reads back to back.
const DefaultReadEvery = 100 * time.Millisecond

// readEvery is cfg's interval between reads, 0 for none.
func (c Config) readEvery() time.Duration {
	switch {
	case c.ReadEvery < 0:
		return 0
	case c.ReadEvery == 0:
		return DefaultReadEvery
	}
	return c.ReadEvery
}

// WeatherResult is the weather join's cost.
type WeatherResult struct {
	Requests     int64   `json:"requests"`
	Calls        int64   `json:"provider_calls"`
	Points       int64   `json:"provider_points"`
	CallsPer1000 float64 `json:"calls_per_1000_events"`
	HitRatio     float64 `json:"hit_ratio"`
}

// ServerResult is the server process's resources.
type ServerResult struct {
	PID             int     `json:"pid"`
	Procs           int     `json:"gomaxprocs"`  // the server's GOMAXPROCS
	PeakRSSMB       float64 `json:"peak_rss_mb"` // the highest VmHWM: before, in and between the phases
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUSecPer1000   float64 `json:"cpu_seconds_per_1000_events"`
	Stored          int64   `json:"stored"`
	BenchCPUSeconds float64 `json:"bench_cpu_seconds"` // the load generator's
	// MachineCPUSeconds is what every process on the machine spent over
	// the run, of the WallSeconds times the machine's CPUs it had;
	// OtherCPUSeconds is what neither the server nor the load generator
	// did: other work on a shared machine, which the figures then carry.
	// The machine's count is sampled at each tick, the processes' exact,
	// so a few percent of the total either way is that sampling (a
	// negative difference is reported as 0). Zero (with CPUNote saying
	// why) where the machine's time is not read.
	MachineCPUSeconds float64 `json:"machine_cpu_seconds,omitempty"`
	OtherCPUSeconds   float64 `json:"other_cpu_seconds,omitempty"`
	WallSeconds       float64 `json:"wall_seconds"`
	CPUNote           string  `json:"cpu_note,omitempty"`
}

// StallLimit is the writer stall the figures count: an interval longer
// than this in which the backlog was not empty and no record was stored.
const StallLimit = 500 * time.Millisecond

// watchEvery is how often a phase's watcher reads /debug/pipeline: the
// resolution of the stall figures.
const watchEvery = 50 * time.Millisecond

// Stalls are a phase's writer stalls, seen from outside: intervals in
// which the backlog was not empty and the stored count did not move.
type Stalls struct {
	LongestMS float64 `json:"longest_ms"`
	OverLimit int     `json:"over_500ms"` // stalls longer than StallLimit
}

// poller calls a tick from a goroutine of its own, at once and then every
// interval, until end; its final func, if any, runs after the last tick.
type poller struct {
	stop context.CancelFunc
	done chan struct{}
}

func startPoller(ctx context.Context, every time.Duration, tick func(context.Context), final func()) poller {
	ctx, stop := context.WithCancel(ctx)
	p := poller{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			tick(ctx)
			select {
			case <-ctx.Done():
				if final != nil {
					final()
				}
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// end stops the poller and waits for its last tick.
func (p poller) end() {
	p.stop()
	<-p.done
}

// watcher reads the server's counters every watchEvery during a phase:
// the largest backlog and the writer's stalls.
type watcher struct {
	maxBacklog int64
	stalls     Stalls
	poll       poller
}

func watch(ctx context.Context, c *Client) *watcher {
	w := &watcher{}
	var (
		lastStored int64     = -1
		since      time.Time // the backlog has been waiting and nothing was stored since then
		inStall    bool
	)
	w.poll = startPoller(ctx, watchEvery, func(ctx context.Context) {
		d, err := c.Debug(ctx)
		now := time.Now()
		if err != nil {
			return
		}
		w.maxBacklog = max(w.maxBacklog, d.Backlog)
		switch {
		case d.Stored != lastStored || d.Backlog == 0:
			if inStall {
				w.stalls.OverLimit++
			}
			inStall = false
			since = now
		default:
			stall := now.Sub(since)
			w.stalls.LongestMS = max(w.stalls.LongestMS, float64(stall.Milliseconds()))
			inStall = inStall || stall > StallLimit
		}
		lastStored = d.Stored
	}, func() {
		if inStall {
			w.stalls.OverLimit++
		}
	})
	return w
}

func (w *watcher) end() (maxBacklog int64, s Stalls) {
	w.poll.end()
	return w.maxBacklog, w.stalls
}

func latencyStats(name string, offered float64, r LoadResult) LatencyStats {
	s := LatencyStats{Name: name, OfferedRate: offered, AchievedRate: r.EventsPerSecond(), Probes: r.Probes, Lost: r.Lost}
	if len(r.Latencies) == 0 {
		return s
	}
	l := slices.Clone(r.Latencies)
	slices.Sort(l)
	q := func(p float64) float64 {
		i := int(p * float64(len(l)-1))
		return float64(l[i].Microseconds()) / 1000
	}
	s.P50ms, s.P95ms, s.P99ms, s.Maxms = q(0.50), q(0.95), q(0.99), float64(l[len(l)-1].Microseconds())/1000
	return s
}

// Run measures the stack at c.Base. progress receives a status line now and
// then (for a terminal: it ends with \r).
func Run(ctx context.Context, c *Client, cfg Config, progress io.Writer) (Result, error) {
	res := Result{Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU()), StartedAt: time.Now().UTC(), Target: c.Base,
		Setup: cfg.Setup}
	if err := CheckLoopback(c.Base); err != nil {
		return res, err
	}
	d0, err := c.Debug(ctx)
	if err != nil {
		return res, fmt.Errorf("bench: the target must be a skyjoin with /debug/pipeline on its admin listener (--admin, its ready file's admin_url): %w", err)
	}
	start := time.Now()
	m0, mErr := machineCPU()
	b0, bErr := selfCPU()
	events, err := NewEvents(time.Now().UTC().Format("150405.000"), 2000)
	if err != nil {
		return res, err
	}
	say := func(format string, args ...any) {
		if progress != nil {
			fmt.Fprintf(progress, "\r\033[K"+format, args...)
		}
	}
	progressOf := func(name string) func(LoadResult) {
		return func(r LoadResult) {
			d, _ := c.Debug(ctx)
			say("%-22s %6.0fs  accepted %9d (%7.0f ev/s)  503s %6d  stored %9d  backlog %6d",
				name, r.Elapsed.Seconds(), r.Accepted, r.EventsPerSecond(), r.Refused503, d.Stored-d0.Stored, d.Backlog)
		}
	}
	// drain waits until the worker has caught up, so that phases do not
	// measure each other's backlog.
	drain := func() error {
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			d, err := c.Debug(ctx)
			if err != nil {
				return err
			}
			say("waiting for the backlog to drain: %d messages", d.Backlog)
			if d.Backlog == 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		return fmt.Errorf("bench: the backlog did not drain in 5 minutes")
	}

	// startPhase resets the server's peak RSS and starts sampling what
	// holds its memory; endPhase reads the phase's peak and the sample.
	// between is the highest peak outside the phases: at the start, and
	// in the waits between them.
	between := mb(d0.PeakRSS)
	type phaseMemory struct {
		rss     PhaseRSS
		sampler *memorySampler
	}
	startPhase := func() phaseMemory {
		// The peak since the last reset: the wait for the backlog to
		// drain after the phase before, which no phase counts.
		if d, err := c.Debug(ctx); err == nil {
			between = max(between, mb(d.PeakRSS))
		}
		d, err := c.ResetPeak(ctx)
		if err != nil {
			say("peak RSS per phase unavailable: %v\n", err)
			return phaseMemory{}
		}
		return phaseMemory{rss: PhaseRSS{StartMB: mb(d.RSS)}, sampler: sampleMemory(ctx, c)}
	}
	endPhase := func(p phaseMemory) PhaseRSS {
		if p.sampler == nil {
			return p.rss
		}
		p.rss.AtPeak = p.sampler.end()
		if d, err := c.Debug(ctx); err == nil {
			p.rss.PeakMB = mb(d.PeakRSS)
		}
		return p.rss
	}

	// profile records the server's CPU profile over most of a phase of
	// length d, then its heap profile (still under the phase's load);
	// the returned func waits for them.
	profile := func(name string, d time.Duration) func() {
		secs := int((d - 2*time.Second).Seconds())
		if cfg.ProfileDir == "" || secs < 1 {
			return func() {}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			path := filepath.Join(cfg.ProfileDir, name+".pprof")
			if err := c.CPUProfile(ctx, secs, path); err != nil {
				say("CPU profile of %s: %v\n", name, err)
			}
			if err := c.HeapProfile(ctx, filepath.Join(cfg.ProfileDir, name+".heap.pprof")); err != nil {
				say("heap profile of %s: %v\n", name, err)
			}
		}()
		return func() { <-done }
	}

	// 1. Ingest throughput at three batch sizes.
	for _, batch := range []int{1, 100, 1000} {
		if !cfg.runs(PhaseIngest) {
			break
		}
		if err := drain(); err != nil {
			return res, err
		}
		name := fmt.Sprintf("ingest batch=%d", batch)
		rss := startPhase()
		l := &Load{Client: c, Events: events, BatchSize: batch, Concurrency: cfg.Concurrency, MaxEvents: cfg.MaxEvents,
			Duration: cfg.PhaseDuration, Progress: progressOf(name)}
		profiled := profile(fmt.Sprintf("ingest-%d", batch), cfg.PhaseDuration)
		r := l.Run(ctx)
		profiled()
		res.Ingest = append(res.Ingest, IngestResult{BatchSize: batch, EventsPerSec: r.EventsPerSecond(),
			RequestsPerSec: r.RequestsPerSecond(batch), Accepted: r.Accepted, Refused503: r.Refused503,
			Errors: r.OtherErrors, Seconds: r.Elapsed.Seconds(), RSS: endPhase(rss)})
	}

	// 2. The pipeline, saturated: batches of 100 as fast as the server takes
	// them (admission control paces the sender); throughput is measured at
	// the store, latency with probes of every 200th request (each probe
	// polls GET /v1/events/{id}, about 1.5 ms of DuckDB per poll, and with
	// seconds of backlog dozens of probes wait at once: more probes would
	// measure the reads, not the pipeline).
	if cfg.runs(PhasePipeline) {
		if err := drain(); err != nil {
			return res, err
		}
		rss := startPhase()
		dStart, _ := c.Debug(ctx)
		w := watch(ctx, c)
		l := &Load{Client: c, Events: events, BatchSize: 100, Concurrency: cfg.Concurrency, MaxEvents: cfg.MaxEvents,
			Duration: cfg.PipelineDuration, ProbeEvery: 200, Progress: progressOf("pipeline (saturated)")}
		profiled := profile("pipeline", cfg.PipelineDuration)
		r := l.Run(ctx)
		profiled()
		dEnd, _ := c.Debug(ctx)
		maxBacklog, stalls := w.end()
		res.Pipeline = PipelineResult{Stored: dEnd.Stored - dStart.Stored, Seconds: r.Elapsed.Seconds(),
			StoredPerSec: float64(dEnd.Stored-dStart.Stored) / r.Elapsed.Seconds(), OfferedPerSec: r.EventsPerSecond(), MaxBacklog: maxBacklog,
			RSS: endPhase(rss)}
		sat := latencyStats("saturation", 0, r)
		sat.RSS, sat.Stalls = res.Pipeline.RSS, stalls
		res.Latency = append(res.Latency, sat)
	}

	// 3. Latency at a fixed rate.
	if cfg.runs(PhaseLatency) {
		if err := drain(); err != nil {
			return res, err
		}
		// Batches of 100 at 5,000 events/s and above (50 requests a second
		// at 5,000, as the figures in docs/benchmarks.md were measured),
		// smaller below: a request every 20 ms down to 50 events/s, single
		// events below it. At 20 events/s batches of 100 went one every
		// 5 s, and a short phase sent none.
		batch := min(100, max(1, int(cfg.LatencyRate/50)))
		rss := startPhase()
		w := watch(ctx, c)
		l := &Load{Client: c, Events: events, BatchSize: batch, Concurrency: cfg.Concurrency, Rate: cfg.LatencyRate,
			MaxEvents: cfg.MaxEvents, Duration: cfg.LatencyDuration, ProbeEvery: 5, Progress: progressOf(fmt.Sprintf("latency @%.0f/s", cfg.LatencyRate))}
		readCtx, stopReads := context.WithCancel(ctx)
		readsDone := make(chan []ReadStats, 1)
		if every := cfg.readEvery(); every > 0 {
			go func() { readsDone <- probeReads(readCtx, c, events.Users(), cfg.HistoryUsers, every) }()
		} else {
			readsDone <- nil
		}
		profiled := profile("latency", cfg.LatencyDuration)
		r := l.Run(ctx)
		profiled()
		stopReads()
		reads := <-readsDone
		_, stalls := w.end()
		fixed := latencyStats(fmt.Sprintf("fixed %.0f events/s", cfg.LatencyRate), cfg.LatencyRate, r)
		fixed.RSS, fixed.Stalls, fixed.Reads, fixed.ReadEveryMS = endPhase(rss), stalls, reads, float64(cfg.readEvery().Microseconds())/1000
		res.Latency = append(res.Latency, fixed)
		if err := drain(); err != nil {
			return res, err
		}
	}

	dFinal, err := c.Debug(ctx)
	if err != nil {
		return res, err
	}
	w := dFinal.Weather
	w0 := d0.Weather
	res.Weather = WeatherResult{Requests: w.Requests - w0.Requests, Calls: w.Calls - w0.Calls, Points: w.Points - w0.Points}
	if res.Weather.Requests > 0 {
		res.Weather.CallsPer1000 = float64(res.Weather.Calls) * 1000 / float64(res.Weather.Requests)
		res.Weather.HitRatio = float64(w.Hits-w0.Hits) / float64(res.Weather.Requests)
	}
	stored := dFinal.Stored - d0.Stored
	res.Server = ServerResult{PID: dFinal.PID, Procs: dFinal.Procs, PeakRSSMB: res.runPeak(between, dFinal),
		CPUSeconds: dFinal.CPUSeconds - d0.CPUSeconds, Stored: stored}
	if stored > 0 {
		res.Server.CPUSecPer1000 = res.Server.CPUSeconds * 1000 / float64(stored)
	}
	res.Server.WallSeconds = time.Since(start).Seconds()
	m1, err := machineCPU()
	mErr = cmp.Or(mErr, err)
	b1, err := selfCPU()
	bErr = cmp.Or(bErr, err)
	if bErr == nil {
		res.Server.BenchCPUSeconds = b1 - b0
	}
	if err := cmp.Or(mErr, bErr); err != nil {
		res.Server.CPUNote = err.Error()
	} else {
		res.Server.MachineCPUSeconds = m1 - m0
		res.Server.OtherCPUSeconds = max(0, res.Server.MachineCPUSeconds-res.Server.CPUSeconds-res.Server.BenchCPUSeconds)
	}
	say("done\n")
	return res, nil
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// Markdown renders a result as the tables of docs/benchmarks.md.
func (r Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s. Target: %s. Started %s.\n\n", r.Machine, r.Target, r.StartedAt.Format(time.RFC3339))
	if r.Setup != "" {
		fmt.Fprintf(&b, "Setup: %s.\n\n", r.Setup)
	}
	if len(r.Ingest) > 0 {
		b.WriteString("| ingest | events/s | requests/s | accepted | 503s | errors | RSS at start MB | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, i := range r.Ingest {
			fmt.Fprintf(&b, "| batch of %d | %.0f | %.0f | %d | %d | %d | %.0f | %.0f |\n", i.BatchSize, i.EventsPerSec, i.RequestsPerSec, i.Accepted, i.Refused503, i.Errors,
				i.RSS.StartMB, i.RSS.PeakMB)
		}
	}
	if r.Pipeline.Seconds > 0 {
		fmt.Fprintf(&b, "\n| pipeline (broker → store), saturated | |\n|---|---:|\n| stored events/s | %.0f |\n| over | %.0f s |\n| offered (accepted) events/s | %.0f |\n| peak backlog (messages) | %d |\n| RSS at start / peak | %.0f / %.0f MB |\n",
			r.Pipeline.StoredPerSec, r.Pipeline.Seconds, r.Pipeline.OfferedPerSec, r.Pipeline.MaxBacklog, r.Pipeline.RSS.StartMB, r.Pipeline.RSS.PeakMB)
	}
	b.WriteString("\n| end-to-end latency, 202 → queryable | achieved events/s | probes | p50 ms | p95 ms | p99 ms | max ms | lost | peak RSS MB | longest writer stall ms | stalls > 500 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range r.Latency {
		fmt.Fprintf(&b, "| %s | %.0f | %d | %.1f | %.1f | %.1f | %.1f | %d | %.0f | %.0f | %d |\n", l.Name, l.AchievedRate, l.Probes, l.P50ms, l.P95ms, l.P99ms, l.Maxms, l.Lost, l.RSS.PeakMB,
			l.Stalls.LongestMS, l.Stalls.OverLimit)
	}
	for _, l := range r.Latency {
		if len(l.Reads) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n| reads during %s, one at a time, one every %g ms at most | reads | p50 ms | p99 ms | max ms | errors |\n|---|---:|---:|---:|---:|---:|\n", l.Name, l.ReadEveryMS)
		for _, rd := range l.Reads {
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f | %d |\n", rd.Name, rd.Count, rd.P50ms, rd.P99ms, rd.Maxms, rd.Errors)
		}
	}
	var mem strings.Builder
	for _, i := range r.Ingest {
		if i.RSS.AtPeak != nil {
			mem.WriteString(memoryRow(fmt.Sprintf("ingest, batches of %d", i.BatchSize), i.RSS.AtPeak))
		}
	}
	for _, l := range r.Latency {
		if l.RSS.AtPeak != nil {
			mem.WriteString(memoryRow(l.Name, l.RSS.AtPeak))
		}
	}
	if mem.Len() > 0 {
		b.WriteString(memoryHeader + mem.String())
	}
	fmt.Fprintf(&b, "\n| weather | |\n|---|---:|\n| lookups | %d |\n| provider calls | %d (%d locations) |\n| calls per 1,000 events | %.2f |\n| cache hit ratio | %.4f |\n",
		r.Weather.Requests, r.Weather.Calls, r.Weather.Points, r.Weather.CallsPer1000, r.Weather.HitRatio)
	fmt.Fprintf(&b, "\n| server process (pid %d) | |\n|---|---:|\n| Go processors (GOMAXPROCS) | %d |\n| peak RSS, whole run | %.0f MB |\n| CPU seconds | %.1f |\n| CPU seconds per 1,000 events | %.3f |\n| events stored | %d |\n",
		r.Server.PID, r.Server.Procs, r.Server.PeakRSSMB, r.Server.CPUSeconds, r.Server.CPUSecPer1000, r.Server.Stored)
	fmt.Fprintf(&b, "\n| the machine over the run (%.0f s) | CPU seconds |\n|---|---:|\n| the server | %.1f |\n| the load generator | %.1f |\n", r.Server.WallSeconds, r.Server.CPUSeconds, r.Server.BenchCPUSeconds)
	if r.Server.CPUNote != "" {
		fmt.Fprintf(&b, "| every process | not read: %s |\n", r.Server.CPUNote)
	} else {
		fmt.Fprintf(&b, "| other processes (a shared machine's other work: the figures carry it) | %.1f |\n| every process | %.1f |\n", r.Server.OtherCPUSeconds, r.Server.MachineCPUSeconds)
	}
	return b.String()
}

// runPeak is the server's peak RSS over the run, in MB: the highest of
// between (its VmHWM before the first phase, since it started or its last
// reset: opening the store; and before each phase's reset, the wait for
// the backlog to drain after the phase before), each phase's, and the
// last's, read at the end.
// Not getrusage's ru_maxrss (Debug.MaxRSS): Linux keeps, across exec, the
// high-water mark of the process that exec'd, so a server started by a
// bench that had filled a store in its own memory reports that bench's
// peak there (a 1 GiB parent gave its child a ru_maxrss of 1,027 MB and
// a VmHWM of 2 MB).
func (r *Result) runPeak(between float64, dFinal Debug) float64 {
	peak := max(between, mb(dFinal.PeakRSS), r.Pipeline.RSS.PeakMB)
	for _, i := range r.Ingest {
		peak = max(peak, i.RSS.PeakMB)
	}
	for _, l := range r.Latency {
		peak = max(peak, l.RSS.PeakMB)
	}
	return peak
}
