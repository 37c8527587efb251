package app

import (
	"net"
	"net/http"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// guardHTTP puts the process's guard in front of h (the mux's handler):
// paths and queries of valid UTF-8, the CORS policy, and request bodies of
// the media types their route takes (api.Bodies).
func guardHTTP(cfg platform.HTTPConfig, mux *http.ServeMux, h http.Handler) http.Handler {
	return platform.Guard{Origins: cfg.CORSOrigins, Bodies: func(r *http.Request) ([]string, bool) {
		_, pattern := mux.Handler(r)
		b := api.BodyOf(pattern)
		return b.MediaTypes, b.Gzip
	}}.Wrap(h)
}

// rateLimits returns what wraps each route in its class's rate limit, per
// caller: ingest (the ingest scope) and reads (the read and stream scopes).
// Webhook management, admin routes and the probes are not limited.
func rateLimits(cfg platform.HTTPConfig) func(api.Route, http.Handler) http.Handler {
	ingest := platform.NewRateLimiter("ingest", cfg.IngestRate, cfg.IngestBurst)
	read := platform.NewRateLimiter("read", cfg.ReadRate, cfg.ReadBurst)
	return func(rt api.Route, h http.Handler) http.Handler {
		switch rt.Scope {
		case api.ScopeIngest:
			return ingest.Wrap(caller, h)
		case api.ScopeRead, api.ScopeStream:
			return read.Wrap(caller, h)
		}
		return h
	}
}

// caller names who sends a request, for its rate limit: the principal the
// auth middleware found (a key id, an ID token's subject), or without auth
// the client's IP address.
func caller(r *http.Request) string {
	if p, ok := auth.FromContext(r.Context()); ok && p.Kind != "none" && p.ID != "" {
		return "principal:" + p.ID
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host
}
