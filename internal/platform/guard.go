package platform

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Guard is what every request passes before its route: a path and a query
// of valid UTF-8, the CORS policy, and for a request that changes state, a
// body of a media type its route takes.
type Guard struct {
	// Origins may call the API from a browser (CORSOrigins).
	Origins []string
	// Bodies returns the media types (lower case, no parameters) the
	// request's route takes as a body, and whether it takes gzip. nil:
	// application/json alone, without Content-Encoding.
	Bodies func(r *http.Request) (mediaTypes []string, gzip bool)
}

// CORS answers: the methods and headers a page from an allowed origin may
// use, and the answer headers it may read.
const (
	corsMethods       = "GET, HEAD, POST, DELETE"
	corsHeaders       = "Authorization, Content-Type, Content-Encoding, Last-Event-ID"
	corsExposeHeaders = "Retry-After, Link, Location"
	corsMaxAge        = "600"
)

// Wrap returns next behind the guard.
func (g Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg := checkURL(r.URL); msg != "" {
			WriteError(w, http.StatusBadRequest, msg, nil)
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r.Host) {
			if !slices.Contains(g.Origins, strings.ToLower(origin)) {
				WriteError(w, http.StatusForbidden, fmt.Sprintf("origin %s may not call this API from a browser: it is not in the allowed origins (--cors-origins)", strconv.Quote(origin)), nil)
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", corsMethods)
				h.Set("Access-Control-Allow-Headers", corsHeaders)
				h.Set("Access-Control-Max-Age", corsMaxAge)
				w.WriteHeader(http.StatusNoContent)
				return
			}
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		}
		if changesState(r.Method) && hasBody(r) {
			types, gz := []string{"application/json"}, false
			if g.Bodies != nil {
				types, gz = g.Bodies(r)
			}
			if _, berr := CheckMediaType(r.Header.Get("Content-Type"), types); berr != nil {
				berr.Write(w)
				return
			}
			if _, berr := contentEncoding(r.Header, gz); berr != nil {
				berr.Write(w)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// checkURL refuses a path or a query that is not valid UTF-8 once decoded,
// or a query that is not key=value pairs, naming which.
func checkURL(u *url.URL) string {
	if !utf8.ValidString(u.Path) {
		return "path: is not valid UTF-8 once percent-decoded"
	}
	if u.RawQuery == "" {
		return ""
	}
	values, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "query string: must be URL-encoded key=value pairs joined by '&'"
	}
	for k, vs := range values {
		if !utf8.ValidString(k) {
			return "query string: a parameter name is not valid UTF-8 once percent-decoded"
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return fmt.Sprintf("%s: is not valid UTF-8 once percent-decoded", k)
			}
		}
	}
	return ""
}

func changesState(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// hasBody reports whether a request comes with a body: a Content-Length
// above zero, or a body of unknown length (chunked).
func hasBody(r *http.Request) bool {
	return r.ContentLength > 0 || r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody
}

// sameOrigin reports whether a request's Origin is the host it was sent to:
// a page of the API's own origin (the dashboard) is not cross-origin.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// parseOrigins parses a comma-separated list of origins: each
// scheme://host[:port] with scheme http or https, nothing more.
func parseOrigins(v string) ([]string, error) {
	var out []string
	var bad []string
	for o := range strings.SplitSeq(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			bad = append(bad, strconv.Quote(o))
			continue
		}
		out = append(out, u.Scheme+"://"+strings.ToLower(u.Host))
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("%s: an origin is scheme://host[:port] with scheme http or https, such as https://app.example.com", strings.Join(bad, ", "))
	}
	return out, nil
}

// LoopbackHostOnly wraps h, the handler of a listener on loopback that
// runs without authentication, so that it answers only requests addressed
// to a loopback host (127.0.0.1, [::1], localhost): a page of another site
// whose name resolves to 127.0.0.1 (DNS rebinding) sends its own name as
// Host, and is refused with 403 rather than served everything an open
// loopback API serves. Browsers let a page set neither Host nor Origin.
func LoopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsLoopback(r.Host) {
			WriteError(w, http.StatusForbidden, fmt.Sprintf("host %s: this API runs without authentication on loopback and answers only requests to 127.0.0.1, [::1] or localhost", strconv.Quote(r.Host)), nil)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// IsLoopback reports whether addr (host or host:port: a listen address,
// a Host header) names a loopback address or localhost. An empty host
// (every interface) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
