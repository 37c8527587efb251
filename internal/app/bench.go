package app

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/bench"
	"github.com/skyjoin/skyjoin/internal/platform"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	target := fs.String("target", "", "base URL of a running skyjoin on loopback, without auth (empty: start `skyjoin up --demo --collect=false` on a temporary data dir)")
	adminURL := fs.String("admin", "", "with --target: the base URL of its admin listener, where /debug/pipeline is (admin_url in its --ready-file, or the banner's admin line)")
	quick := fs.Bool("quick", false, "short phases (a smoke run, not figures)")
	phase := fs.Duration("phase", 15*time.Second, "length of each ingest phase")
	pipeline := fs.Duration("pipeline", 60*time.Second, "length of the saturated pipeline phase")
	latency := fs.Duration("latency", 30*time.Second, "length of the fixed-rate latency phase")
	rate := fs.Float64("rate", 5000, "events per second offered in the latency phase")
	maxEvents := fs.Int64("max-events", 20_000_000, "most events offered in any one phase")
	conc := fs.Int("concurrency", 16, "requests in flight")
	phases := fs.String("phases", "ingest,pipeline,latency", "phases to run, comma-separated: ingest (batches of 1, 100, 1000), pipeline (saturated), latency (fixed rate)")
	jsonOut := fs.String("json", "", "write the result as JSON to this file")
	mdOut := fs.String("markdown", "", "write the result as Markdown tables to this file")
	var upArgs stringList
	fs.Var(&upArgs, "up-flag", "a flag for the self-started skyjoin up, e.g. --up-flag=--enrich-batch=128 (repeatable)")
	if err := platform.ParseFlags(fs, args); err != nil {
		return err
	}
	cfg := bench.Config{PhaseDuration: *phase, PipelineDuration: *pipeline, LatencyDuration: *latency, LatencyRate: *rate,
		MaxEvents: *maxEvents, Concurrency: *conc}
	for p := range strings.SplitSeq(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case bench.PhaseIngest, bench.PhasePipeline, bench.PhaseLatency:
			cfg.Phases = append(cfg.Phases, p)
		case "":
		default:
			return fmt.Errorf("bench: unknown phase %q in --phases (known: ingest, pipeline, latency)", p)
		}
	}
	if *quick {
		cfg.PhaseDuration, cfg.PipelineDuration, cfg.LatencyDuration = 3*time.Second, 5*time.Second, 5*time.Second
	}
	base, admin := *target, *adminURL
	switch {
	case base == "" && admin != "":
		return fmt.Errorf("%w: bench: --admin goes with --target", errUsage)
	case base != "" && admin == "":
		return fmt.Errorf("%w: bench: --target needs --admin, its admin listener's URL (admin_url in its ready file)", errUsage)
	case base == "":
		child, addr, adminAddr, err := startChild(ctx, stderr, upArgs)
		if err != nil {
			return err
		}
		defer child.stop()
		base, admin = addr, adminAddr
	}
	c := bench.NewClient(base, cfg.Concurrency)
	c.Admin = admin
	res, err := bench.Run(ctx, c, cfg, stderr)
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

type childProc struct {
	cmd  *exec.Cmd
	dir  string
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
	os.RemoveAll(c.dir)
}

var (
	apiLine   = regexp.MustCompile(`API\s+(http://\S+)`)
	adminLine = regexp.MustCompile(`admin\s+(http://\S+)`)
)

// startChild starts this binary's `up --demo --collect=false` on a free
// loopback port and a temporary data dir, and returns its API and admin
// listener base URLs.
func startChild(ctx context.Context, stderr io.Writer, extra []string) (*childProc, string, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	dir, err := os.MkdirTemp("", "skyjoin-bench")
	if err != nil {
		return nil, "", "", err
	}
	args := append([]string{"up", "--demo", "--collect=false", "--addr", "127.0.0.1:0", "--data-dir", dir,
		// It measures the pipeline, not one caller's rate limit.
		"--log-level", "warn", "--stats-every", "0", "--rate-ingest", "0", "--rate-read", "0"}, extra...)
	cmd := exec.Command(exe, args...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", "", fmt.Errorf("start skyjoin up: %w", err)
	}
	c := &childProc{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	type urls struct{ api, admin string }
	up := make(chan urls, 1)
	go func() {
		var u urls
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := apiLine.FindStringSubmatch(sc.Text()); m != nil {
				u.api = m[1]
			}
			if m := adminLine.FindStringSubmatch(sc.Text()); m != nil && u.api != "" {
				u.admin = m[1]
				select {
				case up <- u:
				default:
				}
			}
		}
	}()
	select {
	case u := <-up:
		return c, u.api, u.admin, nil
	case <-c.done:
		os.RemoveAll(dir)
		return nil, "", "", fmt.Errorf("skyjoin up exited before it was up")
	case <-time.After(60 * time.Second):
		c.stop()
		return nil, "", "", fmt.Errorf("skyjoin up did not start within 60 s")
	case <-ctx.Done():
		c.stop()
		return nil, "", "", ctx.Err()
	}
}
