// Package sim serves built-in stand-ins of the two external Web APIs
// skyjoin reads: randomuser.me (users) and Open-Meteo (weather), with the
// same wire format and deterministic answers, for `skyjoin up --demo`,
// benchmarks and end-to-end tests.
//
// Both APIs are plain net/http handlers (RandomUser, OpenMeteo), and Start
// serves both on one listener under the prefixes /randomuser and
// /open-meteo, so that the real clients take the base URLs unchanged:
//
//	srv, err := sim.Start(ctx, "127.0.0.1:0", sim.Options{})
//	// srv.RandomUserURL: http://127.0.0.1:PORT/randomuser  (GET {url}/api/?results=N)
//	// srv.OpenMeteoURL:  http://127.0.0.1:PORT/open-meteo  (GET {url}/v1/forecast?...)
//
// Users: a stable population (Options.Users, default 2,000), generated from
// Options.Seed, living around about 140 real cities of randomuser's 21
// nationalities, so users recur across polls and share weather cells.
//
// Weather: answers are for the 0.1-degree cell of each location (see Cell)
// and are Conditions(cell, slot) for the current 15-minute slot of the
// simulator's clock (and for each hour's start in `hourly`).
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// API names, as passed to Options.Fault.
const (
	APIRandomUser = "randomuser"
	APIOpenMeteo  = "open-meteo"
)

// Path prefixes of the two APIs under Handler.
const (
	PrefixRandomUser = "/randomuser"
	PrefixOpenMeteo  = "/open-meteo"
)

// DefaultUsers is the default population size.
const DefaultUsers = 2000

// Options configure a simulator. The zero value is usable.
type Options struct {
	Seed  uint64           // population seed; 0 is taken as 1
	Users int              // population size; default DefaultUsers
	Clock func() time.Time // "now" for the weather slot and ages; default time.Now
	// APIKey, when set, makes the simulated Open-Meteo require apikey=APIKey,
	// as the commercial endpoint does.
	APIKey string
	// Fault, when set, is called before each request is served; a non-zero
	// status makes the API answer that status with its own error body
	// (Open-Meteo: {"error":true,"reason":...}; randomuser: {"error":...}).
	Fault func(api string, r *http.Request) int
	// Inject, when set, is called before each request is served (after
	// Fault) and may make the answer misbehave in other ways: see Fault.
	Inject func(api string, r *http.Request) Fault
	// Logger logs the server's own errors; default: discard.
	Logger *slog.Logger
}

// Fault is a misbehaviour of one answer, for tests of the clients'
// resilience. The zero Fault answers normally.
type Fault struct {
	// Status, when non-zero, answers this HTTP status with the API's error
	// body (as Options.Fault).
	Status int
	// RetryAfter sets a Retry-After header (whole seconds) on a Status
	// answer; a 429 without it gets "60", as the real API's minutely limit.
	RetryAfter time.Duration
	// Delay holds the answer this long, or until the client gives up (its
	// request context ends), whichever comes first: a slow provider.
	Delay time.Duration
	// Malformed answers 200 with a truncated JSON body.
	Malformed bool
	// Missing leaves these members (indices of the locations asked) out of
	// an Open-Meteo answer; the others keep their location_id.
	Missing []int
	// Reverse answers an Open-Meteo multi-location request's members in
	// reverse order (each keeps its location_id).
	Reverse bool
}

// Sim holds a population and serves the two APIs. It is safe for concurrent
// use.
type Sim struct {
	seed   uint64
	users  []simUser
	all    []int
	byNat  map[string][]int
	clock  func() time.Time
	apiKey string
	fault  func(string, *http.Request) int
	inject func(string, *http.Request) Fault

	requests                            atomic.Uint64 // randomuser requests without a seed
	ruRequests, omRequests, omLocations atomic.Int64
	faults                              atomic.Int64
}

