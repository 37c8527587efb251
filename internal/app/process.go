package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/pubsub"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/budget"
	"github.com/skyjoin/skyjoin/internal/platform/procs"
	"github.com/skyjoin/skyjoin/internal/platform/readyfile"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// process is what the stages of one process share: the configuration, the
// logger and telemetry, and the shared parts, each opened once on first use
// and closed after every stage has stopped.
type process struct {
	ctx       context.Context
	cfg       *config
	stages    []string
	stdout    io.Writer
	log       *slog.Logger
	tel       *telemetry.Provider
	dataDir   string
	closers   closeStack
	addr      string              // the HTTP listener's, once bound
	adminAddr string              // the admin listener's, once bound ("" if off)
	authn     *auth.Authenticator // who may call (setupAuth)

	mu       sync.Mutex
	b        broker.Broker
	st       storeBackend
	storeURL string
	// storeFails is the store (or the wrapper around it) if it can fail
	// for good (DuckDB after a fatal error): the process then stops, so
	// that a restart recovers it.
	storeFails failingStore
	// storeMem is the store if it reports its memory (DuckDB).
	storeMem memoryReporter
	ws       *weather.Service
	simSrv   *sim.Server
	reg      registry.Registry
	policy   *pii.Policy

	// Set by the stages, for the probes, metrics, debug and banner.
	checks     []serve.Check
	worker     *enrich.Worker
	ing        *ingest.Handler
	gate       *ingest.BacklogGate
	collectURL string
	draining   []func()
	done       []func() // called once the stages have stopped
}

func newProcess(ctx context.Context, cfg *config, stages []string, stdout io.Writer, log *slog.Logger) (*process, error) {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	p := &process{ctx: ctx, cfg: cfg, stages: stages, stdout: stdout, log: log, dataDir: dataDir}
	tel, shutdown, err := setupTelemetry(ctx, cfg.Telemetry, log)
	if err != nil {
		return nil, err
	}
	p.closers.pushContext("telemetry", closeTelemetry(shutdown))
	p.tel = tel
	p.log = tel.Logger(log)
	return p, nil
}

func (p *process) runs(stage string) bool {
	for _, s := range p.stages {
		if s == stage {
			return true
		}
	}
	return false
}

// close closes the shared parts, last opened first, within ctx's
// deadline: a part not closed by then is abandoned with a warning.
func (p *process) close(ctx context.Context) error {
	readyfile.Remove(p.cfg.ReadyFile)
	return p.closers.close(ctx, p.log, p.cfg.hooks.closed)
}

// broker opens the broker on first use.
func (p *process) broker() (broker.Broker, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b != nil {
		return p.b, nil
	}
	b, err := openBroker(p.ctx, p.cfg.Broker, p.dataDir, p.log)
	if err != nil {
		return nil, err
	}
	p.closers.push("broker", b.Close)
	p.b = b
	return b, nil
}

