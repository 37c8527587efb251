package platform

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"golang.org/x/net/netutil"
)

// ErrorBody is the JSON body of every error answer of skyjoin's HTTP APIs.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes an error; Details lists per-field problems.
type ErrorDetail struct {
	Code    int    `json:"code"`
	Status  string `json:"status"` // e.g. INVALID_ARGUMENT
	Message string `json:"message"`
	Details any    `json:"details,omitempty"`
}

// statusNames follow google.rpc.Code names, as Google APIs answer.
var statusNames = map[int]string{
	http.StatusBadRequest:            "INVALID_ARGUMENT",
	http.StatusUnauthorized:          "UNAUTHENTICATED",
	http.StatusForbidden:             "PERMISSION_DENIED",
	http.StatusNotFound:              "NOT_FOUND",
	http.StatusMethodNotAllowed:      "METHOD_NOT_ALLOWED",
	http.StatusRequestTimeout:        "DEADLINE_EXCEEDED",
	http.StatusConflict:              "ALREADY_EXISTS",
	http.StatusRequestEntityTooLarge: "REQUEST_TOO_LARGE",
	http.StatusUnsupportedMediaType:  "UNSUPPORTED_MEDIA_TYPE",
	http.StatusTooManyRequests:       "RESOURCE_EXHAUSTED",
	http.StatusInternalServerError:   "INTERNAL",
	http.StatusServiceUnavailable:    "UNAVAILABLE",
	http.StatusGatewayTimeout:        "DEADLINE_EXCEEDED",
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":{"code":500,"status":"INTERNAL","message":"encode response"}}`, http.StatusInternalServerError)
		return
	}
	WriteJSONBytes(w, status, b)
}

