// Package browser loads the dashboard of a real `skyjoin up --demo`, run as a
// separate process, in headless Chromium (Debian's /usr/bin/chromium,
// installed by scripts/install-chromium) and checks what a person would see.
//
// Run with -update (or SKYJOIN_UPDATE_SCREENSHOT=1) to write
// docs/dashboard.png, the screenshot in the README:
//
//	go test ./test/browser -run Dashboard -update
//
// Without Chromium the test is skipped, unless CI=true, where it fails.
package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/skyjoin/skyjoin/test/testbin"
)

const chromium = "/usr/bin/chromium"

var update = flag.Bool("update", false, "write docs/dashboard.png")

// Bounds of the waits (not timing assertions: the test only fails when
// nothing shows up at all).
const (
	startWait   = 90 * time.Second // build and start skyjoin
	recordsWait = 60 * time.Second // first records in the live feed
)

func TestDashboard(t *testing.T) {
	needChromium(t)
	updating := *update || os.Getenv("SKYJOIN_UPDATE_SCREENSHOT") == "1"

	base := startSkyjoin(t, nil)

	ctx := newBrowser(t)
	var mu sync.Mutex
	var exceptions []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			exceptions = append(exceptions, fmt.Sprintf("%s:%d:%d: %s", d.URL, d.LineNumber+1, d.ColumnNumber+1, msg))
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	navCtx, navCancel := context.WithTimeout(ctx, 30*time.Second)
	defer navCancel()
	if err := chromedp.Do(navCtx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("load the dashboard: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil || !strings.Contains(title, "skyjoin") {
		t.Fatalf("title %q (%v)", title, err)
	}

	// Records appear in the live feed, and as points on the map.
	feedRows := func() int {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#feed li").length`))
		if err != nil {
			t.Fatalf("read the feed: %v", err)
		}
		return n
	}
	deadline := time.Now().Add(recordsWait)
	for feedRows() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no record in the live feed within %s", recordsWait)
		}
		time.Sleep(250 * time.Millisecond)
	}
	type view struct {
		Status    string `json:"status"`
		Mode      string `json:"mode"`
		Points    string `json:"points"`
		Countries int    `json:"countries"`
		Bars      int    `json:"bars"`
		FirstRow  string `json:"first_row"`
	}
	read := func() view {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[view](`({
			status: document.getElementById("status").textContent,
			mode: document.getElementById("status").dataset.mode,
			points: document.getElementById("map").dataset.points,
			countries: document.querySelectorAll("#temps .name").length,
			bars: document.querySelectorAll("#rate div").length,
			first_row: (document.querySelector("#feed li") || {}).textContent || "",
		})`))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return v
	}
	// The map draws a frame after the feed, and the live stream may connect
	// after the first page of records is shown; wait for both, boundedly.
	v := read()
	settled := func(v view) bool {
		return v.Points != "0" && v.Points != "" && v.Countries > 0 && (v.Mode == "live" || v.Mode == "polling")
	}
	for deadline := time.Now().Add(20 * time.Second); !settled(v) && time.Now().Before(deadline); v = read() {
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("dashboard: status %q (%s), %d feed rows, %s map points, %d countries; first row %q",
		v.Status, v.Mode, feedRows(), v.Points, v.Countries, v.FirstRow)
	if v.Points == "0" || v.Points == "" {
		t.Errorf("the map shows no point")
	}
	if v.Countries == 0 {
		t.Errorf("no country in temperature by country")
	}
	if v.Bars != 30 {
		t.Errorf("%d bars in events per minute, want 30", v.Bars)
	}
	if v.Mode != "live" && v.Mode != "polling" {
		t.Errorf("status %q (%s): want live (stream) or polling", v.Status, v.Mode)
	}

	// A record with properties shows their summary in its feed row, as
	// text: a value that looks like HTML is not made an element.
	const propsID = "browser-props-1"
	ev := fmt.Sprintf(`{"event_id":%q,"event_type":"order.completed","occurred_at":%q,"user":{"id":"u-props"},`+
		`"location":{"latitude":48.8566,"longitude":2.3522,"city":"Paris","country":"France"},`+
		`"properties":{"amount":42.5,"currency":"EUR","items":["umbrella","raincoat"],"note":"<img id=injected src=x>"}}`,
		propsID, time.Now().UTC().Format(time.RFC3339Nano))
	resp, err := http.Post(base+"/v1/events", "application/json", strings.NewReader(ev))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post an event with properties: %d", resp.StatusCode)
	}
	type propsRow struct {
		Text     string `json:"text"`
		Injected bool   `json:"injected"`
	}
	var row propsRow
	for deadline := time.Now().Add(recordsWait); ; time.Sleep(100 * time.Millisecond) {
		row, err = chromedp.Run(ctx, chromedp.Evaluate[propsRow](`({
			text: (document.querySelector('#feed li[data-event-id="`+propsID+`"] .props') || {}).textContent || "",
			injected: !!document.getElementById("injected"),
		})`))
		if err != nil {
			t.Fatalf("read the feed: %v", err)
		}
		if row.Text != "" || time.Now().After(deadline) {
			break
		}
	}
	if want := "amount: 42.5 · currency: EUR · items: [umbrella, raincoat] · note: <img id=injected src=x>"; row.Text != want {
		t.Errorf("properties in the feed: %q, want %q", row.Text, want)
	}
	if row.Injected {
		t.Errorf("a property's value was rendered as HTML")
	}

	if updating {
		// Let a few more polls of the demo arrive so the picture is full.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && feedRows() < 30; {
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		out := filepath.Join("..", "..", "docs", "dashboard.png")
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", out, len(png))
	}

	mu.Lock()
	defer mu.Unlock()
	if len(exceptions) > 0 {
		t.Errorf("JavaScript exceptions on the page:\n%s", strings.Join(exceptions, "\n"))
	}
}

