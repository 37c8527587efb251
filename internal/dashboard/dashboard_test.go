package dashboard

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

func TestRoutes(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"events":[]}`)) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		path     string
		code     int
		ctype    string
		contains string
	}{
		{"/", 200, "text/html", `<canvas id="map"`},
		{"/assets/props.js", 200, "text/javascript", "skyjoinPropSummary"},
		{"/assets/app.js", 200, "text/javascript", "new EventSource(\"/v1/stream\")"},
		{"/assets/app.css", 200, "text/css", "grid-template-areas"},
		{"/assets/world.json", 200, "application/json", `"rings"`},
		{"/assets/nope.js", 404, "application/json", "no asset"},
		{"/assets/", 404, "application/json", ""},
		{"/v1/events", 200, "", `"events"`}, // the API is not shadowed
		{"/elsewhere", 404, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.code, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %q", ct, tt.ctype)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}
		})
	}
}

// TestSelfContained checks that the page loads nothing from elsewhere: no
// absolute URLs in the HTML, CSS or JavaScript, and a CSP that forbids it.
func TestSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, name := range []string{"web/index.html", "web/assets/app.js", "web/assets/app.css"} {
		b, err := webFS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if m := external.FindString(string(b)); m != "" {
			t.Errorf("%s refers to %s: the dashboard must work offline", name, m)
		}
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestWorldOutline(t *testing.T) {
	b, err := webFS.ReadFile("web/assets/world.json")
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Rings [][]float64 `json:"rings"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	points := 0
	for i, r := range w.Rings {
		if len(r)%2 != 0 || len(r) < 8 {
			t.Fatalf("ring %d has %d numbers", i, len(r))
		}
		for j := 0; j < len(r); j += 2 {
			// Rings across the antimeridian come twice, shifted by 360.
			if r[j] < -540 || r[j] > 540 || r[j+1] < -90 || r[j+1] > 90 {
				t.Fatalf("ring %d: point %v,%v out of range", i, r[j], r[j+1])
			}
		}
		points += len(r) / 2
	}
	if len(w.Rings) < 100 || points < 3000 {
		t.Fatalf("%d rings, %d points: too coarse to be a world map", len(w.Rings), points)
	}
}

// TestFeedProperties: the live feed shows a compact "key: value" summary of
// a record's top-level properties, as text. The page loads props.js before
// app.js, app.js puts the summary in the feed with textContent (el), and no
// script writes HTML; the summary itself is checked by running props.js in
// Node when it is installed (the browser test, test/browser, checks it on
// the page).
func TestFeedProperties(t *testing.T) {
	html, _ := webFS.ReadFile("web/index.html")
	if i, j := strings.Index(string(html), `src="/assets/props.js"`), strings.Index(string(html), `src="/assets/app.js"`); i < 0 || i > j {
		t.Errorf("index.html must load props.js before app.js")
	}
	app, _ := webFS.ReadFile("web/assets/app.js")
	if !strings.Contains(string(app), `el("span", "props", props)`) || !strings.Contains(string(app), "propSummary(r.properties)") {
		t.Errorf("app.js does not put the properties' summary in the feed as text")
	}
	for _, name := range []string{"web/assets/app.js", "web/assets/props.js"} {
		b, _ := webFS.ReadFile(name)
		if regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write`).Match(b) {
			t.Errorf("%s writes HTML: user data must be set as text", name)
		}
	}

	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the summary is checked by test/browser only")
	}
	props, _ := webFS.ReadFile("web/assets/props.js")
	cases := []struct{ props, want string }{
		{`{"amount":12.5,"currency":"EUR","paid":true,"coupon":null}`, "amount: 12.5 · currency: EUR · paid: true · coupon: null"},
		{`{"items":["a","b"],"shipping":{"days":1},"skus":[1,2,3,4]}`, "items: [a, b] · shipping: {…} · skus: [4 items]"},
		{`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}`, "a: 1 · b: 2 · c: 3 · d: 4 · +2 more"},
		{`{"note":"<img src=x onerror=alert(1)>"}`, "note: <img src=x onerror=alert(1)>"},
		{`{"long":"` + strings.Repeat("x", 40) + `"}`, "long: " + strings.Repeat("x", 31) + "…"},
		{`{}`, ""},
		{`null`, ""},
		{`[1]`, ""},
	}
	var script strings.Builder
	script.WriteString("const vm = require('vm'); const ctx = {}; vm.createContext(ctx); vm.runInContext(process.argv[1], ctx);\nconst out = [];\n")
	for _, c := range cases {
		script.WriteString("out.push(ctx.skyjoinPropSummary(" + c.props + "));\n")
	}
	script.WriteString("process.stdout.write(JSON.stringify(out));\n")
	out, err := exec.Command(node, "-e", script.String(), string(props)).Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(cases) {
		t.Fatalf("node printed %s (%v)", out, err)
	}
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("summary of %s: %q, want %q", c.props, got[i], c.want)
		}
	}
}
