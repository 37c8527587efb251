package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/readyfile"
	"github.com/skyjoin/skyjoin/internal/sim"
)

// simConfig configures `skyjoin sim`.
type simConfig struct {
	Addr         string
	Users        int
	Seed         uint64
	APIKey       string
	WeatherFault simFault
	UsersFault   simFault
	Log          platform.LogConfig
	ReadyFile    string
}

// simFault is an injected misbehaviour of one simulated API, for manual
// chaos testing: which answer (Kind), on what share of the requests (Rate),
// and for "slow" how long each answer is held (Delay).
type simFault struct {
	Kind  string
	Rate  float64
	Delay time.Duration
}

// simFaultKinds is the help text of the --*-fault flags.
const simFaultKinds = "none; an HTTP status such as 500, 503 or 429 (answered with the API's own error body; 429 with Retry-After: 60 as the real Open-Meteo); " +
	"slow (hold each answer --%[1]s-fault-delay, or until the client gives up); malformed (200 with a truncated JSON body)"

func (f *simFault) registerFlags(fs *flag.FlagSet, api string) {
	fs.StringVar(&f.Kind, api+"-fault", "none", "fault injected into the "+api+" API: "+fmt.Sprintf(simFaultKinds, api))
	fs.Float64Var(&f.Rate, api+"-fault-rate", 1, "share of "+api+" requests that get --"+api+"-fault (0 to 1)")
	fs.DurationVar(&f.Delay, api+"-fault-delay", 5*time.Second, "how long --"+api+"-fault=slow holds each answer")
}

// status is the HTTP status of a status fault, or 0.
func (f simFault) status() int {
	n, err := strconv.Atoi(f.Kind)
	if err != nil {
		return 0
	}
	return n
}

func (f simFault) validate(api string, p *platform.Problems) {
	switch f.Kind {
	case "none", "slow", "malformed":
	default:
		if n := f.status(); n < 400 || n > 599 {
			p.Addf("%s-fault must be none, slow, malformed or an HTTP status 400-599, got %q", api, f.Kind)
		}
	}
	if f.Rate < 0 || f.Rate > 1 {
		p.Addf("%s-fault-rate must be between 0 and 1, got %v", api, f.Rate)
	}
	if f.Kind == "slow" && f.Delay <= 0 {
		p.Addf("%s-fault-delay must be positive, got %s", api, f.Delay)
	}
}

// fault draws the fault of one request.
func (f simFault) fault() sim.Fault {
	if f.Kind == "none" || f.Rate <= 0 || (f.Rate < 1 && rand.Float64() >= f.Rate) {
		return sim.Fault{}
	}
	switch f.Kind {
	case "slow":
		return sim.Fault{Delay: f.Delay}
	case "malformed":
		return sim.Fault{Malformed: true}
	}
	return sim.Fault{Status: f.status()}
}

func (f simFault) String() string {
	if f.Kind == "none" || f.Rate <= 0 {
		return "none"
	}
	what := f.Kind
	switch f.Kind {
	case "slow":
		what = "slow (" + f.Delay.String() + ")"
	case "malformed":
	default:
		what = f.Kind + " " + http.StatusText(f.status())
	}
	return fmt.Sprintf("%s on %s of requests", what, strconv.FormatFloat(f.Rate*100, 'f', -1, 64)+"%")
}

func (c *simConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:0", "HTTP address of the simulators (both APIs on one port); port 0 picks a free port")
	fs.IntVar(&c.Users, "users", sim.DefaultUsers, "size of the simulated user population")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the user population (the same seed gives the same users)")
	fs.StringVar(&c.APIKey, "api-key", "", "if set, the weather API requires apikey=KEY, as Open-Meteo's commercial endpoint")
	c.WeatherFault.registerFlags(fs, "weather")
	c.UsersFault.registerFlags(fs, "users")
	c.Log.RegisterFlags(fs)
	fs.StringVar(&c.ReadyFile, "ready-file", "", "once ready, write a JSON file here with the simulators' URLs; removed on exit")
}

func (c simConfig) validate() error {
	var p platform.Problems
	if c.Users < 1 {
		p.Addf("users must be at least 1, got %d", c.Users)
	}
	c.WeatherFault.validate("weather", &p)
	c.UsersFault.validate("users", &p)
	return p.Err()
}

// runSim serves the built-in simulators of the users API (randomuser.me) and
// the weather API (Open-Meteo) alone, as their own process, so that a test
// or an operator can stop, restart or break them while skyjoin runs:
//
//	skyjoin sim --addr 127.0.0.1:8099
//	skyjoin up --weather-url http://127.0.0.1:8099/open-meteo --collect-url http://127.0.0.1:8099/randomuser
//	skyjoin sim --addr 127.0.0.1:8099 --weather-fault 503 --weather-fault-rate 0.3   # chaos by hand
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg simConfig
	fs := newFlagSet("sim", stderr)
	cfg.registerFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: sim takes no arguments, got %q", errUsage, fs.Args())
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	log, err := platform.NewLogger(stderr, cfg.Log)
	if err != nil {
		return err
	}
	srv, err := sim.Start(ctx, cfg.Addr, sim.Options{
		Seed: cfg.Seed, Users: cfg.Users, APIKey: cfg.APIKey, Logger: log,
		Inject: func(api string, r *http.Request) sim.Fault {
			if api == sim.APIOpenMeteo {
				return cfg.WeatherFault.fault()
			}
			return cfg.UsersFault.fault()
		},
	})
	if err != nil {
		return err
	}
	if err := readyfile.Write(cfg.ReadyFile, map[string]any{"pid": os.Getpid(), "command": "sim", "url": srv.URL,
		"weather": srv.OpenMeteoURL, "users": srv.RandomUserURL}); err != nil {
		srv.Close()
		return err
	}
	defer readyfile.Remove(cfg.ReadyFile)
	var b strings.Builder
	b.WriteString("skyjoin sim is up\n")
	fmt.Fprintf(&b, "  weather    %s\n", srv.OpenMeteoURL)
	fmt.Fprintf(&b, "  users      %s\n", srv.RandomUserURL)
	fmt.Fprintf(&b, "  population %d users, seed %d\n", cfg.Users, cfg.Seed)
	fmt.Fprintf(&b, "  faults     weather: %s; users: %s\n", cfg.WeatherFault, cfg.UsersFault)
	fmt.Fprintf(&b, "  try        skyjoin up --weather-url %s --weather-quota none --collect-url %s\n", srv.OpenMeteoURL, srv.RandomUserURL)
	b.WriteString("Press Ctrl-C to stop.\n")
	io.WriteString(stdout, b.String())
	log.Info("simulators are up", "addr", srv.URL, "users", cfg.Users, "seed", cfg.Seed,
		"weather_fault", cfg.WeatherFault.String(), "users_fault", cfg.UsersFault.String())
	<-ctx.Done()
	err = srv.Close()
	st := srv.Stats()
	log.Info("simulators stopped", "randomuser_requests", st.RandomUserRequests, "openmeteo_requests", st.OpenMeteoRequests,
		"openmeteo_locations", st.OpenMeteoLocations, "faults", st.Faults)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}