// startSkyjoin builds skyjoin and runs `skyjoin up --demo` on a free port
// with a fresh data dir, and extra flags; it returns the API's base URL.
// prepare, if not nil, runs the binary on the data dir first (e.g. to
// create a key).
func startSkyjoin(t *testing.T, prepare func(bin, dataDir string), extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	bin, err := testbin.Build(dir, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.Bytes())
	}
	data := filepath.Join(dir, "data")
	if prepare != nil {
		prepare(bin, data)
	}
	_, base := testbin.Options{StartWait: startWait, Term: true}.StartAPI(t, bin, append([]string{"up", "--demo", "--addr", "127.0.0.1:0",
		"--data-dir", data, "--stats-every", "0", "--log-level", "warn"}, extra...)...)
	return base
}

// needChromium skips the test without Chromium (fails it under CI=true).
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing: scripts/install-chromium (run by scripts/test) should have installed it: %v", chromium, err)
		}
		t.Skipf("%s is not installed (run scripts/install-chromium as root); skipping the browser test", chromium)
	}
}

// newBrowser starts headless Chromium for the test; it stops at the end.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 960),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	// The first Run starts the browser (no timeout on it: see chromedp.Run).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1440, 960)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// TestDashboardSignIn: with auth on, the dashboard asks for a key, signs in
// (POST /v1/session: an HttpOnly cookie the page cannot read), then shows
// live records; the key is in no URL and no storage.
func TestDashboardSignIn(t *testing.T) {
	needChromium(t)
	var token string
	base := startSkyjoin(t, func(bin, data string) {
		out, err := exec.Command(bin, "keys", "create", "--scope", "read,stream", "--data-dir", data, "--json").Output()
		if err != nil {
			t.Fatalf("skyjoin keys create: %v", err)
		}
		var k struct{ Token string }
		if err := json.Unmarshal(out, &k); err != nil || k.Token == "" {
			t.Fatalf("skyjoin keys create: %v %s", err, out)
		}
		token = k.Token
	}, "--auth=on")
	ctx := newBrowser(t)
	navCtx, navCancel := context.WithTimeout(ctx, 30*time.Second)
	defer navCancel()
	if err := chromedp.Do(navCtx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("load the dashboard: %v", err)
	}
	eval := func(js string) string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	wait := func(what, js string) {
		for deadline := time.Now().Add(recordsWait); eval(js) != "yes"; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s; status %q", what, recordsWait, eval(`document.getElementById("status").textContent`))
			}
		}
	}
	wait("the sign-in form shows", `document.getElementById("signin").hidden ? "no" : "yes"`)
	eval(`document.getElementById("signin-key").value = "not-a-key"; document.getElementById("signin").requestSubmit(); ""`)
	wait("a bad key is refused", `document.getElementById("signin-error").textContent !== "" ? "yes" : "no"`)
	eval(`document.getElementById("signin-key").value = ` + strconv.Quote(token) + `; document.getElementById("signin").requestSubmit(); ""`)
	wait("the form goes away", `document.getElementById("signin").hidden ? "yes" : "no"`)
	wait("records in the live feed", `document.querySelectorAll("#feed li").length > 0 ? "yes" : "no"`)
	got := eval(`[document.cookie, location.href, JSON.stringify(localStorage), JSON.stringify(sessionStorage), document.getElementById("signin-key").value].join(" ")`)
	_, secret, _ := strings.Cut(strings.TrimPrefix(token, "sk_"), "_")
	if strings.Contains(got, secret[len(secret)-20:]) || strings.Contains(got, "skyjoin_session") {
		t.Errorf("the key or the session is readable by the page: %s", got)
	}
	t.Logf("signed in; status %q", eval(`document.getElementById("status").textContent`))
}
