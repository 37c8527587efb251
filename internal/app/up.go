package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/collect"
	"github.com/skyjoin/skyjoin/internal/dashboard"
	"github.com/skyjoin/skyjoin/internal/deadletter"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/live"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
	"github.com/skyjoin/skyjoin/internal/webhook"
)

// upConfig configures `skyjoin up`.
type upConfig struct {
	Addr            string
	DataDir         string
	Broker          string
	Store           string
	Registry        string
	Demo            bool
	DemoCollect     bool
	WeatherURL      string
	WeatherAPIKey   secret.Value
	SimUsers        int
	ShutdownTimeout time.Duration
	StatsEvery      time.Duration

	EnrichServes bool // `skyjoin enrich` also serves reads (it owns the store)

	stages stages
	hooks  upHooks

	Log       platform.LogConfig
	Telemetry telemetry.Config
	Ingest    ingest.Config
	Enrich    enrich.Config
	Serve     serve.Options
	Collect   collect.Config
	Webhook   webhook.Config
	DuckDB    duckdb.Config
	Weather   weatherConfig
}

func (c *upConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8080", "HTTP address of the API (ingest and reads); port 0 picks a free port")
	fs.StringVar(&c.DataDir, "data-dir", "data", "directory for the broker's and the store's files")
	fs.StringVar(&c.Broker, "broker", "nats://embedded", "broker URL: nats://embedded[?listen=HOST:PORT], nats://HOST:PORT or pubsub://PROJECT[?create=true&...]")
	fs.StringVar(&c.Store, "store", "", "store URL: duckdb://PATH (default duckdb://DATA_DIR/skyjoin.duckdb) or bigquery://PROJECT/DATASET[?...]")
	fs.StringVar(&c.Registry, "registry", "", "registry URL, where webhooks are kept for every process: \"\" (the key-value bucket on the JetStream broker), nats://HOST:PORT or firestore://PROJECT[/DATABASE][?prefix=P]")
	fs.BoolVar(&c.Demo, "demo", false, "start the built-in simulators of the user and weather APIs on loopback and collect users from them")
	fs.BoolVar(&c.DemoCollect, "collect", true, "with --demo, collect users from the simulator (false: only the weather simulator runs)")
	fs.StringVar(&c.WeatherURL, "weather-url", openmeteo.DefaultBaseURL, "base URL of the Open-Meteo API (ignored with --demo)")
	fs.Var(&c.WeatherAPIKey, "weather-api-key", "Open-Meteo API key for the commercial endpoint, as a `SECRET`: the key itself, env://VAR or sm://projects/P/secrets/S/versions/V (never logged)")
	fs.IntVar(&c.SimUsers, "sim-users", 2000, "size of the simulated user population with --demo")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown may take")
	fs.DurationVar(&c.StatsEvery, "stats-every", 10*time.Second, "how often to log pipeline counters (0: never)")
	fs.BoolVar(&c.EnrichServes, "serve", true, "skyjoin enrich: also serve the read API, the live stream and the dashboard (the process that writes a DuckDB store must serve its reads)")
	c.Log.RegisterFlags(fs)
	c.Telemetry.RegisterFlags(fs)
	c.Ingest.RegisterFlags(fs)
	c.Enrich.RegisterFlags(fs)
	c.Serve.RegisterFlags(fs)
	c.Collect.RegisterFlags(fs)
	c.Webhook.RegisterFlags(fs)
	c.DuckDB.RegisterFlags(fs)
	c.Weather.RegisterFlags(fs)
}

func (c *upConfig) validate() error {
	var p platform.Problems
	if c.DataDir == "" {
		p.Addf("data-dir must not be empty")
	}
	if c.ShutdownTimeout <= 0 {
		p.Addf("shutdown-timeout must be positive, got %s", c.ShutdownTimeout)
	}
	if c.SimUsers < 1 {
		p.Addf("sim-users must be at least 1, got %d", c.SimUsers)
	}
	for _, err := range []error{c.Ingest.Validate(), c.Enrich.Validate(), c.Serve.Validate(), c.Webhook.Validate(), c.Weather.Validate(), c.Telemetry.Validate()} {
		if err != nil {
			p.Addf("%v", err)
		}
	}
	if c.Collect.URL != "" {
		if err := c.Collect.Validate(); err != nil {
			p.Addf("%v", err)
		}
	}
	return p.Err()
}

