package app

import (
	"flag"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/collect"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/budget"
	"github.com/skyjoin/skyjoin/internal/platform/procs"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
	"github.com/skyjoin/skyjoin/internal/webhook"
)

// config is the configuration of one stage command. Each part and stage
// registers and validates only its own fields (see config.stages).
type config struct {
	command string

	// The process's own.
	Addr            string
	AdminAddr       string
	Auth            auth.Config
	DataDir         string
	ShutdownTimeout time.Duration
	ReadyFile       string
	HTTP            platform.HTTPConfig
	Log             platform.LogConfig
	Memory          budget.Config
	Procs           procs.Config
	Telemetry       telemetry.Config

	// Shared parts.
	Broker        string
	Store         string
	DuckDB        duckdb.Config
	Registry      string
	Demo          bool
	SimUsers      int
	WeatherURL    string
	WeatherAPIKey secret.Value
	Weather       weatherConfig
	PII           piiConfig

	// Stages.
	Ingest ingest.Config
	// RequireLocation: events without coordinates are refused (one
	// decision for ingest and the worker: --require-location).
	RequireLocation bool
	Collect         collect.Config
	DemoCollect     bool
	Enrich          enrich.Config
	EnrichPull      bool // run the pull loop (false: push only)
	StatsEvery      time.Duration
	Retention       time.Duration
	RetentionEvery  time.Duration
	Serve           serve.Options
	Webhook         webhook.Config
	DeliverAck      time.Duration

	hooks upHooks

	// secretFlags are the flags whose values are secrets: redacted from
	// /debug/pprof/cmdline.
	secretFlags []string

	parts map[string]*part
	all   map[string]*stage
}

// upHooks lets in-process tests inject faults; nil fields do nothing.
type upHooks struct {
	wrapStore func(storeBackend) storeBackend
	ready     func(addr string)    // called once the API listens
	info      func(info readyInfo) // called then with what the ready file says
	log       *slog.Logger         // the process's logger in tests (nil: testLogger)
	closed    func()               // called once every part has closed, those abandoned at the deadline too
}

func newConfig(command string) *config { return &config{command: command} }

// defaultBroker is the broker of a command: the embedded one for up, the
// shared one (skyjoin broker) for a stage on its own.
func (c *config) defaultBroker() string {
	if c.command == "up" {
		return "nats://embedded"
	}
	return "nats://127.0.0.1:4222"
}

// processPart is what every stage command takes: where it listens, its
// data dir, logs, telemetry and shutdown.
func (c *config) processPart() *part {
	return &part{
		name: "process",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.Addr, "addr", defaultAddr(), "HTTP address of this process's API and probes; port 0 picks a free port (beyond loopback, auth is on: see --auth); on Cloud Run (K_SERVICE set) the default is 0.0.0.0:$PORT")
			fs.StringVar(&c.AdminAddr, "admin-addr", "127.0.0.1:0", "HTTP address of the admin listener: /metrics, /debug/pipeline, /debug/pprof/ (never on the public port); off: none. Beyond loopback, auth is on and they need the admin scope")
			c.Auth.RegisterFlags(fs)
			fs.StringVar(&c.DataDir, "data-dir", "data", "directory for the process's files (the embedded broker's and the DuckDB store's)")
			fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout(), "how long a graceful shutdown may take (on Cloud Run the default is 8s: it kills the container 10 s after SIGTERM)")
			fs.StringVar(&c.ReadyFile, "ready-file", "", "once ready, write a JSON file here with the bound addresses and URLs (for scripts and tests); removed on exit")
			c.HTTP.RegisterFlags(fs)
			c.Log.RegisterFlags(fs)
			c.Memory.RegisterFlags(fs)
			c.Procs.RegisterFlags(fs)
			c.Telemetry.RegisterFlags(fs)
		},
		validate: func() error {
			var p platform.Problems
			if c.DataDir == "" {
				p.Addf("data-dir must not be empty")
			}
			if c.ShutdownTimeout <= 0 {
				p.Addf("shutdown-timeout must be positive, got %s", c.ShutdownTimeout)
			}
			if err := c.Telemetry.Validate(); err != nil {
				p.Addf("%v", err)
			}
			if err := c.Memory.Validate(); err != nil {
				p.Addf("%v", err)
			}
			if err := c.Procs.Validate(); err != nil {
				p.Addf("%v", err)
			}
			if err := c.Auth.Validate(); err != nil {
				p.Addf("%v", err)
			}
			if c.AdminAddr != "off" {
				if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
					p.Addf("admin-addr: want HOST:PORT or off, got %q", c.AdminAddr)
				} else if c.AdminAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0") {
					p.Addf("admin-addr must differ from addr (%s): debug routes are never on the public port", c.Addr)
				}
			}
			if err := c.HTTP.Validate(); err != nil {
				p.Addf("%v", err)
			}
			if c.HTTP.BodyBytes > 0 && c.Ingest.MaxBodyBytes > c.HTTP.BodyBytes {
				p.Addf("http-max-body-bytes-in-flight (%d) must be at least ingest-max-bytes (%d): a body of that size could never be read, and would get 503 for ever", c.HTTP.BodyBytes, c.Ingest.MaxBodyBytes)
			}
			return p.Err()
		},
	}
}

