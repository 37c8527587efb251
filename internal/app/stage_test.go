package app

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// TestStageCommandsTakeOnlyTheirFlags: each stage command takes the flags
// of its own stages and of the parts they use, and refuses the others. The
// lists are written here, not derived from the registration code.
func TestStageCommandsTakeOnlyTheirFlags(t *testing.T) {
	common := []string{"addr", "admin-addr", "data-dir", "shutdown-timeout", "ready-file", "log-level", "log-format", "telemetry",
		"registry", "auth", "insecure-no-auth", "auth-idtoken-audience", "auth-idtoken-scopes", "auth-idtoken-emails", "auth-session-ttl",
		"http-max-conns", "http-read-header-timeout", "http-read-timeout", "cors-origins", "rate-ingest", "rate-ingest-burst", "rate-read", "rate-read-burst"}
	cases := []struct {
		cmd    string
		takes  []string
		refuse []string
	}{
		{"ingest",
			[]string{"broker", "ingest-max-events", "ingest-max-backlog", "ingest-group-publishes", "ingest-unknown-fields"},
			[]string{"duckdb-threads", "store", "enrich-batch", "weather-url", "weather-quota", "collect-url", "webhook-timeout", "query-timeout", "demo", "stats-every", "pii-policy", "pii-key", "retention"}},
		{"collect",
			[]string{"broker", "collect-url", "collect-interval", "demo", "sim-users", "collect"},
			[]string{"duckdb-threads", "duckdb-memory-limit", "store", "enrich-batch", "weather-url", "ingest-max-events", "webhook-timeout", "query-timeout", "stats-every"}},
		{"enrich",
			[]string{"broker", "store", "duckdb-threads", "enrich-batch", "enrich-ack-wait", "weather-url", "weather-quota", "weather-api-key", "demo", "stats-every", "serve", "query-timeout", "pii-policy", "pii-key", "retention", "retention-interval", "registry"},
			[]string{"collect-url", "collect-interval", "ingest-max-events", "ingest-max-backlog", "ingest-unknown-fields", "webhook-timeout"}},
		{"serve",
			[]string{"store", "query-timeout", "ready-timeout", "pii-policy", "pii-key", "registry", "stats-max-range", "stream-max-lifetime", "stream-resume-window"},
			[]string{"enrich-batch", "weather-url", "collect-url", "ingest-max-events", "webhook-timeout", "demo", "sim-users", "stats-every", "serve", "retention"}},
		{"deliver",
			[]string{"webhook-timeout", "webhook-max-attempts", "webhook-allow-private", "webhook-deny-private", "webhook-secret-key", "webhook-secret-old-keys", "webhook-secret-next-key"},
			[]string{"enrich-batch", "weather-url", "collect-url", "ingest-max-events", "query-timeout", "demo", "stats-every", "pii-policy", "retention", "stats-max-range", "stream-max-lifetime", "stream-resume-window"}},
		{"up",
			[]string{"broker", "store", "duckdb-threads", "ingest-max-events", "collect-url", "collect", "enrich-batch", "weather-url", "demo", "sim-users", "query-timeout", "webhook-timeout", "stats-every"},
			[]string{"serve"}},
		// broker runs no stage: its own flags, logging and the memory
		// budget, none of common's but data-dir, ready-file and the log's.
		{"broker",
			[]string{"listen", "data-dir", "ready-file", "log-level", "log-format", "memory-limit"},
			[]string{"duckdb-threads", "store", "webhook-timeout", "broker", "addr", "admin-addr", "registry", "auth", "rate-ingest", "enrich-batch", "weather-url", "collect-url", "ingest-max-events", "query-timeout", "demo", "pii-key", "webhook-secret-key", "telemetry"}},
	}
	for _, tc := range cases {
		t.Run(tc.cmd, func(t *testing.T) {
			var fs *flag.FlagSet
			takes := tc.takes
			if tc.cmd == "broker" {
				fs, _ = brokerFlagSet(io.Discard)
			} else {
				fs, _, _ = stageFlagSet(findStageCommand(tc.cmd), newConfig(tc.cmd), io.Discard)
				takes = append(common, takes...)
			}
			for _, f := range takes {
				if fs.Lookup(f) == nil {
					t.Errorf("skyjoin %s does not take --%s", tc.cmd, f)
				}
			}
			for _, f := range tc.refuse {
				if fs.Lookup(f) != nil {
					t.Errorf("skyjoin %s takes --%s, a flag of a stage it does not run", tc.cmd, f)
				}
			}
			// Through the real entry point: an unknown flag is a usage error.
			if len(tc.refuse) > 0 {
				var stderr bytes.Buffer
				err := Main(context.Background(), []string{tc.cmd, "--" + tc.refuse[0] + "=1"}, io.Discard, &stderr)
				if err == nil || ExitCode(err) != 2 || !strings.Contains(err.Error(), "-"+tc.refuse[0]) {
					t.Errorf("skyjoin %s --%s=1: err %v (exit %d)", tc.cmd, tc.refuse[0], err, ExitCode(err))
				}
			}
		})
	}
}

