package app

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/audit"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/broker/pubsub"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/serve"
)

// A stage is one part of the pipeline as a value: its name, its own flags
// (each with a SKYJOIN_* environment variable and a default) and one
// Validate, the routes it serves (named in the route table, internal/api),
// and how it starts, runs and stops. A stage uses shared parts (the broker,
// the store, the weather service, the simulators, the registry): each
// process opens a part once, when a stage first asks for it, and closes it
// after every stage has stopped. A command takes the flags of its stages
// and of the parts they use, and no other.
//
// `skyjoin up` is the list of every stage; `skyjoin ingest`, `enrich`,
// `serve`, `collect` and `deliver` each run their part of it.
type stage struct {
	name     string
	uses     []*part // the shared parts whose flags this stage takes
	flags    func(fs *flag.FlagSet)
	validate func() error
	// start builds the stage in process p: it mounts the stage's routes
	// on r and returns how it runs. It must not block.
	start func(ctx context.Context, p *process, r platform.Router) (*running, error)
	// broker, if set, is what the stage uses of the broker: start checks
	// it (process.requireBroker), and CloudGrants derives the stage's
	// Pub/Sub roles from it.
	broker func() pubsub.Needs
	// store is what the stage does with the store, for CloudGrants.
	store storeUse
}

// storeUse is what a stage does with the store.
type storeUse uint8

const (
	storeWrites storeUse = 1 << iota // Write (the worker)
	storeReads                       // List, Get, Stats (the read API)
	storeErases                      // DeleteUsers (erasure)
)

// part is a shared part of a process: its flags and their validation. The
// process opens it (process.broker, process.store, ...).
type part struct {
	name     string
	flags    func(fs *flag.FlagSet)
	validate func() error
}

// running is a started stage.
type running struct {
	// run, if set, runs the stage until ctx is done, then finishes what it
	// holds and returns. hard is done when the shutdown deadline has
	// passed: what is still in hand is abandoned (the broker delivers it
	// again).
	run func(ctx, hard context.Context) error
	// stop, if set, is called after run has returned (flush, close),
	// within the shutdown deadline.
	stop func(ctx context.Context) error
	// checks are the stage's readiness checks.
	checks []serve.Check
}

// command is a stage command: the stages it runs, in the order they stop
// (producers first, so that what they hand on is taken by the stages after
// them before those stop).
type command struct {
	name    string
	summary string
	stages  []string
	// optional stages can be left out with --NAME=false.
	optional []string
}

// Stage names.
const (
	stIngest  = "ingest"
	stCollect = "collect"
	stEnrich  = "enrich"
	stDeliver = "deliver"
	stServe   = "serve"
)

var stageCommands = []command{
	{name: "up", summary: "run the whole pipeline in one process (add --demo for the built-in simulators)",
		stages: []string{stIngest, stCollect, stEnrich, stDeliver, stServe}},
	{name: "ingest", summary: "run ingest alone (POST /v1/events, dead letters) on a shared broker",
		stages: []string{stIngest}},
	{name: "enrich", summary: "run the enrich worker alone on a shared broker; with a DuckDB store it also serves the reads (--serve)",
		stages: []string{stEnrich, stServe}, optional: []string{stServe}},
	{name: "serve", summary: "run the read API, the live stream and the dashboard alone (for stores that several processes can read, such as BigQuery)",
		stages: []string{stServe}},
	{name: "collect", summary: "run the users collector alone on a shared broker",
		stages: []string{stCollect}},
	{name: "deliver", summary: "run webhook delivery alone: any number of instances share the records",
		stages: []string{stDeliver}},
}

func findStageCommand(name string) command {
	for _, c := range stageCommands {
		if c.name == name {
			return c
		}
	}
	panic("app: no stage command " + name)
}

// stageFlagSet builds the flag set of a stage command over cfg: the
// process's own flags, each optional stage's switch, then the flags of its
// parts and stages, each once.
func stageFlagSet(cmd command, cfg *config, stderr io.Writer) (*flag.FlagSet, []*stage, map[string]*bool) {
	fs := newFlagSet(cmd.name, stderr)
	seen := map[*part]bool{}
	for _, pt := range cfg.commonParts() {
		seen[pt] = true
		pt.flags(fs)
	}
	on := map[string]*bool{}
	for _, name := range cmd.optional {
		on[name] = fs.Bool(name, true, "run the "+name+" stage in this process too")
	}
	all := cfg.stages()
	var stages []*stage
	for _, name := range cmd.stages {
		s := all[name]
		stages = append(stages, s)
		for _, pt := range s.uses {
			if !seen[pt] {
				seen[pt] = true
				pt.flags(fs)
			}
		}
	}
	for _, s := range stages {
		if s.flags != nil {
			s.flags(fs)
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(*secret.Value); ok {
			cfg.secretFlags = append(cfg.secretFlags, f.Name)
		}
	})
	return fs, stages, on
}

