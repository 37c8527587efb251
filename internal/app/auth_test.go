package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/auth/authtest"
)

// keysCmd runs `skyjoin keys ARGS --json` and decodes its answer.
func keysCmd(t *testing.T, args ...string) keyOut {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := Main(context.Background(), append(append([]string{"keys"}, args...), "--json"), &out, &errOut); err != nil {
		t.Fatalf("skyjoin keys %v: %v\n%s", args, err, errOut.String())
	}
	var k keyOut
	if err := json.Unmarshal(out.Bytes(), &k); err != nil {
		t.Fatalf("skyjoin keys %v: %v\n%s", args, err, out.String())
	}
	return k
}

// cred is one way of calling.
type cred struct {
	name   string
	bearer string
	cookie *http.Cookie
}

// call sends one request and returns the status and the body (the first
// bytes of a stream).
func call(t *testing.T, method, url string, c cred) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, body)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s (%s): %v", method, url, c.name, err)
	}
	defer resp.Body.Close()
	b := make([]byte, 64<<10)
	n, _ := io.ReadAtLeast(resp.Body, b, 1)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		n = 0 // a stream: its status is what counts
	}
	return resp.StatusCode, resp.Header, string(b[:n])
}

// TestAuthMatrix walks every route of the route table against every kind
// of credential, with auth on: none, malformed, expired, revoked, a key
// of another scope, a key of the route's scope, an admin key, an ID token
// (ingest and read), an expired one, and a browser session (read and
// stream, GET only). It checks 401 (with WWW-Authenticate: Bearer), 403
// (naming the scope) or neither; then that no secret is in the logs, the
// banner or any answer.
func TestAuthMatrix(t *testing.T) {
	dir := t.TempDir()
	admin := keysCmd(t, "create", "--scope", "admin", "--name", "first admin", "--data-dir", dir)
	byScope := map[string]string{api.ScopeAdmin: admin.Token}
	for _, sc := range []string{api.ScopeIngest, api.ScopeRead, api.ScopeStream, api.ScopeWebhooks, api.ScopePush} {
		byScope[sc] = keysCmd(t, "create", "--scope", sc, "--data-dir", dir).Token
	}
	dashboard := keysCmd(t, "create", "--scope", "read,stream", "--name", "wall screen", "--data-dir", dir)
	expiring := keysCmd(t, "create", "--scope", "admin", "--expires-in", "2s", "--data-dir", dir)
	revoked := keysCmd(t, "create", "--scope", "admin", "--data-dir", dir)
	if k := keysCmd(t, "revoke", revoked.ID, "--data-dir", dir); k.RevokedAt == nil {
		t.Fatalf("revoke: %+v", k)
	}
	tokens := []string{admin.Token, dashboard.Token, expiring.Token, revoked.Token}
	for _, tok := range byScope {
		tokens = append(tokens, tok)
	}

	const aud, email = "https://skyjoin.test", "pusher@project.iam.gserviceaccount.com"
	issuer := authtest.NewIssuer(t)
	var logs syncBuf
	var banner bytes.Buffer
	base, stop := startInProcessOut(t, upHooks{log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, &banner,
		"--data-dir", dir, "--auth=on", "--auth-idtoken-audience", aud, "--auth-idtoken-jwks-url", issuer.URL,
		"--auth-idtoken-emails", email, "--auth-idtoken-scopes", "ingest,read")
	defer stop()
	adminBase := adminURL(t, base)
	if !strings.Contains(banner.String(), "auth       on: API keys (") || !strings.Contains(banner.String(), "Google ID tokens for "+aud) {
		t.Errorf("banner:\n%s", banner.String())
	}

	// A browser session of the read+stream key.
	status, hdr, body := call(t, http.MethodPost, base+"/v1/session", cred{name: "session", bearer: dashboard.Token})
	var session *http.Cookie
	for _, c := range (&http.Response{Header: hdr}).Cookies() {
		if c.Name == auth.SessionCookie {
			session = c
		}
	}
	if status != http.StatusOK || session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || strings.Contains(session.Value, dashboard.Token) {
		t.Fatalf("POST /v1/session: %d %v %s", status, session, body)
	}
	if status, _, _ := call(t, http.MethodPost, base+"/v1/session", cred{name: "no key"}); status != http.StatusUnauthorized {
		t.Errorf("POST /v1/session without a key: %d", status)
	}

	now := time.Now()
	idToken := issuer.Sign(t, authtest.Claims(aud, email, now))
	idExpired := issuer.Sign(t, authtest.Claims(aud, email, now.Add(-3*time.Hour)))
	time.Sleep(time.Until(expiring.CreatedAt.Add(3 * time.Second))) // the expiring key has expired

	const (
		ok        = 0
		denied401 = 401
		denied403 = 403
	)
	var answers strings.Builder
	requests := 0
	for _, r := range api.Routes {
		path := strings.NewReplacer("{$}", "", "...}", "}", "/assets/", "/assets/app.js").Replace(r.Path())
		path = strings.NewReplacer("{event_id}", "x", "{id}", "x").Replace(path)
		if r.Pattern == "GET /debug/pprof/profile" || r.Pattern == "GET /debug/pprof/trace" {
			path += "?seconds=1"
		}
		u := base + path
		if r.OnAdminListener() {
			u = adminBase + path
		}
		public := r.Scope == api.ScopePublic
		wrong := byScope[api.ScopeIngest]
		if r.Scope == api.ScopeIngest {
			wrong = byScope[api.ScopeRead]
		}
		right := byScope[r.Scope]
		get := r.Method() == http.MethodGet
		idOK := slices.Contains([]string{api.ScopeIngest, api.ScopeRead}, r.Scope)
		sessionOK := get && slices.Contains([]string{api.ScopeRead, api.ScopeStream}, r.Scope)

		expect := func(denied int) int {
			if public {
				return ok
			}
			return denied
		}
		cases := []struct {
			c    cred
			want int
		}{
			{cred{name: "none"}, expect(denied401)},
			{cred{name: "malformed", bearer: "sk_key_aaaaaaaaaaaaaaaa_" + strings.Repeat("a", 52)}, expect(denied401)},
			{cred{name: "expired key", bearer: expiring.Token}, expect(denied401)},
			{cred{name: "revoked key", bearer: revoked.Token}, expect(denied401)},
			{cred{name: "another scope", bearer: wrong}, expect(denied403)},
			{cred{name: "the route's scope", bearer: right}, ok},
			{cred{name: "id token", bearer: idToken}, map[bool]int{true: ok, false: expect(denied403)}[idOK]},
			{cred{name: "expired id token", bearer: idExpired}, expect(denied401)},
			{cred{name: "session", cookie: session}, map[bool]int{true: ok, false: expect(map[bool]int{true: denied403, false: denied401}[get])}[sessionOK]},
		}
		if r.Scope != api.ScopeAdmin {
			cases = append(cases, struct {
				c    cred
				want int
			}{cred{name: "admin key", bearer: admin.Token}, ok})
		}
		for _, tc := range cases {
			if public && tc.c.name == "the route's scope" {
				continue
			}
			status, hdr, body := call(t, r.Method(), u, tc.c)
			requests++
			answers.WriteString(body)
			switch {
			case tc.want == ok && (status == 401 || status == 403):
				t.Errorf("%s with %s: %d %s, want neither 401 nor 403", r.Pattern, tc.c.name, status, body)
			case tc.want != ok && status != tc.want:
				t.Errorf("%s with %s: %d %s, want %d", r.Pattern, tc.c.name, status, body, tc.want)
			case status == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer "):
				t.Errorf("%s with %s: 401 without WWW-Authenticate: Bearer", r.Pattern, tc.c.name)
			case status == 403 && !strings.Contains(body, `"required_scope":"`+r.Scope+`"`):
				t.Errorf("%s with %s: 403 does not name the scope %s: %s", r.Pattern, tc.c.name, r.Scope, body)
			}
		}
	}

	t.Logf("%d routes, %d requests", len(api.Routes), requests)

	// The key list and the command line, read with the admin key.
	for _, u := range []string{base + "/v1/keys", adminBase + "/debug/pprof/cmdline"} {
		status, _, body := call(t, http.MethodGet, u, cred{name: "admin", bearer: admin.Token})
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", u, status, body)
		}
		answers.WriteString(body)
		if strings.Contains(body, `"hash"`) {
			t.Errorf("GET %s shows a hash: %s", u, body)
		}
	}
	// The audit trail names the caller that authentication found inside
	// the mux: the admin key's id for its GET /v1/keys, not "anonymous".
	var named bool
	for line := range strings.Lines(logs.String()) {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["audit"] == true && e["route"] == "GET /v1/keys" && e["status"] == float64(200) {
			named = true
			if e["principal"] != admin.ID || e["principal_kind"] != auth.KindKey {
				t.Errorf("audit entry of the admin key's GET /v1/keys: principal %v (%v), want %s (key)", e["principal"], e["principal_kind"], admin.ID)
			}
		}
	}
	if !named {
		t.Errorf("no audit entry for the admin key's GET /v1/keys")
	}
	// No secret anywhere: the logs, the banner, the answers.
	everything := logs.String() + banner.String() + answers.String()
	for _, tok := range tokens {
		_, secret, _ := auth.ParseToken(tok)
		if strings.Contains(everything, secret) {
			t.Errorf("a key's secret is in the logs, the banner or an answer")
		}
	}
	if strings.Contains(everything, idToken) || strings.Contains(everything, session.Value) {
		t.Errorf("an ID token or a session cookie is in the logs or an answer")
	}
}