// TestRouteTableAgrees: the process mounts exactly the route table's routes
// of its stages, its ready file and banner list them, and /openapi.json
// describes the table's public API.
func TestRouteTableAgrees(t *testing.T) {
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	var banner bytes.Buffer
	base, stop := startInProcessOut(t, upHooks{}, &banner, "--ready-file", readyFile)
	defer stop()

	var info readyInfo
	b, err := os.ReadFile(readyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.URL != base || info.PID != os.Getpid() || info.Command != "up" || info.AdminURL == "" || info.Auth != "off" {
		t.Errorf("ready file: %+v, want url %s, an admin url, auth off", info, base)
	}
	if !strings.Contains(banner.String(), "auth       off (loopback only)") || !strings.Contains(banner.String(), "admin      "+info.AdminURL) {
		t.Errorf("the banner does not say auth is off on loopback, or where the admin listener is:\n%s", banner.String())
	}
	var want []string
	for _, r := range api.Routes { // up runs every stage
		want = append(want, r.Pattern)
	}
	if !slices.Equal(info.Routes, want) {
		t.Errorf("ready file routes:\n%v\nwant\n%v", info.Routes, want)
	}
	for _, r := range api.Routes {
		line := r.Method() + " " + r.Path()
		if got := strings.Contains(banner.String(), line+" ") || strings.Contains(banner.String(), line+"\n"); got != r.Banner {
			t.Errorf("banner lists %s: %v, want %v\n%s", line, got, r.Banner, banner.String())
		}
		// Mounted: the mux has a route for it (a handler may still answer
		// 404 for an unknown id, but not "no route").
		path := strings.NewReplacer("{$}", "", "...}", "}", "/assets/", "/assets/app.js").Replace(r.Path())
		for _, w := range []string{"{event_id}", "{id}"} {
			path = strings.ReplaceAll(path, w, "x")
		}
		if r.Pattern == "GET /v1/stream" || strings.HasPrefix(r.Pattern, "GET /debug/pprof/") && r.Pattern != "GET /debug/pprof/" {
			continue // long-running answers; their patterns are checked by the recorder
		}
		// Mounted on its listener (the admin listener's routes there
		// only, never on the public port), and nowhere else.
		on, off := base, info.AdminURL
		if r.OnAdminListener() {
			on, off = off, on
		}
		for _, u := range []string{on, off} {
			req, _ := http.NewRequest(r.Method(), u+path, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			unmounted := strings.Contains(string(body), "no route for") || strings.Contains(string(body), "not allowed on")
			if u == on && unmounted {
				t.Errorf("%s (%s %s) is not mounted: %d %s", r.Pattern, r.Method(), path, resp.StatusCode, body)
			}
			if u == off && !unmounted && !(r.Pattern == "GET /{$}" && u == info.AdminURL) {
				t.Errorf("%s (%s %s) is mounted on %s too: %d", r.Pattern, r.Method(), path, u, resp.StatusCode)
			}
		}
	}

	resp, err := http.Get(base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var documented, public []string
	for path, ops := range doc.Paths {
		for m := range ops {
			if m != "parameters" {
				documented = append(documented, strings.ToUpper(m)+" "+path)
			}
		}
	}
	for _, r := range api.Routes {
		if r.Doc {
			public = append(public, r.Method()+" "+r.Path())
		}
	}
	slices.Sort(documented)
	slices.Sort(public)
	if !slices.Equal(documented, public) {
		t.Errorf("/openapi.json describes\n%v\nthe route table's public API is\n%v", documented, public)
	}
}

// TestStageMountsOnlyTableRoutes: a stage that mounts a route the table
// does not have, or one of another stage, or misses one, stops the start.
func TestStageMountsOnlyTableRoutes(t *testing.T) {
	noop := func(http.ResponseWriter, *http.Request) {}
	rec := newRouteRecorder(http.NewServeMux())
	rec.for_(api.Serve).HandleFunc("GET /v1/secret", noop)
	rec.for_(api.Serve).HandleFunc("POST /v1/events", noop)
	err := rec.check([]string{api.Serve})
	for _, want := range []string{`"GET /v1/secret", which is not in the route table`, `"POST /v1/events", a route of stage ingest`,
		`"GET /v1/stats" of stage "serve" is in the route table but no stage mounted it`, `"GET /healthz"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %s", err, want)
		}
	}
}

// startInProcessOut is startInProcess with the banner written to out.
func startInProcessOut(t *testing.T, hooks upHooks, out io.Writer, args ...string) (string, func()) {
	t.Helper()
	return startInProcessLog(t, hooks, out, testLogger(), args...)
}

// startInProcessLog is startInProcessOut logging to log.
func startInProcessLog(t *testing.T, hooks upHooks, out io.Writer, log *slog.Logger, args ...string) (string, func()) {
	t.Helper()
	// up sets GOMAXPROCS (--procs); the test binary keeps its own.
	procs := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs) })
	cfg := newConfig("up")
	fs, stages, _ := stageFlagSet(findStageCommand("up"), cfg, io.Discard)
	all := append([]string{"--demo", "--collect=false", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--stats-every", "0", "--weather-quota", "none", "--log-level", "error"}, args...)
	if err := platform.ParseFlags(fs, all); err != nil {
		t.Fatal(err)
	}
	cfg.applyDemoDefaults(fs)
	if err := validateStages(cfg, stages); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	hooks.ready = func(a string) { addr <- a }
	hooks.info = func(info readyInfo) { inProcess.Store(info.URL, info) }
	cfg.hooks = hooks
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if hooks.log != nil {
		log = hooks.log
	}
	go func() { done <- runProcess(ctx, cfg, stages, out, log) }()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("up exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("up did not start in 60 s")
	}
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("up: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("up did not stop in 30 s")
		}
	}
	return base, stop
}

// inProcess holds the ready info of each in-process up, by API base URL.
var inProcess sync.Map

// adminURL is the admin listener's base URL of the in-process up at base.
func adminURL(t *testing.T, base string) string {
	t.Helper()
	info, ok := inProcess.Load(base)
	if !ok || info.(readyInfo).AdminURL == "" {
		t.Fatalf("no admin listener for %s", base)
	}
	return info.(readyInfo).AdminURL
}

func testLogger() *slog.Logger {
	if os.Getenv("SKYJOIN_TEST_LOG") == "" {
		return platform.Discard
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestEveryCommandRefusesAnUnknownFlag: through the real entry point, an
// unknown flag is a usage error (exit code 2) for every command, not only
// the stage commands.
func TestEveryCommandRefusesAnUnknownFlag(t *testing.T) {
	names := []string{"up", "ingest", "enrich", "serve", "collect", "deliver", "broker",
		"backfill", "compact", "bench", "keys", "deadletters", "replay", "migrate", "schema", "sim", "privacy"}
	calls := [][]string{{"keys", "create", "--no-such-flag=1"},
		// A bad value, refused before the keys are reached (here: through
		// --url, where nothing listens).
		{"keys", "list", "--url", "http://127.0.0.1:1", "--log-format", "nope"}}
	for _, name := range names {
		calls = append(calls, []string{name, "--no-such-flag=1"})
	}
	for _, args := range calls {
		var stderr bytes.Buffer
		err := Main(context.Background(), args, io.Discard, &stderr)
		if err == nil || ExitCode(err) != 2 {
			t.Errorf("skyjoin %s: err %v (exit %d), want a usage error", strings.Join(args, " "), err, ExitCode(err))
		}
	}
}

// TestBodyBudgetAboveTheIngestLimit: a budget of body bytes in flight
// below the largest events body is refused at start, naming both flags.
func TestBodyBudgetAboveTheIngestLimit(t *testing.T) {
	err := Main(context.Background(), []string{"ingest", "--http-max-body-bytes-in-flight", "1048576", "--ingest-max-bytes", "2097152"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "http-max-body-bytes-in-flight") || !strings.Contains(err.Error(), "ingest-max-bytes") {
		t.Errorf("a budget below the ingest limit: %v", err)
	}
}