// stages says which stages a process runs. `skyjoin up` runs them all; the
// stage commands (ingest, enrich, serve, collect) run one or two, sharing a
// broker (`skyjoin broker`) and, for reads, the process that owns the store.
type stages struct {
	ingest  bool // POST /v1/events
	enrich  bool // the worker, with the live stream and webhooks it feeds
	serve   bool // the read API and the dashboard
	collect bool // the users poller
}

func (s stages) needBroker() bool  { return s.ingest || s.enrich || s.collect }
func (s stages) needStore() bool   { return s.enrich || s.serve }
func (s stages) needWeather() bool { return s.enrich }

var allStages = stages{ingest: true, enrich: true, serve: true, collect: true}

// upHooks lets in-process tests inject faults; nil fields do nothing.
type upHooks struct {
	wrapStore func(storeBackend) storeBackend
	ready     func(addr string) // called once the API listens
}

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStages(ctx, "up", allStages, args, stdout, stderr)
}

// runStages parses the flags of a stage command and runs its stages.
func runStages(ctx context.Context, name string, run stages, args []string, stdout, stderr io.Writer) error {
	var cfg upConfig
	cfg.stages = run
	fs := newFlagSet(name, stderr)
	cfg.registerFlags(fs)
	if name != "up" {
		// A stage on its own shares a broker with the others.
		fs.Lookup("broker").DefValue = "nats://127.0.0.1:4222"
		fs.Set("broker", "nats://127.0.0.1:4222")
	}
	if err := platform.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s takes no arguments, got %q", errUsage, name, fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	unset := func(name string) bool { return !set[name] && os.Getenv(platform.EnvName(name)) == "" }
	if cfg.Demo {
		if unset("collect-interval") {
			// A demo should show records flowing at once.
			cfg.Collect.Interval = 2 * time.Second
		}
		if unset("weather-quota") {
			// The simulator has no quota; Open-Meteo's would throttle a
			// demo or a benchmark for nothing.
			cfg.Weather.Quota = "none"
		}
	}
	if name == "enrich" && !cfg.EnrichServes {
		cfg.stages.serve = false
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	log, err := platform.NewLogger(stderr, cfg.Log)
	if err != nil {
		return err
	}
	return up(ctx, cfg, stdout, log)
}

// up runs the configured stages until ctx is done, then shuts them down in
// order: stop accepting HTTP, stop collecting, let the worker finish its
// batch, close the store (flush), close the broker.
func up(ctx context.Context, cfg upConfig, stdout io.Writer, log *slog.Logger) (err error) {
	run := cfg.stages
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	var closers closeStack
	defer func() {
		if cerr := closers.close(log); cerr != nil && err == nil {
			err = cerr
		}
	}()
	tel, telShutdown, err := setupTelemetry(ctx, cfg.Telemetry, log)
	if err != nil {
		return err
	}
	closers.push("telemetry", closeTelemetry(telShutdown))
	log = tel.Logger(log)
	if err := resolveSecrets(ctx, cfg.WeatherAPIKey); err != nil {
		return err
	}

	// The simulators, in demo mode.
	weatherURL, collectURL := cfg.WeatherURL, cfg.Collect.URL
	if !run.collect {
		collectURL = ""
	}
	if cfg.Demo && (run.needWeather() || run.collect) {
		s, err := sim.Start(ctx, "127.0.0.1:0", sim.Options{Users: cfg.SimUsers, Logger: log})
		if err != nil {
			return fmt.Errorf("start simulators: %w", err)
		}
		closers.push("simulators", s.Close)
		weatherURL = s.OpenMeteoURL
		if collectURL == "" && cfg.DemoCollect && run.collect {
			collectURL = s.RandomUserURL
		}
	}

	var b broker.Broker
	if run.needBroker() {
		if b, err = openBroker(ctx, cfg.Broker, dataDir, log); err != nil {
			return err
		}
		closers.push("broker", b.Close)
	}

	var st storeBackend
	storeURL := ""
	if run.needStore() {
		if st, storeURL, err = openStore(ctx, cfg.Store, dataDir, cfg.DuckDB, log); err != nil {
			return err
		}
		closers.push("store", st.Close)
		if cfg.hooks.wrapStore != nil {
			st = cfg.hooks.wrapStore(st)
		}
	}

	mux := http.NewServeMux()
	var (
		worker *enrich.Worker
		wsvc   *weather.Service
		hub    *live.Hub
		hooks  *webhook.Dispatcher
		gate   *ingest.BacklogGate
		ing    *ingest.Handler
	)
	if run.enrich {
		if wsvc, err = newWeather(cfg.Weather, weatherURL, cfg.WeatherAPIKey.Reveal(), log); err != nil {
			return err
		}
		closers.push("weather", wsvc.Close)
		sub, err := b.Subscribe(ctx, broker.TopicEvents, cfg.Enrich.Subscription, broker.SubscribeOptions{
			AckWait:        cfg.Enrich.AckWait,
			MaxOutstanding: cfg.Enrich.MaxMessages * 4,
		})
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", broker.TopicEvents, err)
		}
		closers.push("subscription", sub.Close)
		worker = enrich.New(cfg.Enrich, sub, b, wsvc, st, log)
		// Stored records go to the live hub (GET /v1/stream and its other
		// subscribers), and in demo mode now and then to the terminal.
		hub = live.NewHub(0)
		defer hub.Close()
		onStored := []func([]event.Record){hub.Publish}
		if cfg.Demo {
			onStored = append(onStored, sampler(stdout, 3*time.Second))
		}
		// Webhooks keep their registrations and failures in the shared
		// registry (--registry; by default the key-value bucket on the
		// JetStream broker); they are closed (undelivered batches stored as
		// failures) after the worker stops and before the registry closes.
		reg, err := openRegistry(ctx, cfg.Registry, b)
		if err != nil {
			return err
		}
		if reg == nil {
			log.Warn("webhooks are off: the broker is not JetStream; give --registry firestore://PROJECT")
		} else {
			closers.push("registry", reg.Close)
			hooks, err = webhook.New(ctx, reg, cfg.Webhook, log)
			if err != nil {
				return err
			}
			closers.push("webhooks", func() error { // on early returns; Close is idempotent
				ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
				defer cancel()
				return hooks.Close(ctx)
			})
			onStored = append(onStored, func(recs []event.Record) { hooks.Deliver(recs, nil) })
			hooks.Register(mux)
		}
		worker.OnStored = fanOut(onStored)
	}

	if run.ingest {
		ing = ingest.New(cfg.Ingest, b, log)
		if bl, ok := b.(broker.Backlogger); ok {
			gate = ingest.NewBacklogGate(func(ctx context.Context) (int64, error) {
				return bl.Backlog(ctx, broker.TopicEvents, cfg.Enrich.Subscription)
			}, cfg.Ingest.MaxBacklog, 250*time.Millisecond, log)
			if bb, ok := b.(broker.ByteBacklogger); ok {
				gate.LimitBytes(func(ctx context.Context) (int64, error) {
					return bb.BacklogBytes(ctx, broker.TopicEvents)
				}, cfg.Ingest.MaxBacklogBytes)
			}
			ing.Admit = gate.Admit
		}
		ing.Register(mux)
	}

	// The read API answers in the process that owns the store; the probes
	// in every process.
	cfg.Serve.Logger = log
	if st != nil {
		cfg.Serve.Checks = append(cfg.Serve.Checks, serve.Check{Name: "store", Check: func(ctx context.Context) error {
			_, err := st.List(ctx, storeProbe)
			return err
		}})
	}
	cfg.Serve.Hub = hub
	var reader store.Reader = noStore{}
	if run.serve {
		reader = st
	}
	srv := serve.New(reader, cfg.Serve)
	if run.serve {
		srv.Register(mux)
		dashboard.Register(mux)
	} else {
		srv.RegisterProbes(mux)
	}
	registerDebug(mux, worker, wsvc, gate)
	var weatherStats func() weather.Stats
	if wsvc != nil {
		weatherStats = wsvc.Stats
	}
	if err := instrumentPipeline(tel, mux, ing, worker, weatherStats, gate, cfg.Enrich.Subscription); err != nil {
		return err
	}
	if db, ok := b.(deadletter.Broker); ok {
		deadletter.NewHandler(db, log).Register(mux)
	}
	hs, err := platform.Listen(cfg.Addr, serve.JSONErrors(mux), log)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	hardCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	if worker != nil {
		wg.Go(func() {
			if err := worker.Run(workerCtx, hardCtx); err != nil {
				errc <- fmt.Errorf("enrich worker: %w", err)
			}
		})
	}
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := hs.Serve(); err != nil {
			errc <- err
		}
	}()
	collectCtx, stopCollect := context.WithCancel(ctx)
	defer stopCollect()
	if collectURL != "" {
		cc := cfg.Collect
		cc.URL = collectURL
		if err := cc.Validate(); err != nil {
			return err
		}
		col, err := collect.New(cc, &eventPublisher{pub: b, source: envelope.SourceCollect}, collect.Options{Logger: log})
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := col.Run(collectCtx); err != nil && collectCtx.Err() == nil {
				errc <- fmt.Errorf("collect: %w", err)
			}
		})
	}
	if gate != nil {
		go gate.Run(workerCtx)
	}
	if cfg.StatsEvery > 0 && worker != nil {
		go logStats(workerCtx, log, cfg.StatsEvery, worker, wsvc)
	}

	printBanner(stdout, cfg, hs.Addr(), dataDir, storeURL, weatherURL, collectURL)
	log.Info("skyjoin is up", "addr", hs.Addr(), "data_dir", dataDir, "broker", cfg.Broker, "demo", cfg.Demo,
		"ingest", run.ingest, "enrich", run.enrich, "serve", run.serve, "collect", collectURL != "")
	if cfg.hooks.ready != nil {
		cfg.hooks.ready(hs.Addr())
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "deadline", cfg.ShutdownTimeout.String())
	case runErr = <-errc:
		log.Error("a stage failed; shutting down", "error", runErr.Error())
	}

	// Graceful shutdown within the deadline.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	srv.SetDraining(true)
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "error", err.Error())
	}
	<-httpDone
	stopCollect()
	stopWorker()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		log.Warn("the worker did not finish its batch before the shutdown deadline; abandoning it: the broker will deliver it again")
		hardStop()
		<-done
	}
	if hooks != nil {
		// Stop taking records, deliver what is queued within the deadline,
		// store the rest as failures. An error is returned by the closers.
		_ = hooks.Close(sctx)
	}
	if worker != nil {
		st2 := worker.Stats()
		log.Info("stopped", "messages", st2.Messages, "stored", st2.Stored, "dead_lettered", st2.DeadLettered)
	} else {
		log.Info("stopped")
	}
	return runErr
}

