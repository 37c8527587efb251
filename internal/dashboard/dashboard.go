// Package dashboard serves skyjoin's live dashboard: the live feed, events
// per minute, temperature by country and a world map of recent events
// coloured by weather condition.
//
// It is plain HTML, CSS and JavaScript with no build step, embedded in the
// binary: no external tiles, fonts or CDNs, so it works offline. The page
// reads only the public API (GET /v1/events, GET /v1/stats and the
// Server-Sent Events of GET /v1/stream, polling /v1/events when the stream
// is not available). The land outline of the map, web/assets/world.json, is
// Natural Earth's 1:110m land (public domain) made by genworld.go.
//
// Routes:
//
//	GET /            the dashboard
//	GET /assets/...  its scripts, styles and map data
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/skyjoin/skyjoin/internal/platform"
)

//go:embed web
var webFS embed.FS

// contentSecurityPolicy allows nothing but this origin.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard at / and its assets under /assets/.
func Handler() http.Handler {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Embedded files have no modification time: revalidate each time.
		h.Set("Cache-Control", "no-cache")
		switch {
		case r.URL.Path == "/" || r.URL.Path == "/index.html":
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/"
			files.ServeHTTP(w, r2)
		case strings.HasPrefix(r.URL.Path, "/assets/") && !strings.HasSuffix(r.URL.Path, "/"):
			if _, err := fs.Stat(sub, strings.TrimPrefix(r.URL.Path, "/")); err != nil {
				platform.WriteError(w, http.StatusNotFound, "no asset "+r.URL.Path, nil)
				return
			}
			files.ServeHTTP(w, r)
		default:
			platform.WriteError(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path, nil)
		}
	})
}

// Register adds the dashboard's routes to mux: GET / (exactly) and
// GET /assets/. Other paths stay free for the API.
func Register(mux platform.Router) {
	h := Handler()
	mux.Handle("GET /{$}", h)
	mux.Handle("GET /assets/", h)
}
