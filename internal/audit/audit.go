// Package audit writes the audit trail: one structured log entry for every
// request of a route that reads records or administers skyjoin (the route
// table's scopes read, stream, webhooks and admin), saying who (the
// caller's principal), what (method, route and parameters, secrets
// redacted), when (start and duration) and the result (status, bytes).
//
// Entries are slog records with the message "audit", the attribute
// audit=true and the Cloud Logging label audit=true
// (logging.googleapis.com/labels), so that a log sink or a query selects
// them: labels.audit="true". They are written whatever the log level.
//
// An administrative action taken outside the HTTP API (skyjoin keys
// against the registry itself) is written by Action: the same entry, with
// the action and its target in place of the route, and its result.
//
// Wire it around the whole handler: Middleware(log, opts, mux). It sees a
// request refused before the mux too; the principal is read from the
// request's context (auth.FromContext) where Middleware runs or, when
// authentication runs inside it (each route of the mux authenticates), from
// an auth.Witness it puts in the request's context.
package audit

import (
	"cmp"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth"
)

// Audited are the scopes whose routes are audited.
var Audited = []string{api.ScopeRead, api.ScopeStream, api.ScopeWebhooks, api.ScopeAdmin}

// Anonymous is the principal of a request that carries none.
const Anonymous = "anonymous"

// Redacted replaces the value of a parameter that may hold a secret.
const Redacted = "[REDACTED]"

// maxValue bounds a logged parameter value.
const maxValue = 256

// Options tune the trail.
type Options struct {
	// Param, if set, maps a parameter's value before it is logged, e.g. a
	// user id to its hash under the PII policy; route is the route's
	// pattern, name the parameter's.
	Param func(route, name, value string) string
}

type route struct {
	api.Route
	wild []string // path segments of the pattern; "{name}" or "{name...}" for wildcards
}

// Middleware returns h with the audit trail written to log.
func Middleware(log *slog.Logger, opts Options, h http.Handler) http.Handler {
	routes := map[string]route{}
	mux := http.NewServeMux()
	nop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, rt := range api.Routes {
		audited := false
		for _, s := range Audited {
			audited = audited || rt.Scope == s
		}
		mux.Handle(rt.Pattern, nop) // every route, so that patterns match as the real mux's do
		if audited {
			_, p, _ := strings.Cut(rt.Pattern, " ")
			routes[rt.Pattern] = route{Route: rt, wild: strings.Split(strings.TrimPrefix(p, "/"), "/")}
		}
	}
	log = slog.New(always{log.Handler()})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		rt, ok := routes[pattern]
		if !ok {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		ctx, witness := auth.WithWitness(r.Context())
		rw := &recorder{ResponseWriter: w}
		h.ServeHTTP(rw, r.WithContext(ctx))
		who, ok := auth.FromContext(r.Context())
		if !ok {
			who, ok = witness.Principal()
		}
		if !ok || who.ID == "" {
			who = auth.Principal{ID: Anonymous, Kind: "none"}
		}
		status := rw.status
		if status == 0 {
			status = http.StatusOK // nothing written: net/http answers 200
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "audit",
			slog.Bool("audit", true),
			slog.Group("logging.googleapis.com/labels", slog.String("audit", "true")),
			slog.String("principal", who.ID),
			slog.String("principal_kind", who.Kind),
			slog.String("method", r.Method),
			slog.String("route", rt.Pattern),
			slog.String("scope", rt.Scope),
			slog.Any("params", params(rt, r, opts)),
			slog.Int("status", status),
			slog.Int64("bytes", rw.bytes),
			slog.Time("start", start.UTC()),
			slog.Int64("duration_ms", time.Since(start).Milliseconds()),
			slog.String("remote_ip", remoteIP(r)),
		)
	})
}

// Results of an Action.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// KindCLI is the principal kind of a command run on this machine
// (LocalPrincipal).
const KindCLI = "cli"