// New builds a simulator and its population.
func New(opts Options) *Sim {
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Users <= 0 {
		opts.Users = DefaultUsers
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	s := &Sim{
		seed: opts.Seed, clock: opts.Clock, apiKey: opts.APIKey, fault: opts.Fault, inject: opts.Inject,
		users: make([]simUser, opts.Users), all: make([]int, opts.Users), byNat: map[string][]int{},
	}
	now := opts.Clock()
	for i := range s.users {
		s.users[i] = genUser(opts.Seed, i, now)
		s.all[i] = i
		s.byNat[s.users[i].nat] = append(s.byNat[s.users[i].nat], i)
	}
	return s
}

// Users returns the population, in order.
func (s *Sim) Users() []User {
	out := make([]User, len(s.users))
	for i, u := range s.users {
		out[i] = User{UUID: u.uuid, Nationality: u.nat, Latitude: u.lat, Longitude: u.lon}
	}
	return out
}

// Stats counts the requests served.
type Stats struct {
	RandomUserRequests int64 // answered 200
	OpenMeteoRequests  int64 // answered 200
	OpenMeteoLocations int64 // locations in those answers
	Faults             int64 // answers made by Options.Fault
}

// Stats returns the counters.
func (s *Sim) Stats() Stats {
	return Stats{
		RandomUserRequests: s.ruRequests.Load(), OpenMeteoRequests: s.omRequests.Load(),
		OpenMeteoLocations: s.omLocations.Load(), Faults: s.faults.Load(),
	}
}

// injected applies the faults of Options.Fault and Options.Inject to a
// request. It reports whether it answered the request; otherwise the fault
// to apply to a normal answer is returned (Missing, Reverse).
func (s *Sim) injected(api string, w http.ResponseWriter, r *http.Request) (bool, Fault) {
	var f Fault
	if s.fault != nil {
		f.Status = s.fault(api, r)
	}
	if f.Status == 0 && s.inject != nil {
		f = s.inject(api, r)
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.faults.Add(1)
			return true, f
		}
	}
	switch {
	case f.Status != 0:
		s.faults.Add(1)
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter.Round(time.Second)/time.Second)))
		}
		if api == APIOpenMeteo {
			reason := "Simulated fault: " + http.StatusText(f.Status)
			if f.Status == http.StatusTooManyRequests {
				reason = "Minutely API request limit exceeded. Please try again in one minute."
				if f.RetryAfter == 0 {
					w.Header().Set("Retry-After", "60")
				}
			}
			writeOpenMeteoError(w, f.Status, reason)
		} else {
			writeRandomUserError(w, f.Status, "Uh oh, something has gone wrong. Please tweet us @randomapi about the issue. Thank you.")
		}
		return true, f
	case f.Malformed:
		s.faults.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `[{"latitude":52.55,"longitude":13.45,"generationtime_ms":0.03,"current":{"time":"2026-`)
		return true, f
	}
	return false, f
}

// RandomUser returns the randomuser.me handler: GET /api/ (also /api and
// /api/1.4/) with results (1..5000, default 1), seed, page, nat, inc, exc
// and noinfo.
func (s *Sim) RandomUser() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimSuffix(r.URL.Path, "/") {
		case "/api", "/api/" + RandomUserVersion:
		default:
			writeRandomUserError(w, http.StatusNotFound, "Not found")
			return
		}
		if done, _ := s.injected(APIRandomUser, w, r); done {
			return
		}
		s.serveRandomUser(w, r)
		s.ruRequests.Add(1)
	})
}

// OpenMeteo returns the Open-Meteo handler: GET /v1/forecast (current
// conditions, and hours from 92 days back to 16 days ahead) and GET
// /v1/archive (the historical weather API: hours from 1940 to today, by
// start_date and end_date).
func (s *Sim) OpenMeteo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		archive := false
		switch r.URL.Path {
		case "/v1/forecast":
		case "/v1/archive":
			archive = true
		default:
			writeOpenMeteoError(w, http.StatusNotFound, "Not Found")
			return
		}
		done, f := s.injected(APIOpenMeteo, w, r)
		if done {
			return
		}
		s.serveOpenMeteo(w, r, archive, f)
	})
}

// Handler serves both APIs, under PrefixRandomUser and PrefixOpenMeteo.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(PrefixRandomUser+"/", http.StripPrefix(PrefixRandomUser, s.RandomUser()))
	mux.Handle(PrefixOpenMeteo+"/", http.StripPrefix(PrefixOpenMeteo, s.OpenMeteo()))
	return mux
}

// Server is a running simulator.
type Server struct {
	*Sim
	URL           string // http://host:port
	RandomUserURL string // base URL for a randomuser client: URL + PrefixRandomUser
	OpenMeteoURL  string // base URL for an Open-Meteo client: URL + PrefixOpenMeteo

	srv  *platform.Server
	done chan error
}

// Start builds a simulator and serves it on addr (e.g. "127.0.0.1:0") until
// ctx is done or Close is called.
func Start(ctx context.Context, addr string, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sim := New(opts)
	srv, err := platform.Listen(addr, sim.Handler(), log)
	if err != nil {
		return nil, fmt.Errorf("start simulator: %w", err)
	}
	base := "http://" + srv.Addr()
	s := &Server{Sim: sim, URL: base, RandomUserURL: base + PrefixRandomUser, OpenMeteoURL: base + PrefixOpenMeteo,
		srv: srv, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve() }()
	go func() {
		select {
		case <-ctx.Done():
			s.shutdown()
		case err := <-s.done:
			s.done <- err
		}
	}()
	return s, nil
}

// shutdown stops the server: requests in flight get a second to finish,
// then every connection is closed. (http.Server.Shutdown alone would wait
// 5 s for a connection that was opened and never sent a request, which a
// client's cancelled request can leave behind.)
func (s *Server) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.srv.Shutdown(ctx) // closes what is left at the deadline
}

// Close stops the server and waits for it to stop.
func (s *Server) Close() error {
	s.shutdown()
	err := <-s.done
	s.done <- err
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("simulator: %w", err)
	}
	return nil
}