// requireBroker opens the broker and, when it is Pub/Sub without
// create=true, checks at the start of a stage that what the stage uses
// exists and may be used (see pubsub.Broker.Check).
func (p *process) requireBroker(needs pubsub.Needs) (broker.Broker, error) {
	b, err := p.broker()
	if err != nil {
		return nil, err
	}
	if pb, ok := b.(*pubsub.Broker); ok {
		if err := pb.Check(p.ctx, needs); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// store opens the store on first use.
func (p *process) store() (storeBackend, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st != nil {
		return p.st, nil
	}
	st, u, err := openStore(p.ctx, p.cfg.Store, p.dataDir, p.cfg.DuckDB, p.log)
	if err != nil {
		return nil, err
	}
	raw := st
	if p.cfg.hooks.wrapStore != nil {
		st = p.cfg.hooks.wrapStore(st)
	}
	if wrap, err := failpointStore(); err != nil {
		raw.Close()
		return nil, err
	} else if wrap != nil {
		p.log.Warn("failpoint set: this process will kill itself", "failpoint", os.Getenv(failpointEnv))
		st = wrap(st)
	}
	// The wrappers' Close is the store's.
	p.closers.push("store", st.Close)
	for _, c := range []storeBackend{st, raw} { // a wrapper (tests) may fail in its stead
		if f, ok := c.(failingStore); ok {
			p.storeFails = f
			break
		}
	}
	p.st, p.storeURL = st, u
	p.storeMem, _ = raw.(memoryReporter)
	check := func(ctx context.Context) error {
		_, err := st.List(ctx, storeProbe)
		return err
	}
	if pg, ok := st.(pinger); ok {
		// A store whose every read is billed (BigQuery) checks cheaply.
		check = pg.Ping
	}
	p.checks = append(p.checks, serve.Check{Name: "store", Check: check})
	return st, nil
}

// failingStore is a store that can fail for good: every statement fails
// until the process opens it again (the DuckDB store after a fatal error).
type failingStore interface {
	Failed() <-chan struct{}
	Failure() error
}

// memoryReporter is a store that reports the memory it holds outside Go's
// heap (DuckDB: its buffer manager, its allocator, the event id index).
type memoryReporter interface {
	Memory(ctx context.Context) (duckdb.Memory, error)
}

// idIndexSizer is a store with an event id index outside Go's heap.
type idIndexSizer interface {
	IDIndexBytes() int64
}

// storeMemory returns the store, once opened, if it reports its memory
// (after Close its Memory fails, and the callers skip it).
func (p *process) storeMemory() memoryReporter {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storeMem
}

// pinger is a store with a cheaper readiness check than a List.
type pinger interface {
	Ping(ctx context.Context) error
}

// registry opens the shared registry on first use: --registry, or the
// key-value bucket on the broker when that is JetStream.
func (p *process) registry() (registry.Registry, error) {
	var b broker.Broker
	if p.cfg.Registry == "" {
		var err error
		if b, err = p.broker(); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reg != nil {
		return p.reg, nil
	}
	reg, err := openRegistry(p.ctx, p.cfg.Registry, b)
	if err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, fmt.Errorf("%w: the broker %s is not NATS JetStream; give --registry firestore://PROJECT", errNoRegistry, p.cfg.Broker)
	}
	p.closers.push("registry", reg.Close)
	p.reg = reg
	return reg, nil
}

// errNoRegistry: --registry is empty and the broker has no key-value store.
var errNoRegistry = errors.New("no registry for webhooks and API keys")

// optionalRegistry is the registry, or nil if the process has none (no
// --registry and a broker other than JetStream).
func (p *process) optionalRegistry() (registry.Registry, error) {
	reg, err := p.registry()
	if errors.Is(err, errNoRegistry) {
		return nil, nil
	}
	return reg, err
}

// sim starts the simulators on first use (with --demo).
func (p *process) sim() (*sim.Server, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.simSrv != nil {
		return p.simSrv, nil
	}
	s, err := sim.Start(p.ctx, "127.0.0.1:0", sim.Options{Users: p.cfg.SimUsers, Logger: p.log})
	if err != nil {
		return nil, fmt.Errorf("start simulators: %w", err)
	}
	p.closers.push("simulators", s.Close)
	p.simSrv = s
	return s, nil
}

// weatherURL is the Open-Meteo base URL: the simulator's with --demo.
func (p *process) weatherURL() (string, error) {
	if !p.cfg.Demo {
		return p.cfg.WeatherURL, nil
	}
	s, err := p.sim()
	if err != nil {
		return "", err
	}
	return s.OpenMeteoURL, nil
}

// weather builds the weather service on first use.
func (p *process) weather() (*weather.Service, error) {
	u, err := p.weatherURL()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ws != nil {
		return p.ws, nil
	}
	if err := resolveSecrets(p.ctx, p.cfg.WeatherAPIKey); err != nil {
		return nil, err
	}
	ws, err := newWeather(p.cfg.Weather, u, p.cfg.WeatherAPIKey.Reveal(), p.log)
	if err != nil {
		return nil, err
	}
	p.closers.push("weather", ws.Close)
	p.ws = ws
	return ws, nil
}

// onDraining registers f to run when the process starts shutting down.
func (p *process) onDraining(f func()) { p.draining = append(p.draining, f) }

func (p *process) setDraining() {
	for _, f := range p.draining {
		f()
	}
}

// onStopped registers f to run once every stage has stopped.
func (p *process) onStopped(f func()) { p.done = append(p.done, f) }

func (p *process) stopped() {
	for _, f := range p.done {
		f()
	}
	if p.worker != nil {
		s := p.worker.Stats()
		p.log.Info("stopped", "messages", s.Messages, "stored", s.Stored, "dead_lettered", s.DeadLettered)
	} else {
		p.log.Info("stopped")
	}
}

// mountCommon mounts what every process serves: the probes (with the
// checks of its stages) and the key routes on r; /metrics and the debug
// routes on admin, the admin listener.
func (p *process) mountCommon(r, admin platform.Router) error {
	opts := p.cfg.Serve
	opts.Logger = p.log
	opts.Checks = append(opts.Checks, p.checks...)
	probes := serve.New(noStore{}, opts)
	probes.RegisterProbes(r)
	p.onDraining(func() { probes.SetDraining(true) })
	(&auth.Handler{Registry: p.optionalRegistry, Auth: p.authn}).RegisterKeys(r)
	var weatherStats func() weather.Stats
	if p.ws != nil {
		weatherStats = p.ws.Stats
	}
	registerDebug(admin, p.worker, p.ws, p.gate, p.storeMemory, p.cfg.secretFlags)
	return instrumentPipeline(p.tel, admin, p.ing, p.worker, weatherStats, p.gate, p.cfg.Enrich.Subscription, p.storeMemory)
}

// readyInfo is the JSON of --ready-file.
type readyInfo struct {
	PID     int      `json:"pid"`
	Command string   `json:"command"`
	Stages  []string `json:"stages"`
	Addr    string   `json:"addr"` // host:port of the HTTP listener
	URL     string   `json:"url"`  // http://host:port
	// AdminURL is the admin listener's (metrics, debug), if on.
	AdminURL string   `json:"admin_url,omitempty"`
	Auth     string   `json:"auth"` // on or off
	DataDir  string   `json:"data_dir"`
	Broker   string   `json:"broker,omitempty"`
	Store    string   `json:"store,omitempty"`
	Weather  string   `json:"weather,omitempty"`
	Users    string   `json:"users,omitempty"`
	Routes   []string `json:"routes"`
}

// ready announces the process: the ready file, the banner, a log line and
// the test hook.
func (p *process) ready() error {
	// URLs without their credentials: the ready file, the banner and the
	// log show them.
	info := readyInfo{PID: os.Getpid(), Command: p.cfg.command, Stages: p.stages, Addr: p.addr, URL: "http://" + p.addr,
		DataDir: p.dataDir, Store: platform.RedactURL(p.storeURL), Users: platform.RedactURL(p.collectURL)}
	if p.adminAddr != "" {
		info.AdminURL = "http://" + p.adminAddr
	}
	info.Auth = "off"
	if p.authn.On {
		info.Auth = "on"
	}
	if p.b != nil {
		info.Broker = platform.RedactURL(p.cfg.Broker)
	}
	if p.ws != nil {
		w, _ := p.weatherURL()
		info.Weather = platform.RedactURL(w)
	}
	for _, r := range api.Of(p.stages...) {
		info.Routes = append(info.Routes, r.Pattern)
	}
	if err := readyfile.Write(p.cfg.ReadyFile, info); err != nil {
		return err
	}
	if printsBanner() {
		p.printBanner(info)
	}
	p.log.Info("skyjoin is up", "command", p.cfg.command, "stages", strings.Join(p.stages, ","), "addr", p.addr,
		"auth", p.authSummary(), "data_dir", p.dataDir, "broker", info.Broker, "store", info.Store, "demo", p.cfg.Demo)
	if p.cfg.hooks.info != nil {
		p.cfg.hooks.info(info)
	}
	if p.cfg.hooks.ready != nil {
		p.cfg.hooks.ready(p.addr)
	}
	return nil
}

// printBanner prints where everything is; its routes come from the route
// table.
func (p *process) printBanner(info readyInfo) {
	var b strings.Builder
	fmt.Fprintf(&b, "skyjoin is up (%s)\n", strings.Join(p.stages, ", "))
	fmt.Fprintf(&b, "  API        %s\n", info.URL)
	var routes, adminRoutes []string
	for _, r := range api.Of(p.stages...) {
		switch {
		case r.Banner && r.OnAdminListener():
			adminRoutes = append(adminRoutes, r.Method()+" "+r.Path())
		case r.Banner:
			routes = append(routes, r.Method()+" "+r.Path())
		}
	}
	fmt.Fprintf(&b, "             %s\n", strings.Join(routes, "   "))
	fmt.Fprintf(&b, "  auth       %s\n", p.authSummary())
	if info.AdminURL != "" {
		fmt.Fprintf(&b, "  admin      %s   %s\n", info.AdminURL, strings.Join(adminRoutes, "   "))
	}
	if p.runs(stServe) {
		fmt.Fprintf(&b, "  dashboard  %s/\n", info.URL)
	}
	fmt.Fprintf(&b, "  data dir   %s\n", info.DataDir)
	if info.Broker != "" {
		fmt.Fprintf(&b, "  broker     %s\n", info.Broker)
	}
	if info.Store != "" {
		fmt.Fprintf(&b, "  store      %s\n", info.Store)
	}
	if info.Weather != "" {
		if p.cfg.Demo {
			fmt.Fprintf(&b, "  weather    %s (built-in simulator)\n", info.Weather)
		} else {
			fmt.Fprintf(&b, "  weather    %s\n", info.Weather)
		}
	}
	if info.Users != "" {
		if p.cfg.Demo && p.cfg.Collect.URL == "" {
			fmt.Fprintf(&b, "  users      %s (built-in simulator, %d users)\n", info.Users, p.cfg.SimUsers)
		} else {
			fmt.Fprintf(&b, "  users      %s\n", info.Users)
		}
	}
	if p.runs(stServe) && p.authn.On {
		fmt.Fprintf(&b, "  try        curl -s -H \"Authorization: Bearer $SKYJOIN_KEY\" '%s/v1/events?limit=5'\n", info.URL)
	} else if p.runs(stServe) {
		fmt.Fprintf(&b, "  try        curl -s '%s/v1/events?limit=5'\n", info.URL)
	}
	b.WriteString("Press Ctrl-C to stop.\n")
	io.WriteString(p.stdout, b.String())
}

// storeFailer returns the store if it is open and can fail for good.
func (p *process) storeFailer() failingStore {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storeFails
}

// applyProcs sets GOMAXPROCS from --procs or the runtime's default, with
// one processor more when this process opened the embedded DuckDB store.
// That store's background work (Pebble's compactions, the mover's calls
// into DuckDB, which keep their processor while DuckDB's threads work) can
// hold every processor, and a request that becomes runnable then waits
// for one to block or to be preempted (after 10 ms); with one processor
// more than the cores, the kernel shares the cores among the threads in
// finer slices. On 2 cores, on the 20 M-record store under load, the
// pages' p99 missed 20 ms with 2 and met it with 3, for the same CPU
// (docs/benchmarks.md, "More of Go's processors than cores").
func (p *process) applyProcs() {
	procs.Apply(p.cfg.Procs, p.procsExtra(), p.log)
}

// procsExtra is the processors this process asks for over the runtime's
// default: one when it opened the embedded DuckDB store.
func (p *process) procsExtra() int {
	if p.embeddedStore() {
		return 1
	}
	return 0
}

// embeddedStore reports whether this process opened the embedded DuckDB
// store.
func (p *process) embeddedStore() bool {
	return p.st != nil && strings.HasPrefix(p.storeURL, "duckdb://")
}

// applyMemoryBudget sets the Go heap's soft limit from --memory-limit (or
// the container's limit), less twice the memory limit of the DuckDB store
// this process opened, if any, and its event id index: DuckDB's memory is
// outside the Go heap, and under saturation it held about twice its
// memory_limit (its buffer manager's share, and the allocations that share
// does not count; see docs/benchmarks.md), and the row store's cache and
// memtables.
//
// A budget too small for the store's memory limit is refused with the
// flag to lower and the largest value of it the budget takes.
func (p *process) applyMemoryBudget() error {
	var outside, duck int64
	limit := p.cfg.DuckDB.MemoryLimit
	if p.embeddedStore() {
		if limit == "" {
			limit = duckdb.DefaultMemoryLimit
		}
		n, err := platform.ParseBytes(limit)
		if err != nil {
			return fmt.Errorf("duckdb-memory-limit %w", err)
		}
		duck = n
		outside = 2 * n
		if !p.cfg.DuckDB.NoRowStore {
			outside += duckdb.RowStoreMemory
		}
	}
	if st, ok := p.storeMemory().(idIndexSizer); ok {
		// The event id index is outside both heaps: about 16 bytes a
		// record stored (counted as it is at start).
		outside += st.IDIndexBytes()
	}
	var hint func(budget int64) string
	if duck > 0 {
		hint = func(b int64) string {
			return fmt.Sprintf("the embedded store's --duckdb-memory-limit %s counts twice in it: %s", limit, lowerDuckDB(b, outside-2*duck))
		}
	}
	return budget.ApplyWithHint(p.cfg.Memory, outside, hint, p.log)
}

// leastDuckDB is the smallest --duckdb-memory-limit a saturated writer ran
// on, on a fresh store; at 64MB it ran DuckDB out of memory, and a store of
// 20 M records did at 128MB (docs/benchmarks.md).
const leastDuckDB = 96_000_000

// lowerDuckDB says how far --duckdb-memory-limit must come down for a
// budget of b bytes, with others bytes bounded elsewhere, to leave the Go
// heap its least, and what that risks; or asks for a larger budget when
// even leastDuckDB does not fit.
func lowerDuckDB(b, others int64) string {
	fit := (b - b/10 - budget.MinGoLimit - others) / 2
	if fit < leastDuckDB {
		return fmt.Sprintf("even at %dMB it leaves the Go heap too little: give a larger budget", leastDuckDB/1_000_000)
	}
	return fmt.Sprintf("lower it to at most %dMB (the lower, the more the Go heap gets; below its default of %s a store of millions of records has run DuckDB out of memory)", fit/1_000_000, duckdb.DefaultMemoryLimit)
}
