package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/platform/secret"

	"github.com/skyjoin/skyjoin/internal/bench"
	"github.com/skyjoin/skyjoin/internal/platform/readyfile"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	target := fs.String("target", "", "base URL of a running skyjoin on loopback; with auth on, give --key (empty: start `skyjoin up --demo --collect=false` on a temporary data dir)")
	adminURL := fs.String("admin", "", "with --target: the base URL of its admin listener, where /debug/pipeline is (admin_url in its --ready-file, or the banner's admin line)")
	quick := fs.Bool("quick", false, "short phases (a smoke run, not figures)")
	phase := fs.Duration("phase", 15*time.Second, "length of each ingest phase")
	pipeline := fs.Duration("pipeline", 60*time.Second, "length of the saturated pipeline phase")
	latency := fs.Duration("latency", 30*time.Second, "length of the fixed-rate latency phase")
	rate := fs.Float64("rate", 5000, "events per second offered in the latency phase")
	maxEvents := fs.Int64("max-events", 20_000_000, "most events offered in any one phase")
	conc := fs.Int("concurrency", 16, "requests in flight")
	readEvery := fs.Duration("read-every", bench.DefaultReadEvery, "the latency phase's downstream reads: one every this long at most, one at a time, the kinds in turn (a read slower than this delays the next; 0: no reads)")
	phases := fs.String("phases", "ingest,pipeline,latency", "phases to run, comma-separated: ingest (batches of 1, 100, 1000), pipeline (saturated), latency (fixed rate); none with --fill: only the fill, kept in --data-dir")
	jsonOut := fs.String("json", "", "write the result as JSON to this file")
	mdOut := fs.String("markdown", "", "write the result as Markdown tables to this file")
	authMode := fs.String("auth", "on", "the self-started skyjoin's auth: on (a key with the ingest, read and admin scopes is made in its registry and sent as Authorization: Bearer, as a deployment runs) or off")
	var key secret.Value
	fs.Var(&key, "key", "with --target: the API key to send (scopes ingest, read and admin), as a `SECRET`: env://VAR, sm://..., or the key itself (prefer SKYJOIN_KEY; a flag shows in ps)")
	dataDir := fs.String("data-dir", "", "data dir of the self-started skyjoin, kept after the run (empty: a temporary dir, removed after)")
	fill := fs.Int64("fill", 0, "before the phases, bring the self-started skyjoin's store to this many records through the store's write path: 100,000 users over the 7 days before now (a fill stopped half-way resumes; 0: none)")
	profileDir := fs.String("profile", "", "write the server's CPU and heap profiles of each phase to this directory (<phase>.pprof, <phase>.heap.pprof, for go tool pprof)")
	var upArgs stringList
	fs.Var(&upArgs, "up-flag", "a flag for the self-started skyjoin up, e.g. --up-flag=--enrich-batch=128 (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *fill < 0 {
		return fmt.Errorf("%w: bench: --fill %d: want a number of records, 0 for none", errUsage, *fill)
	}
	if *authMode != "on" && *authMode != "off" {
		return fmt.Errorf("%w: bench: --auth %q: want on or off", errUsage, *authMode)
	}
	cfg := bench.Config{PhaseDuration: *phase, PipelineDuration: *pipeline, LatencyDuration: *latency, LatencyRate: *rate,
		MaxEvents: *maxEvents, Concurrency: *conc, ProfileDir: *profileDir, ReadEvery: *readEvery}
	if *readEvery < 0 {
		return fmt.Errorf("%w: bench: --read-every %s: want a duration, 0 for no reads", errUsage, *readEvery)
	}
	if *readEvery == 0 {
		cfg.ReadEvery = -1
	}
	if *profileDir != "" {
		if err := os.MkdirAll(*profileDir, 0o755); err != nil {
			return fmt.Errorf("bench: --profile: %w", err)
		}
	}
	fillOnly := strings.TrimSpace(*phases) == "none"
	for p := range strings.SplitSeq(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case bench.PhaseIngest, bench.PhasePipeline, bench.PhaseLatency:
			cfg.Phases = append(cfg.Phases, p)
		case "":
		case "none":
			if !fillOnly {
				return fmt.Errorf("%w: bench: --phases %q: none goes alone", errUsage, *phases)
			}
		default:
			return fmt.Errorf("%w: bench: unknown phase %q in --phases (known: ingest, pipeline, latency; none with --fill)", errUsage, p)
		}
	}
	switch {
	case fillOnly && (*fill == 0 || *dataDir == ""):
		return fmt.Errorf("%w: bench: --phases none runs only the fill: it needs --fill and --data-dir", errUsage)
	case !fillOnly && len(cfg.Phases) == 0:
		// An empty list would read as every phase (bench.Config).
		return fmt.Errorf("%w: bench: --phases %q names no phase (known: ingest, pipeline, latency; none with --fill)", errUsage, *phases)
	}
	if *quick {
		cfg.PhaseDuration, cfg.PipelineDuration, cfg.LatencyDuration = 3*time.Second, 5*time.Second, 5*time.Second
	}
	base, admin, token := *target, *adminURL, ""
	var exited *childProc // the self-started skyjoin up, if any
	switch {
	case base == "" && admin != "":
		return fmt.Errorf("%w: bench: --admin goes with --target", errUsage)
	case base != "" && admin == "":
		return fmt.Errorf("%w: bench: --target needs --admin, its admin listener's URL (admin_url in its ready file)", errUsage)
	case base != "" && (*fill != 0 || *dataDir != ""):
		return fmt.Errorf("%w: bench: --fill and --data-dir are for the self-started skyjoin, not --target", errUsage)
	case base != "":
		if err := resolveSecrets(ctx, key); err != nil {
			return err
		}
		token = key.Reveal()
	default:
		dir, keep := *dataDir, *dataDir != ""
		if !keep {
			d, err := os.MkdirTemp("", "skyjoin-bench")
			if err != nil {
				return err
			}
			dir = d
			defer os.RemoveAll(dir)
		} else if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if *fill > 0 {
			users, err := fillStore(ctx, dir, *fill, stderr)
			if err != nil {
				return err
			}
			cfg.HistoryUsers = users
			if fillOnly {
				fmt.Fprintf(stderr, "\r\033[Kfilled %s to %d records; no phases (--phases none)\n", dir, *fill)
				return nil
			}
		}
		extra := upArgs
		if *authMode == "on" {
			t, err := benchKey(ctx, dir)
			if err != nil {
				return err
			}
			token = t
			extra = append([]string{"--auth", "on"}, extra...)
		}
		child, addr, adminAddr, err := startChild(ctx, stderr, dir, extra)
		if err != nil {
			return err
		}
		defer child.stop()
		base, admin = addr, adminAddr
		// A child that exits ends the run: the phases would measure a
		// dead target until they end.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-child.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		exited = child
	}
	c := bench.NewClient(base, cfg.Concurrency)
	c.Admin, c.Key = admin, token
	cfg.Setup = benchSetup(*target == "", token != "", *fill, upArgs)
	res, err := bench.Run(ctx, c, cfg, stderr)
	if exited != nil {
		select {
		case <-exited.done:
			return fmt.Errorf("bench: the skyjoin up it started exited during the run (%s); its log is above", exited.cmd.ProcessState)
		default:
		}
	}
	if err != nil {
		return err
	}
	md := res.Markdown()
	fmt.Fprint(stdout, md)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		if err := os.WriteFile(*mdOut, []byte(md), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// benchSetup describes how the measured skyjoin runs.
func benchSetup(self, auth bool, fill int64, upArgs []string) string {
	var parts []string
	if self {
		parts = append(parts, "self-started `skyjoin up --demo --collect=false` (default PII policy)")
	} else {
		parts = append(parts, "a running skyjoin (--target)")
	}
	if auth {
		parts = append(parts, "auth on (an API key as Authorization: Bearer)")
	} else {
		parts = append(parts, "auth off")
	}
	parts = append(parts, "typed properties in every event")
	if fill > 0 {
		parts = append(parts, fmt.Sprintf("store filled to %d records first", fill))
	}
	if len(upArgs) > 0 {
		parts = append(parts, "up flags "+strings.Join(upArgs, " "))
	}
	return strings.Join(parts, "; ")
}

// benchKey makes the key the bench sends, in the registry of the data dir
// (the embedded broker's key-value bucket, as `skyjoin keys create` does
// before `up` runs), and returns its token.
func benchKey(ctx context.Context, dir string) (string, error) {
	var out, errOut bytes.Buffer
	if err := runKeys(ctx, []string{"create", "--data-dir", dir, "--scope", "ingest,read,admin", "--name", "bench", "--json"}, &out, &errOut); err != nil {
		return "", fmt.Errorf("bench: make a key: %w\n%s", err, errOut.String())
	}
	var k keyOut
	if err := json.Unmarshal(out.Bytes(), &k); err != nil || k.Token == "" {
		return "", fmt.Errorf("bench: make a key: unexpected output %q", out.String())
	}
	return k.Token, nil
}

// fillStore brings the DuckDB store of the data dir to n records (see
// bench.Filler), with the default PII policy applied, as the worker
// stores them, and returns 1,000 of the fill's users.
func fillStore(ctx context.Context, dir string, n int64, progress io.Writer) ([]string, error) {
	spec, err := pii.ParseSpec("default")
	if err != nil {
		return nil, err
	}
	pkey := make([]byte, 32)
	rand.Read(pkey)
	policy, err := pii.New(spec, pkey)
	if err != nil {
		return nil, err
	}
	f, err := bench.NewFiller(n, time.Now(), policy)
	if err != nil {
		return nil, err
	}
	if err := fillDuckDB(ctx, filepath.Join(dir, "skyjoin.duckdb"), f, n, progress); err != nil {
		return nil, err
	}
	return f.Users(1000), nil
}

type childProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (c *childProc) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// startChild starts this binary's `up --demo --collect=false` on a free
// loopback port and the data dir dir, and returns its API and admin
// listener base URLs, read from its ready file (--ready-file).
func startChild(ctx context.Context, stderr io.Writer, dir string, extra []string) (*childProc, string, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	readyFile := filepath.Join(dir, "bench-ready.json")
	os.Remove(readyFile) // a stale one (a kept --data-dir) must not be read
	args := append([]string{"up", "--demo", "--collect=false", "--addr", "127.0.0.1:0", "--data-dir", dir, "--ready-file", readyFile,
		// It measures the pipeline, not one caller's rate limit.
		"--log-level", "warn", "--stats-every", "0", "--rate-ingest", "0", "--rate-read", "0"}, extra...)
	cmd := exec.Command(exe, args...)
	cmd.Stderr = stderr // its banner and sampled records on stdout are not wanted
	if err := cmd.Start(); err != nil {
		return nil, "", "", fmt.Errorf("start skyjoin up: %w", err)
	}
	c := &childProc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var info readyInfo
	switch err := readyfile.Wait(wctx, readyFile, c.done, &info); {
	case errors.Is(err, readyfile.ErrExited):
		return nil, "", "", fmt.Errorf("skyjoin up exited before it was up (%s)", cmd.ProcessState)
	case err != nil && ctx.Err() != nil:
		c.stop()
		return nil, "", "", ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		c.stop()
		return nil, "", "", fmt.Errorf("skyjoin up did not start within 60 s")
	case err != nil:
		c.stop()
		return nil, "", "", fmt.Errorf("skyjoin up: %w", err)
	case info.URL == "" || info.AdminURL == "":
		c.stop()
		return nil, "", "", fmt.Errorf("skyjoin up: its ready file has no url or no admin_url: %+v", info)
	}
	return c, info.URL, info.AdminURL, nil
}