// commonParts are the parts of every stage command: the process's own
// flags, and the registry, where every process verifies API keys.
func (c *config) commonParts() []*part {
	return []*part{c.processPart(), c.sharedParts()[ptRegistry]}
}

// parseCommandFlags parses the flags of a command that takes no
// arguments (with the SKYJOIN_* environment fallback): a flag it does not
// know, a bad value or an argument is a usage error.
func parseCommandFlags(name string, fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s takes no arguments, got %q", errUsage, name, fs.Args())
	}
	return nil
}

// runStageCommand parses the flags of a stage command and runs its stages.
func runStageCommand(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	cmd := findStageCommand(name)
	cfg := newConfig(cmd.name)
	fs, stages, on := stageFlagSet(cmd, cfg, stderr)
	if err := parseCommandFlags(name, fs, args); err != nil {
		return err
	}
	stages = slices.DeleteFunc(stages, func(s *stage) bool { return on[s.name] != nil && !*on[s.name] })
	cfg.applyDemoDefaults(fs)
	if err := validateStages(cfg, stages); err != nil {
		return err
	}
	log, err := platform.NewLogger(logOutput(stdout, stderr), cfg.Log)
	if err != nil {
		return err
	}
	return runProcess(ctx, cfg, stages, stdout, log)
}

// validateStages reports every problem of the process's, the parts' and
// the stages' configuration at once.
func validateStages(cfg *config, stages []*stage) error {
	var p platform.Problems
	add := func(err error) {
		if err != nil {
			p.Addf("%v", err)
		}
	}
	seen := map[*part]bool{}
	for _, pt := range cfg.commonParts() {
		seen[pt] = true
		if pt.validate != nil {
			add(pt.validate())
		}
	}
	for _, s := range stages {
		for _, pt := range s.uses {
			if !seen[pt] && pt.validate != nil {
				seen[pt] = true
				add(pt.validate())
			}
		}
		if s.validate != nil {
			add(s.validate())
		}
	}
	return p.Err()
}

// stageNames are the names of stages.
func stageNames(stages []*stage) []string {
	names := make([]string, len(stages))
	for i, s := range stages {
		names[i] = s.name
	}
	return names
}

// routeRecorder mounts the routes of the stages on a mux, and checks them
// against the route table: a stage may mount only the table's routes of
// its own stage (or of every process), each once.
//
// Every route is mounted behind the authorization of its scope in the
// table (wrap), on the public mux, or on the admin listener's mux for the
// table's admin-listener routes.
type routeRecorder struct {
	mux     *http.ServeMux
	admin   *http.ServeMux                             // the admin listener's
	wrap    func(api.Route, http.Handler) http.Handler // nil: mounted as they are; else authorization and rate limit
	stage   string
	mounted map[string]string // pattern -> stage
	err     *error            // shared by the recorders of every stage
}

func (r *routeRecorder) Handle(pattern string, h http.Handler) {
	i := slices.IndexFunc(api.Routes, func(rt api.Route) bool { return rt.Pattern == pattern })
	switch {
	case i < 0:
		*r.err = errors.Join(*r.err, fmt.Errorf("stage %s mounts %q, which is not in the route table (internal/api)", r.stage, pattern))
		return
	case api.Routes[i].Stage != api.Any && api.Routes[i].Stage != r.stage:
		*r.err = errors.Join(*r.err, fmt.Errorf("stage %s mounts %q, a route of stage %s", r.stage, pattern, api.Routes[i].Stage))
		return
	case r.mounted[pattern] != "":
		*r.err = errors.Join(*r.err, fmt.Errorf("stage %s mounts %q, already mounted by %s", r.stage, pattern, r.mounted[pattern]))
		return
	}
	r.mounted[pattern] = cmp.Or(r.stage, "the process")
	if r.wrap != nil {
		h = r.wrap(api.Routes[i], h)
	}
	if api.Routes[i].OnAdminListener() {
		r.admin.Handle(pattern, h)
		return
	}
	r.mux.Handle(pattern, h)
}

func (r *routeRecorder) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	r.Handle(pattern, http.HandlerFunc(h))
}

// check reports the routes of the table that the stages did not mount.
func (r *routeRecorder) check(stages []string) error {
	err := *r.err
	for _, rt := range api.Of(stages...) {
		if r.mounted[rt.Pattern] == "" {
			err = errors.Join(err, fmt.Errorf("route %q of stage %q is in the route table but no stage mounted it", rt.Pattern, rt.Stage))
		}
	}
	return err
}

func newRouteRecorder(mux *http.ServeMux) *routeRecorder {
	return &routeRecorder{mux: mux, admin: http.NewServeMux(), mounted: map[string]string{}, err: new(error)}
}

