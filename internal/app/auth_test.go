package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/auth/authtest"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
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

// newSession makes a browser session from the key tok (POST /v1/session)
// and returns its cookie as a credential.
func newSession(t *testing.T, base, tok string) cred {
	t.Helper()
	status, hdr, body := call(t, http.MethodPost, base+"/v1/session", cred{bearer: tok})
	cookies := (&http.Response{Header: hdr}).Cookies()
	if status != 200 || len(cookies) != 1 {
		t.Fatalf("session: %d %v %s", status, cookies, body)
	}
	return cred{name: "session", cookie: cookies[0]}
}

// cred is one way of calling.
type cred struct {
	name   string
	bearer string
	cookie *http.Cookie
}

// call sends one request (a POST with the body {}) and returns the status
// and the body (the first bytes of a stream).
func call(t *testing.T, method, url string, c cred) (int, http.Header, string) {
	t.Helper()
	body := ""
	if method == http.MethodPost {
		body = "{}"
	}
	return callBody(t, method, url, body, c)
}

// callBody is call with a JSON body ("": none).
func callBody(t *testing.T, method, url, reqBody string, c cred) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var body io.Reader
	if reqBody != "" {
		body = strings.NewReader(reqBody)
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
// stream, GET only). Each route is sent a valid request (matrixRequest: a
// body it takes, the ids of things made here), so that a refused
// credential gets 401 (with WWW-Authenticate: Bearer) or 403 (naming the
// scope) and an authorised one 2xx, unless the route says why not. Then
// no secret is in the logs, the banner or any answer.
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
	// Keys for the key routes to rotate and revoke, and the key that makes
	// what the routes read: a caller of its own, so that its polling takes
	// nothing from the rate limits of the keys the walk uses.
	toRotate := keysCmd(t, "create", "--scope", "read", "--name", "to rotate", "--data-dir", dir)
	toRevoke := keysCmd(t, "create", "--scope", "read", "--name", "to revoke", "--data-dir", dir)
	setup := keysCmd(t, "create", "--scope", "admin", "--name", "matrix setup", "--data-dir", dir)
	tokens := []string{admin.Token, dashboard.Token, expiring.Token, revoked.Token, toRotate.Token, toRevoke.Token, setup.Token}
	for _, tok := range byScope {
		tokens = append(tokens, tok)
	}

	// Webhooks deliver to this loopback target (--webhook-allow-private:
	// a key of the webhooks scope may register it).
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer target.Close()

	const aud, email = "https://skyjoin.test", "pusher@project.iam.gserviceaccount.com"
	issuer := authtest.NewIssuer(t)
	var logs syncBuf
	var banner bytes.Buffer
	base, stop := startInProcessOut(t, upHooks{log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, &banner,
		"--data-dir", dir, "--auth=on", "--auth-idtoken-audience", aud, "--auth-idtoken-jwks-url", issuer.URL,
		"--auth-idtoken-emails", email, "--auth-idtoken-scopes", "ingest,read", "--webhook-allow-private")
	defer stop()
	adminBase := adminURL(t, base)
	if !strings.Contains(banner.String(), "auth       on: API keys (") || !strings.Contains(banner.String(), "Google ID tokens for "+aud) {
		t.Errorf("banner:\n%s", banner.String())
	}
	setupCred := cred{name: "setup", bearer: setup.Token}

	// What the routes read: a stored record, a webhook, a dead letter.
	const eventID, userID = "matrix-1", "u-matrix"
	if status, _, body := callBody(t, http.MethodPost, base+"/v1/events", matrixEvent(eventID, userID), setupCred); status != http.StatusAccepted {
		t.Fatalf("POST /v1/events: %d %s", status, body)
	}
	waitFor(t, func() bool {
		status, _, _ := call(t, http.MethodGet, base+"/v1/events/"+eventID, setupCred)
		return status == http.StatusOK
	})
	newWebhook := func() string {
		t.Helper()
		status, _, body := callBody(t, http.MethodPost, base+"/v1/webhooks", `{"url":"`+target.URL+`/hook","secret":"0123456789abcdef0123","max_wait_ms":0}`, setupCred)
		var wh struct{ ID string }
		if status != http.StatusCreated || json.Unmarshal([]byte(body), &wh) != nil || wh.ID == "" {
			t.Fatalf("POST /v1/webhooks: %d %s", status, body)
		}
		return wh.ID
	}
	hookID := newWebhook()
	// A Segment message without its event is a dead letter of ingest.
	if status, _, body := callBody(t, http.MethodPost, base+"/v1/batch", `{"batch":[{"type":"track","userId":"u-dead"}]}`, setupCred); status != http.StatusOK ||
		!strings.Contains(body, `"dead_lettered":1`) {
		t.Fatalf("POST /v1/batch of a bad message: %d %s", status, body)
	}
	var deadID string
	waitFor(t, func() bool {
		_, _, body := call(t, http.MethodGet, base+"/v1/deadletters", setupCred)
		var dl struct {
			DeadLetters []struct{ ID string } `json:"deadletters"`
		}
		if json.Unmarshal([]byte(body), &dl) == nil && len(dl.DeadLetters) > 0 {
			deadID = dl.DeadLetters[0].ID
		}
		return deadID != ""
	})

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

	// matrixRequest is a valid request of route r (its path and body) and
	// the status an authorised caller gets: 0 for any 2xx. fresh: the
	// request is to be made by an authorised caller, and what it deletes
	// must exist (each gets its own).
	n := 0
	matrixRequest := func(r api.Route, c cred, fresh bool) (path, body string, want int) {
		n++
		path = strings.NewReplacer("{$}", "", "...}", "}", "/assets/", "/assets/app.js").Replace(r.Path())
		switch r.Pattern {
		case "POST /v1/events":
			body = matrixEvent(fmt.Sprintf("matrix-ev-%d", n), userID)
		case "POST /v1/batch":
			body = `{"batch":[` + segmentMessage("track") + `]}`
		case "POST /v1/track", "POST /v1/identify", "POST /v1/page", "POST /v1/screen", "POST /v1/group", "POST /v1/alias":
			body = segmentMessage(strings.TrimPrefix(r.Pattern, "POST /v1/"))
		case "POST /v1/deadletters/replay":
			body = `{"ids":["` + deadID + `"]}`
		case "DELETE /v1/deadletters/{id}":
			path = strings.Replace(path, "{id}", deadID, 1)
		case "POST /v1/push/events":
			body = pushMessage(fmt.Sprintf("matrix-push-%d", n), matrixEvent(fmt.Sprintf("matrix-push-%d", n), userID))
		case "GET /v1/events/{event_id...}":
			path = strings.Replace(path, "{event_id}", eventID, 1)
		case "GET /v1/users/{id}/latest":
			path = strings.Replace(path, "{id}", userID, 1)
		case "DELETE /v1/users/{id}":
			path = strings.Replace(path, "{id}", "u-to-erase", 1) // not the user the reads read
		case "GET /v1/stats":
			path += "?group_by=country&since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		case "POST /v1/session":
			body = "{}"
			if c.name == "id token" {
				// Authorised (read scope), but a session is made with an
				// API key only: the route answers 400 to an ID token.
				want = http.StatusBadRequest
			}
		case "POST /v1/webhooks":
			body = `{"url":"` + target.URL + `/hook","secret":"0123456789abcdef0123","max_wait_ms":0}`
		case "GET /v1/webhooks/{id}", "GET /v1/webhooks/{id}/failures":
			path = strings.Replace(path, "{id}", hookID, 1)
		case "POST /v1/webhooks/{id}/failures/replay":
			path, body = strings.Replace(path, "{id}", hookID, 1), "{}"
		case "DELETE /v1/webhooks/{id}":
			id := "x"
			if fresh {
				id = newWebhook()
			}
			path = strings.Replace(path, "{id}", id, 1)
		case "POST /v1/keys":
			body = `{"name":"made by the matrix","scopes":["read"]}`
		case "POST /v1/keys/{id}/rotate":
			path, body = strings.Replace(path, "{id}", toRotate.ID, 1), `{"grace_seconds":0}`
		case "DELETE /v1/keys/{id}":
			path = strings.Replace(path, "{id}", toRevoke.ID, 1)
		case "GET /debug/pprof/profile", "GET /debug/pprof/trace":
			path += "?seconds=1"
		}
		if strings.Contains(path, "{") {
			t.Fatalf("%s: the matrix has no valid request for it (path %s)", r.Pattern, path)
		}
		return path, body, want
	}

	const (
		ok        = 0
		denied401 = 401
		denied403 = 403
	)
	var answers strings.Builder
	requests := 0
	for _, r := range api.Routes {
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
			path, reqBody, authorised := matrixRequest(r, tc.c, tc.want == ok)
			u := base + path
			if r.OnAdminListener() {
				u = adminBase + path
			}
			status, hdr, body := callBody(t, r.Method(), u, reqBody, tc.c)
			requests++
			answers.WriteString(body)
			switch {
			case tc.want == ok && authorised != 0 && status != authorised:
				t.Errorf("%s with %s: %d %s, want %d", r.Pattern, tc.c.name, status, body, authorised)
			case tc.want == ok && authorised == 0 && (status < 200 || status > 299):
				t.Errorf("%s with %s: %d %s, want 2xx", r.Pattern, tc.c.name, status, body)
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

// matrixEvent is a valid event of user, as JSON.
func matrixEvent(id, user string) string {
	return fmt.Sprintf(`{"event_id":%q,"event_type":"matrix","occurred_at":%q,"user":{"id":%q},`+
		`"location":{"latitude":40.4,"longitude":-3.7,"city":"Madrid","country":"Spain"}}`, id, time.Now().UTC().Format(time.RFC3339Nano), user)
}

// segmentMessage is a valid Segment message of the type.
func segmentMessage(typ string) string {
	return fmt.Sprintf(`{"type":%q,"userId":"u-segment","event":"Signed Up","groupId":"g","previousId":"p","timestamp":%q}`,
		typ, time.Now().UTC().Format(time.RFC3339))
}

// pushMessage is a Pub/Sub push request of one message: an event as the
// ingest API publishes it.
func pushMessage(id, ev string) string {
	b, _ := json.Marshal(map[string]any{
		"message": map[string]any{"data": base64.StdEncoding.EncodeToString([]byte(ev)), "messageId": id,
			"attributes": map[string]string{envelope.AttrContentType: event.ContentTypeNDJSON,
				envelope.AttrIngestedAt: time.Now().UTC().Format(time.RFC3339Nano)},
			"publishTime": time.Now().UTC().Format(time.RFC3339Nano)},
		"subscription": "projects/p/subscriptions/skyjoin-events-push",
	})
	return string(b)
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
	session := newSession(t, base, reader.Token)
	for _, c := range []cred{{name: "key", bearer: reader.Token}, session} {
		if status, _, body := call(t, http.MethodGet, base+"/v1/events?limit=1", c); status != 200 {
			t.Fatalf("read with the %s: %d %s", c.name, status, body)
		}
	}
	keysCmd(t, "revoke", "--url", base, reader.ID)
	revoked := time.Now()
	for _, c := range []cred{{name: "key", bearer: reader.Token}, session} {
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

// TestAuthRotationEndsSessions: a browser session stops with the secret
// that made it. A rotation without grace (through the admin route, as
// `skyjoin keys rotate --url`) ends the old secret's session within 5 s;
// with a grace, the old secret's session works during the grace (checked
// only while well within it) and stops after it (within 5 s more), while
// the new secret's session goes on.
func TestAuthRotationEndsSessions(t *testing.T) {
	dir := t.TempDir()
	admin := keysCmd(t, "create", "--scope", "admin", "--data-dir", dir)
	base, stop := startInProcess(t, upHooks{}, "--data-dir", dir, "--auth=on")
	defer stop()
	t.Setenv("SKYJOIN_KEY", admin.Token)
	reader := keysCmd(t, "create", "--url", base, "--scope", "read")
	session := func(tok string) cred { t.Helper(); return newSession(t, base, tok) }
	read := func(c cred) int {
		status, _, _ := call(t, http.MethodGet, base+"/v1/events?limit=1", c)
		return status
	}
	// until waits for c to be refused: by deadline, or fails.
	until := func(what string, c cred, deadline time.Time) {
		t.Helper()
		for read(c) != http.StatusUnauthorized {
			if time.Now().After(deadline) {
				t.Fatalf("%s: still reads", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	s0 := session(reader.Token)
	if status := read(s0); status != 200 {
		t.Fatalf("a new session: %d", status)
	}
	rotated := keysCmd(t, "rotate", "--url", base, reader.ID)
	until("the old secret's session 5 s after a rotation without grace", s0, time.Now().Add(5*time.Second))
	s1 := session(rotated.Token)
	if status := read(s1); status != 200 {
		t.Fatalf("the new secret's session: %d", status)
	}

	const grace = 4 * time.Second
	start := time.Now()
	again := keysCmd(t, "rotate", "--url", base, "--grace", grace.String(), reader.ID)
	s2 := session(again.Token)
	if status := read(s1); status != 200 && time.Since(start) < grace-time.Second {
		t.Errorf("the old secret's session within the grace: %d, want 200", status)
	}
	until("the old secret's session 5 s after the grace", s1, start.Add(grace+5*time.Second))
	if status := read(s2); status != 200 {
		t.Errorf("the new secret's session after the old one's grace: %d, want 200", status)
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

// TestDeadLetterCommandsSendAKey: with auth on, `skyjoin deadletters` and
// `skyjoin replay` send the API key of --key or SKYJOIN_KEY; without one the
// answer's 401 is the command's error.
func TestDeadLetterCommandsSendAKey(t *testing.T) {
	dir := t.TempDir()
	admin := keysCmd(t, "create", "--scope", "admin", "--data-dir", dir)
	ingest := keysCmd(t, "create", "--scope", "ingest", "--data-dir", dir)
	base, stop := startInProcess(t, upHooks{}, "--data-dir", dir, "--auth=on")
	defer stop()
	// A Segment message that cannot be mapped (a track without its event
	// name) becomes a dead letter.
	if status, _, body := callBody(t, http.MethodPost, base+"/v1/track", `{"userId":"u","event":""}`, cred{bearer: ingest.Token}); status != http.StatusOK {
		t.Fatalf("track: %d %s", status, body)
	}
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := Main(context.Background(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := run("deadletters", "--api", base); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("deadletters without a key: %v\n%s", err, out)
	}
	t.Setenv("SKYJOIN_KEY", admin.Token)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := run("deadletters", "--api", base)
		if err != nil {
			t.Fatalf("deadletters with SKYJOIN_KEY: %v\n%s", err, out)
		}
		if strings.Contains(out, "1 dead letters") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deadletters: no dead letter listed:\n%s", out)
		}
	}
	// The message could not be mapped: kept as sent, it cannot replay.
	if out, err := run("replay", "--api", base, "--all"); err != nil || !strings.Contains(out, "replayed 0 ") || !strings.Contains(out, "kept 1 that cannot be replayed") {
		t.Errorf("replay with SKYJOIN_KEY: %v\n%s", err, out)
	}
	t.Setenv("SKYJOIN_KEY", "")
	if out, err := run("replay", "--api", base, "--all", "--key", "env://NO_SUCH_VARIABLE_FOR_THE_TEST"); err == nil {
		t.Errorf("replay with a key reference to nothing: no error\n%s", out)
	}
	if out, err := run("replay", "--api", base, "--all", "--key", ingest.Token); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("replay with an ingest key: %v\n%s", err, out)
	}
	if out, err := run("deadletters", "--api", "http://192.0.2.1:8080", "--key", admin.Token); err == nil || ExitCode(err) != 2 {
		t.Errorf("a key over plain http beyond loopback: %v\n%s", err, out)
	}
}

// TestOpenLoopbackAnswersLoopbackHostsOnly: without auth, on loopback, the
// API and the admin listener refuse a request addressed to another host
// (a page of another site whose name resolves to 127.0.0.1: DNS
// rebinding); with auth on, the credential decides.
func TestOpenLoopbackAnswersLoopbackHostsOnly(t *testing.T) {
	get := func(u, host string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Host = host
		req.Header.Set("Origin", "http://"+host)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base, stop := startInProcess(t, upHooks{})
	defer stop()
	admin := adminURL(t, base)
	port := base[strings.LastIndex(base, ":")+1:]
	for _, u := range []string{base + "/v1/events?limit=1", admin + "/debug/pipeline"} {
		if code := get(u, "rebound.example:"+port); code != http.StatusForbidden {
			t.Errorf("GET %s with Host rebound.example: %d, want 403", u, code)
		}
		for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port, "localhost"} {
			if code := get(u, host); code != http.StatusOK {
				t.Errorf("GET %s with Host %s: %d, want 200", u, host, code)
			}
		}
	}

	// With auth on, another Host is the credential's business: 401 without one.
	dir := t.TempDir()
	keysCmd(t, "create", "--scope", "admin", "--data-dir", dir)
	base, stopAuth := startInProcess(t, upHooks{}, "--data-dir", dir, "--auth=on")
	defer stopAuth()
	if code := get(base+"/v1/events?limit=1", "rebound.example"); code != http.StatusUnauthorized {
		t.Errorf("auth on, Host rebound.example, no key: %d, want 401", code)
	}
}