// TestAuthRevocationIsLive: a key revoked through the admin route is
// refused by the same process within 5 s, and its session stops with it.
func TestAuthRevocationIsLive(t *testing.T) {
	dir := t.TempDir()
	admin := keysCmd(t, "create", "--scope", "admin", "--data-dir", dir)
	base, stop := startInProcess(t, upHooks{}, "--data-dir", dir, "--auth=on")
	defer stop()
	// The running process's key route: `skyjoin keys --url`.
	t.Setenv("SKYJOIN_KEY", admin.Token)
	reader := keysCmd(t, "create", "--url", base, "--scope", "read")
	status, hdr, _ := call(t, http.MethodPost, base+"/v1/session", cred{bearer: reader.Token})
	cookies := (&http.Response{Header: hdr}).Cookies()
	if status != 200 || len(cookies) != 1 {
		t.Fatalf("session: %d %v", status, cookies)
	}
	for _, c := range []cred{{name: "key", bearer: reader.Token}, {name: "session", cookie: cookies[0]}} {
		if status, _, body := call(t, http.MethodGet, base+"/v1/events?limit=1", c); status != 200 {
			t.Fatalf("read with the %s: %d %s", c.name, status, body)
		}
	}
	keysCmd(t, "revoke", "--url", base, reader.ID)
	revoked := time.Now()
	for _, c := range []cred{{name: "key", bearer: reader.Token}, {name: "session", cookie: cookies[0]}} {
		for {
			status, _, _ := call(t, http.MethodGet, base+"/v1/events?limit=1", c)
			if status == http.StatusUnauthorized {
				break
			}
			if time.Since(revoked) > 5*time.Second {
				t.Fatalf("the revoked key's %s still reads 5 s after the revocation: %d", c.name, status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The admin key lists it as revoked; the list has no secret.
	var out bytes.Buffer
	if err := Main(context.Background(), []string{"keys", "list", "--url", base}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), reader.ID+" ") || !strings.Contains(out.String(), "revoked") || strings.Contains(out.String(), "sk_") {
		t.Errorf("keys list:\n%s", out.String())
	}
}

// TestAuthRefusedBeyondLoopback: `up` on a non-loopback address refuses to
// start with no key and no ID tokens, and with --auth=off; it starts with
// --insecure-no-auth (and says so), or once a key exists (auth on).
func TestAuthRefusedBeyondLoopback(t *testing.T) {
	t.Setenv("K_SERVICE", "")
	// Beyond loopback the PII policy's key is required too.
	t.Setenv("SKYJOIN_PII_KEY", "a-pii-key-for-this-test-only-0123456789")
	dir := t.TempDir()
	common := []string{"up", "--demo", "--collect=false", "--data-dir", dir, "--log-level", "error", "--admin-addr", "127.0.0.1:0"}
	for _, extra := range [][]string{{"--addr", "0.0.0.0:0"}, {"--addr", "0.0.0.0:0", "--auth=off"}, {"--addr", "127.0.0.1:0", "--admin-addr", "0.0.0.0:0"}} {
		err := Main(context.Background(), append(slices.Clone(common), extra...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "insecure-no-auth") {
			t.Errorf("up %v: %v, want a refusal", extra, err)
		}
	}

	var banner bytes.Buffer
	base, stop := startInProcessOut(t, upHooks{}, &banner, "--data-dir", dir, "--addr", "0.0.0.0:0", "--insecure-no-auth")
	if !strings.Contains(banner.String(), "OFF (--insecure-no-auth)") {
		t.Errorf("banner without the warning:\n%s", banner.String())
	}
	loop := strings.Replace(base, "0.0.0.0", "127.0.0.1", 1)
	if status, _, _ := call(t, http.MethodGet, loop+"/v1/events?limit=1", cred{}); status != 200 {
		t.Errorf("insecure: %d", status)
	}
	stop()

	keysCmd(t, "create", "--scope", "ingest", "--data-dir", dir)
	base, stop = startInProcessOut(t, upHooks{}, io.Discard, "--data-dir", dir, "--addr", "0.0.0.0:0")
	defer stop()
	loop = strings.Replace(base, "0.0.0.0", "127.0.0.1", 1)
	if status, _, _ := call(t, http.MethodGet, loop+"/v1/events?limit=1", cred{}); status != 401 {
		t.Errorf("beyond loopback with a key in the registry: %d, want 401", status)
	}
	if status, _, _ := call(t, http.MethodGet, loop+"/healthz", cred{}); status != 200 {
		t.Errorf("healthz: %d", status)
	}
}

func TestRedactArgs(t *testing.T) {
	got := redactArgs([]string{"skyjoin", "up", "--weather-api-key=s3cret", "-weather-api-key", "s3cret", "--addr", "x", "--data-dir=d"},
		[]string{"weather-api-key"})
	if strings.Contains(strings.Join(got, " "), "s3cret") || got[2] != "--weather-api-key=REDACTED" || got[4] != "REDACTED" || got[6] != "x" {
		t.Errorf("%q", got)
	}
}

func TestMain(m *testing.M) {
	// A Cloud Run environment would turn auth on everywhere.
	os.Unsetenv("K_SERVICE")
	os.Exit(m.Run())
}