// WriteJSONBytes writes b, a JSON value, as WriteJSON writes the encoding
// of its value: with a newline after it (appended to b, which has room for
// it if cap(b) > len(b)).
func WriteJSONBytes(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// WriteError writes an ErrorBody. details may be nil.
func WriteError(w http.ResponseWriter, status int, message string, details any) {
	name := statusNames[status]
	if name == "" {
		name = http.StatusText(status)
	}
	WriteJSON(w, status, ErrorBody{Error: ErrorDetail{Code: status, Status: name, Message: message, Details: details}})
}

// WriteUnavailable answers 503 with a Retry-After header.
func WriteUnavailable(w http.ResponseWriter, retryAfter time.Duration, message string) {
	secs := int((retryAfter + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	WriteError(w, http.StatusServiceUnavailable, message, nil)
}

// HTTPConfig is how a process's HTTP server guards itself: a cap on
// connections, read timeouts, the CORS policy and per-caller rate limits.
type HTTPConfig struct {
	// MaxConns caps the connections served at once; past it, new
	// connections wait in the kernel's accept queue until one closes
	// (netutil.LimitListener). 0: no cap.
	MaxConns int
	// ReadHeaderTimeout bounds the reading of a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, body included; a
	// body that has not arrived by then is answered 408 (see ReadBody).
	ReadTimeout time.Duration
	// CORSOrigins are the origins (scheme://host[:port]) whose pages may
	// call the API from a browser; others are refused. Empty: none.
	CORSOrigins []string
	// Rate limits per caller and per instance (see RateLimiter); a rate of
	// 0 turns the limit off.
	IngestRate, ReadRate   float64
	IngestBurst, ReadBurst int
	// BodyBytes bounds the bytes of request bodies (decompressed) that
	// all the requests in flight hold at once (BodyBudget). 0: no bound.
	BodyBytes int64
}

// Defaults of HTTPConfig.
const (
	DefaultMaxConns          = 1024
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultIngestRate        = 1000
	DefaultIngestBurst       = 2000
	DefaultReadRate          = 50
	DefaultReadBurst         = 100
	DefaultBodyBytes         = 256 << 20
)

// RegisterFlags adds the HTTP server's flags to fs.
func (c *HTTPConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxConns, "http-max-conns", DefaultMaxConns, "most connections served at once; past it new connections wait until one closes (0: no cap)")
	fs.DurationVar(&c.ReadHeaderTimeout, "http-read-header-timeout", DefaultReadHeaderTimeout, "how long a client may take to send a request's headers")
	fs.DurationVar(&c.ReadTimeout, "http-read-timeout", DefaultReadTimeout, "how long a client may take to send a whole request, body included; a body not in by then gets 408")
	fs.Func("cors-origins", "comma-separated origins (https://app.example.com) whose web pages may call the API; other cross-origin requests get 403 (default: none)", func(v string) error {
		origins, err := parseOrigins(v)
		c.CORSOrigins = origins
		return err
	})
	fs.Float64Var(&c.IngestRate, "rate-ingest", DefaultIngestRate, "POST /v1/events requests per second per caller (API key or principal; client IP without auth), on each instance (0: no limit)")
	fs.IntVar(&c.IngestBurst, "rate-ingest-burst", DefaultIngestBurst, "requests a caller may send at once above --rate-ingest")
	fs.Float64Var(&c.ReadRate, "rate-read", DefaultReadRate, "read requests (records, stats, schema, stream) per second per caller, on each instance (0: no limit)")
	fs.IntVar(&c.ReadBurst, "rate-read-burst", DefaultReadBurst, "read requests a caller may send at once above --rate-read")
	fs.Int64Var(&c.BodyBytes, "http-max-body-bytes-in-flight", DefaultBodyBytes, "most bytes of request bodies (decompressed) held at once by all the requests in flight; past it a request gets 503 with Retry-After (0: no bound)")
}

// Validate reports every problem at once.
func (c HTTPConfig) Validate() error {
	var p Problems
	if c.MaxConns < 0 {
		p.Addf("http-max-conns must not be negative, got %d", c.MaxConns)
	}
	if c.ReadHeaderTimeout <= 0 {
		p.Addf("http-read-header-timeout must be positive, got %s", c.ReadHeaderTimeout)
	}
	if c.ReadTimeout <= 0 {
		p.Addf("http-read-timeout must be positive, got %s", c.ReadTimeout)
	}
	if c.BodyBytes < 0 {
		p.Addf("http-max-body-bytes-in-flight must not be negative, got %d", c.BodyBytes)
	}
	if _, err := parseOrigins(strings.Join(c.CORSOrigins, ",")); err != nil {
		p.Addf("cors-origins: %v", err)
	}
	for _, r := range []struct {
		name  string
		rate  float64
		burst int
	}{{"rate-ingest", c.IngestRate, c.IngestBurst}, {"rate-read", c.ReadRate, c.ReadBurst}} {
		switch {
		case r.rate < 0 || math.IsNaN(r.rate) || math.IsInf(r.rate, 0):
			p.Addf("%s must be a number of requests per second, 0 or more, got %v", r.name, r.rate)
		case r.rate > 0 && r.burst < 1:
			p.Addf("%s-burst must be at least 1 with a rate limit, got %d", r.name, r.burst)
		}
	}
	return p.Err()
}

// Server is an HTTP server with the timeouts a public server needs and a
// graceful shutdown.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// Listen binds addr (host:port; port 0 picks a free one) with the default
// HTTPConfig.
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	return HTTPConfig{MaxConns: DefaultMaxConns, ReadHeaderTimeout: DefaultReadHeaderTimeout, ReadTimeout: DefaultReadTimeout}.Listen(addr, h, log)
}

// Listen binds addr (host:port; port 0 picks a free one) for h, with c's
// connection cap and timeouts.
func (c HTTPConfig) Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if c.MaxConns > 0 {
		// Past the cap, Accept waits for a connection to close: new clients
		// wait in the kernel's accept queue (then their connect times out),
		// rather than getting an answer. Idle keep-alive connections count
		// until IdleTimeout closes them.
		ln = netutil.LimitListener(ln, c.MaxConns)
	}
	if c.BodyBytes > 0 {
		h = NewBodyBudget(c.BodyBytes).Wrap(h)
	}
	return &Server{
		ln:  ln,
		log: log,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: c.ReadHeaderTimeout,
			ReadTimeout:       c.ReadTimeout,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", s.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
		return fmt.Errorf("shut down http server: %w", err)
	}
	return nil
}

// Router is where a package mounts its routes: an *http.ServeMux, or the
// recorder through which internal/app checks every route against its one
// route table.
type Router interface {
	Handle(pattern string, h http.Handler)
	HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request))
}

var _ Router = (*http.ServeMux)(nil)