// noStore is the reader of a process that serves no reads: it is never
// called, since the read routes are not mounted there.
type noStore struct{ store.Reader }

// fanOut calls each of fns with the stored records, in order.
func fanOut(fns []func([]event.Record)) func([]event.Record) {
	return func(recs []event.Record) {
		for _, f := range fns {
			f(recs)
		}
	}
}

// storeProbe is a cheap query for the readiness check.
var storeProbe = store.Query{Limit: 1}

func printBanner(w io.Writer, cfg upConfig, addr, dataDir, storeURL, weatherURL, collectURL string) {
	run := cfg.stages
	fmt.Fprintf(w, "skyjoin is up\n")
	fmt.Fprintf(w, "  API        http://%s\n", addr)
	var routes []string
	if run.ingest {
		routes = append(routes, "POST /v1/events")
	}
	if run.serve {
		routes = append(routes, "GET /v1/events", "GET /v1/events/{id}", "GET /v1/users/{id}/latest", "GET /v1/stats", "GET /v1/stream")
	}
	routes = append(routes, "GET /readyz", "GET /metrics")
	fmt.Fprintf(w, "             %s\n", strings.Join(routes, "   "))
	if run.serve {
		fmt.Fprintf(w, "  dashboard  http://%s/\n", addr)
	}
	fmt.Fprintf(w, "  data dir   %s\n", dataDir)
	if run.needBroker() {
		fmt.Fprintf(w, "  broker     %s\n", cfg.Broker)
	}
	if storeURL != "" {
		fmt.Fprintf(w, "  store      %s\n", storeURL)
	}
	if run.needWeather() {
		if cfg.Demo {
			fmt.Fprintf(w, "  weather    %s (built-in simulator)\n", weatherURL)
		} else {
			fmt.Fprintf(w, "  weather    %s\n", weatherURL)
		}
	}
	if collectURL != "" {
		if cfg.Demo && cfg.Collect.URL == "" {
			fmt.Fprintf(w, "  users      %s (built-in simulator, %d users)\n", collectURL, cfg.SimUsers)
		} else {
			fmt.Fprintf(w, "  users      %s\n", collectURL)
		}
	}
	if run.serve {
		fmt.Fprintf(w, "  try        curl -s 'http://%s/v1/events?limit=5'\n", addr)
	}
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n")
}