// Parts, by name.
const (
	ptBroker   = "broker"
	ptStore    = "store"
	ptWeather  = "weather"
	ptDemo     = "demo"
	ptRegistry = "registry"
	ptPII      = "pii"
	ptEvents   = "events"
)

// sharedParts returns the shared parts over c, built once.
func (c *config) sharedParts() map[string]*part {
	if c.parts != nil {
		return c.parts
	}
	c.parts = map[string]*part{
		ptBroker: {name: ptBroker, flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.Broker, "broker", c.defaultBroker(), "broker URL: nats://embedded[?listen=HOST:PORT], nats://HOST:PORT or pubsub://PROJECT[?create=true&...]")
		}},
		ptStore: {name: ptStore, flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.Store, "store", "", "store URL: duckdb://PATH (default duckdb://DATA_DIR/skyjoin.duckdb) or bigquery://PROJECT/DATASET[?...]")
			c.DuckDB.RegisterFlags(fs)
		}},
		ptRegistry: {name: ptRegistry, flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.Registry, "registry", "", "registry URL, where webhooks and API keys are kept for every process: \"\" (the key-value bucket on the JetStream broker), nats://HOST:PORT or firestore://PROJECT[/DATABASE][?prefix=P]")
		}},
		ptDemo: {name: ptDemo, flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&c.Demo, "demo", false, "start the built-in simulators of the user and weather APIs on loopback and use them")
			fs.IntVar(&c.SimUsers, "sim-users", 2000, "size of the simulated user population with --demo")
		}, validate: func() error {
			var p platform.Problems
			if c.SimUsers < 1 {
				p.Addf("sim-users must be at least 1, got %d", c.SimUsers)
			}
			return p.Err()
		}},
		ptWeather: {name: ptWeather, flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.WeatherURL, "weather-url", openmeteo.DefaultBaseURL, "base URL of the Open-Meteo API (ignored with --demo)")
			fs.Var(&c.WeatherAPIKey, "weather-api-key", "Open-Meteo API key for the commercial endpoint, as a `SECRET`: the key itself, env://VAR or sm://projects/P/secrets/S/versions/V (never logged)")
			c.Weather.RegisterFlags(fs)
		}, validate: func() error { return c.Weather.Validate() }},
		ptPII: c.piiPart(),
		ptEvents: {name: ptEvents, flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&c.RequireLocation, "require-location", false, "refuse events without coordinates (ingest: 400; the worker: a dead letter) instead of storing them with enrichment status no_location")
		}},
	}
	return c.parts
}

// applyDemoDefaults changes defaults that a demo needs, unless the flag
// was given (on the command line or in the environment).
func (c *config) applyDemoDefaults(fs *flag.FlagSet) {
	if !c.Demo {
		return
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	unset := func(name string) bool {
		return fs.Lookup(name) != nil && !set[name] && os.Getenv(platform.EnvName(name)) == ""
	}
	if unset("collect-interval") {
		// A demo should show records flowing at once.
		c.Collect.Interval = 2 * time.Second
	}
	if unset("weather-quota") {
		// The simulator has no quota; Open-Meteo's would throttle a demo
		// or a benchmark for nothing.
		c.Weather.Quota = "none"
	}
}