// Entry is an administrative action taken outside the HTTP API.
type Entry struct {
	Principal auth.Principal
	// Action names what was done, as "keys.create".
	Action string
	// Params are what it was done to (id, scopes); a parameter whose
	// name may carry a secret is redacted, as a route's are.
	Params map[string]string
	Start  time.Time
	// Err is the action's error; nil: it succeeded.
	Err error
}

// Action writes the audit entry of e: the fields of a route's entry
// (principal, principal_kind, params, start, duration_ms), with action in
// place of method and route, and result ("ok" or "error", and the error's
// text) in place of the status.
func Action(ctx context.Context, log *slog.Logger, e Entry) {
	params := map[string]string{}
	for k, v := range e.Params {
		if secretName.MatchString(k) {
			v = Redacted
		}
		params[k] = v
	}
	who := e.Principal
	if who.ID == "" {
		who = auth.Principal{ID: Anonymous, Kind: "none"}
	}
	result := ResultOK
	if e.Err != nil {
		result = ResultError
	}
	attrs := []slog.Attr{
		slog.Bool("audit", true),
		slog.Group("logging.googleapis.com/labels", slog.String("audit", "true")),
		slog.String("principal", who.ID),
		slog.String("principal_kind", who.Kind),
		slog.String("action", e.Action),
		slog.Any("params", params),
		slog.String("result", result),
		slog.Time("start", e.Start.UTC()),
		slog.Int64("duration_ms", time.Since(e.Start).Milliseconds()),
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	slog.New(always{log.Handler()}).LogAttrs(ctx, slog.LevelInfo, "audit", attrs...)
}

// LocalPrincipal is the principal of a command run on this machine: the
// OS user and the host, as "cli:USER@HOST" (the user's uid when it has no
// name; host "unknown" when the OS does not say).
func LocalPrincipal() auth.Principal {
	name := ""
	if u, err := user.Current(); err == nil {
		name = cmp.Or(u.Username, u.Uid)
	}
	name = cmp.Or(name, os.Getenv("USER"), strconv.Itoa(os.Getuid()))
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return auth.Principal{ID: KindCLI + ":" + name + "@" + host, Kind: KindCLI}
}

// secretName matches the names of parameters that may carry credentials.
var secretName = regexp.MustCompile(`(?i)token|key|secret|passw|auth|sig|credential|session|cookie|bearer`)

// params returns a request's path and query parameters as they are
// logged: a secret's redacted, values mapped by opts.Param and bounded.
func params(rt route, r *http.Request, opts Options) map[string]string {
	out := map[string]string{}
	put := func(name, v string) {
		switch {
		case secretName.MatchString(name):
			v = Redacted
		case opts.Param != nil:
			v = opts.Param(rt.Pattern, name, v)
		}
		if len(v) > maxValue {
			v = strings.ToValidUTF8(v[:maxValue], "") + "..."
		}
		if !utf8.ValidString(v) {
			v = strings.ToValidUTF8(v, "\uFFFD")
		}
		out[name] = v
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	for i, w := range rt.wild {
		if !strings.HasPrefix(w, "{") || i >= len(segs) || w == "{$}" {
			continue
		}
		name := strings.Trim(w, "{}")
		v := segs[i]
		if rest, ok := strings.CutSuffix(name, "..."); ok {
			name, v = rest, strings.Join(segs[i:], "/")
		}
		if u, err := url.PathUnescape(v); err == nil {
			v = u
		}
		put(name, v)
	}
	for name, vs := range r.URL.Query() {
		put(name, strings.Join(vs, ","))
	}
	return out
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// recorder records the status and size of an answer. It passes flushes
// on (the live stream) and unwraps for http.ResponseController.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// always is a handler that takes every level: the audit trail is written
// whatever --log-level says.
type always struct{ slog.Handler }

func (a always) Enabled(context.Context, slog.Level) bool { return true }
func (a always) WithAttrs(as []slog.Attr) slog.Handler    { return always{a.Handler.WithAttrs(as)} }
func (a always) WithGroup(name string) slog.Handler       { return always{a.Handler.WithGroup(name)} }