// for_ returns a Router that records the routes of the named stage.
func (r *routeRecorder) for_(stage string) *routeRecorder {
	return &routeRecorder{mux: r.mux, admin: r.admin, wrap: r.wrap, stage: stage, mounted: r.mounted, err: r.err}
}

// runProcess starts the stages, serves their routes, writes the ready
// file and the banner, and runs until ctx is done or a stage fails; then
// it shuts down within the shutdown timeout: stop taking requests, stop
// each stage in order (each finishes what it holds), close the shared
// parts (the store flushes, the broker last). Everything after ctx is
// done shares the one deadline, the closing of the parts included: what
// is not finished by then is abandoned with a warning, so that the process
// exits within the shutdown timeout (within Cloud Run's 10 s after
// SIGTERM).
func runProcess(ctx context.Context, cfg *config, stages []*stage, stdout io.Writer, log *slog.Logger) (err error) {
	p, err := newProcess(ctx, cfg, stageNames(stages), stdout, log)
	if err != nil {
		return err
	}
	// deadline is the shutdown's, set once the shutdown begins; a process
	// that fails before it runs closes its parts within a deadline of
	// its own.
	var deadline time.Time
	defer func() {
		if deadline.IsZero() {
			deadline = time.Now().Add(cfg.ShutdownTimeout)
		}
		cctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		if cerr := p.close(cctx); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := p.setupAuth(); err != nil {
		return err
	}
	mux := http.NewServeMux()
	rec := newRouteRecorder(mux)
	limit := rateLimits(cfg.HTTP)
	// Authentication outside the rate limit, which counts per principal.
	rec.wrap = func(rt api.Route, h http.Handler) http.Handler {
		if api.WriteKeyRoutes[rt.Pattern] {
			return p.authn.RequireWriteKey(rt.Scope, cfg.Ingest.MaxBodyBytes, limit(rt, h))
		}
		return p.authn.Require(rt.Scope, limit(rt, h))
	}
	// Start the consumers first: the stages after a producer in the list.
	runs := make([]*running, len(stages))
	for i := len(stages) - 1; i >= 0; i-- {
		s := stages[i]
		r, err := s.start(ctx, p, rec.for_(s.name))
		if err != nil {
			return fmt.Errorf("start %s: %w", s.name, err)
		}
		runs[i] = r
		p.checks = append(p.checks, r.checks...)
	}
	if err := p.applyMemoryBudget(); err != nil {
		return err
	}
	p.applyProcs()
	if err := p.mountCommon(rec.for_(api.Any), rec.for_(api.AdminListener)); err != nil {
		return err
	}
	if err := rec.check(p.stages); err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	// Without auth (loopback only, unless --insecure-no-auth), the
	// listeners answer only requests addressed to loopback: a page of
	// another site must not reach the open API by DNS rebinding.
	openOnLoopback := func(addr string, h http.Handler) http.Handler {
		if !p.authn.On && auth.IsLoopback(addr) {
			return platform.LoopbackHostOnly(h)
		}
		return h
	}
	hs, err := cfg.HTTP.Listen(cfg.Addr, openOnLoopback(cfg.Addr, guardHTTP(cfg.HTTP, mux, audit.Middleware(p.log, p.auditOptions(), serve.JSONErrors(mux)))), p.log)
	if err != nil {
		return err
	}
	p.addr = hs.Addr()
	// The admin listener: metrics and debug, never on the public port. Its
	// routes take the admin scope, and are audited as the public ones are.
	var admin *platform.Server
	if cfg.AdminAddr != "off" {
		if admin, err = platform.Listen(cfg.AdminAddr, openOnLoopback(cfg.AdminAddr, audit.Middleware(p.log, p.auditOptions(), serve.JSONErrors(rec.admin))), p.log); err != nil {
			hs.Shutdown(context.Background())
			return fmt.Errorf("admin listener: %w", err)
		}
		p.adminAddr = admin.Addr()
	}

	errc := make(chan error, len(stages)+3)
	hard, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	if f := p.storeFailer(); f != nil {
		// A store that failed for good stops the process, which exits
		// with an error: its restart recovers the store from its files.
		watched := make(chan struct{})
		defer close(watched)
		go func() {
			select {
			case <-f.Failed():
				errc <- fmt.Errorf("store: %w", f.Failure())
			case <-watched:
			}
		}()
	}
	type runningStage struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	rs := make([]runningStage, len(stages))
	for i, r := range runs {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		rs[i] = runningStage{cancel: cancel, done: make(chan struct{})}
		defer cancel()
		if r.run == nil {
			close(rs[i].done)
			continue
		}
		name := stages[i].name
		go func() {
			defer close(rs[i].done)
			if err := r.run(sctx, hard); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := hs.Serve(); err != nil {
			errc <- err
		}
	}()
	adminDone := make(chan struct{})
	go func() {
		defer close(adminDone)
		if admin == nil {
			return
		}
		if err := admin.Serve(); err != nil {
			errc <- fmt.Errorf("admin listener: %w", err)
		}
	}()
	shutdownAdmin := func(ctx context.Context) {
		if admin != nil {
			if err := admin.Shutdown(ctx); err != nil {
				p.log.Warn("admin listener shutdown", "error", err.Error())
			}
		}
		<-adminDone
	}

	if err := p.ready(); err != nil {
		hs.Shutdown(context.Background())
		shutdownAdmin(context.Background())
		return err
	}

	var runErr error
	select {
	case <-ctx.Done():
		p.log.Info("shutting down", "deadline", cfg.ShutdownTimeout.String())
	case runErr = <-errc:
		p.log.Error("a stage failed; shutting down", "error", runErr.Error())
	}

	// Graceful shutdown within the deadline, which the closing of the
	// parts (deferred above) shares: the stages have it less the closers'
	// reserve, so that the parts are closed, not abandoned, when a stage
	// takes all it may.
	deadline = time.Now().Add(cfg.ShutdownTimeout)
	sctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-closeReserve(cfg.ShutdownTimeout)))
	defer cancel()
	stopHard := context.AfterFunc(sctx, hardStop)
	defer stopHard()
	p.setDraining()
	if err := hs.Shutdown(sctx); err != nil {
		p.log.Warn("http shutdown", "error", err.Error())
	}
	<-httpDone
	// The admin listener stays up while the stages finish (metrics and
	// profiles of a slow shutdown), within the deadline.
	defer shutdownAdmin(sctx)
	for i, r := range runs {
		rs[i].cancel()
		select {
		case <-rs[i].done:
		case <-hard.Done():
			p.log.Warn("a stage did not finish before the shutdown deadline; abandoning what it holds: the broker delivers it again", "stage", stages[i].name)
			<-rs[i].done
		}
		if r.stop != nil {
			if err := r.stop(sctx); err != nil {
				p.log.Warn("stop", "stage", stages[i].name, "error", err.Error())
			}
		}
	}
	p.stopped()
	return runErr
}