// sampler prints one stored record now and then, so that a demo shows the
// records flowing.
func sampler(w io.Writer, every time.Duration) func([]event.Record) {
	var mu sync.Mutex
	var last time.Time
	var total int64
	return func(recs []event.Record) {
		mu.Lock()
		defer mu.Unlock()
		total += int64(len(recs))
		if time.Since(last) < every {
			return
		}
		last = time.Now()
		r := recs[len(recs)-1]
		place := r.Location.City
		if r.Location.Country != "" {
			place += ", " + r.Location.Country
		}
		wx := "weather " + r.Enrichment.Status
		if r.Weather != nil {
			wx = fmt.Sprintf("%.1f°C, %s, wind %.0f km/h", r.Weather.TemperatureC, r.Weather.Condition, r.Weather.WindSpeedKMH)
		}
		fmt.Fprintf(w, "%s  %-24s %-34s %s  (%d stored)\n", r.ProcessedAt.Format("15:04:05"), trunc(r.User.Name, 24), trunc(place, 34), wx, total)
	}
}

func trunc(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func logStats(ctx context.Context, log *slog.Logger, every time.Duration, w *enrich.Worker, ws *weather.Service) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s, wst := w.Stats(), ws.Stats()
			log.Info("pipeline", "messages", s.Messages, "stored", s.Stored, "dead_lettered", s.DeadLettered,
				"unavailable", s.Unavailable, "failed_batches", s.Failed,
				"weather_hits", wst.Hits, "weather_misses", wst.Misses, "weather_calls", wst.Calls)
		}
	}
}

// eventPublisher publishes events built in-process (collect, replay) the way
// ingest does: one NDJSON message per batch.
type eventPublisher struct {
	pub    broker.Publisher
	source string
}

func (p *eventPublisher) PublishEvents(ctx context.Context, events []event.Event) error {
	if len(events) == 0 {
		return nil
	}
	body, err := event.AppendNDJSON(nil, events...)
	if err != nil {
		return err
	}
	return p.pub.Publish(ctx, broker.TopicEvents,
		envelope.NewEvents(body, event.ContentTypeNDJSON, len(events), time.Now(), p.source))
}

// closeStack closes what was opened, last first.
type closeStack struct {
	names []string
	fns   []func() error
}

func (c *closeStack) push(name string, fn func() error) {
	c.names = append(c.names, name)
	c.fns = append(c.fns, fn)
}

func (c *closeStack) close(log *slog.Logger) error {
	var errs []error
	for i := len(c.fns) - 1; i >= 0; i-- {
		if err := c.fns[i](); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", c.names[i], err))
		}
	}
	c.fns, c.names = nil, nil
	return errors.Join(errs...)
}