// closeReserve is the part of a shutdown timeout kept for closing the
// shared parts (the store's flush, the broker, the last telemetry export)
// after the stages: a second, or a quarter of a shorter timeout.
func closeReserve(timeout time.Duration) time.Duration {
	return min(time.Second, timeout/4)
}

// closeStack closes what was opened, last first, within the shutdown
// deadline.
type closeStack struct {
	mu    sync.Mutex
	names []string
	fns   []func(ctx context.Context) error
}

// push adds a closer that takes no context: at the deadline it is
// abandoned (close does not wait for it).
func (c *closeStack) push(name string, fn func() error) {
	c.pushContext(name, func(context.Context) error { return fn() })
}

// pushContext adds a closer that is given the shutdown context.
func (c *closeStack) pushContext(name string, fn func(ctx context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names = append(c.names, name)
	c.fns = append(c.fns, fn)
}

// close runs the closers, last pushed first, each given ctx. Once ctx is
// done it waits for none: the closer in hand and those after it go on in
// the background, in order, and log names them; the process exits without
// them (Cloud Run kills the container 10 s after SIGTERM whatever it
// holds). closed, if set, is called once every closer has returned,
// abandoned ones included.
func (c *closeStack) close(ctx context.Context, log *slog.Logger, closed func()) error {
	c.mu.Lock()
	names, fns := c.names, c.fns
	c.fns, c.names = nil, nil
	c.mu.Unlock()
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- fns[i](ctx) }()
		var (
			err      error
			finished bool
		)
		select {
		case err = <-done:
			finished = true
		case <-ctx.Done():
			select { // it may have returned just as the deadline passed
			case err = <-done:
				finished = true
			default:
			}
		}
		if finished {
			if d := time.Since(start); d > time.Second {
				log.Warn("closing took long", "part", names[i], "duration", d.String())
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", names[i], err))
			}
			continue
		}
		// The deadline passed: this closer and the ones after it go on
		// in the background, in order.
		abandoned := slices.Clone(names[:i+1])
		slices.Reverse(abandoned)
		log.Warn("the shutdown deadline passed before these parts closed; exiting without waiting for them",
			"parts", abandoned, "waited", time.Since(start).String())
		go func() {
			logErr := func(name string, err error) {
				if err != nil {
					log.Warn("closing after the shutdown deadline", "part", name, "error", err.Error())
				}
			}
			logErr(names[i], <-done)
			for j := i - 1; j >= 0; j-- {
				logErr(names[j], fns[j](ctx))
			}
			if closed != nil {
				closed()
			}
		}()
		return errors.Join(errs...)
	}
	if closed != nil {
		closed()
	}
	return errors.Join(errs...)
}
