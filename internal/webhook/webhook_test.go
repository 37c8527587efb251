package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/registry/natskv/natskvtest"
)

const secret = "test-secret-0123456789"

// env is a dispatcher on the registry's key-value bucket on a real
// embedded JetStream server, served over HTTP.
type env struct {
	t   *testing.T
	cfg Config
	log *slog.Logger // nil: none
	srv *natskvtest.Server
	reg registry.Registry
	d   *Dispatcher
	api *httptest.Server
}

// testKey is the key that seals secrets in tests, unless one says otherwise.
var testKey = bytes.Repeat([]byte{0x5a}, KeySize)

func testKeyring(t *testing.T, primary []byte, retiring, next [][]byte) *Keyring {
	t.Helper()
	k, err := NewKeyring(primary, retiring, next)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	if cfg.keys == nil && cfg.KeyFile == "" && !cfg.SecretKey.IsSet() {
		cfg.keys = testKeyring(t, testKey, nil, nil)
	}
	e := &env{t: t, cfg: cfg, srv: natskvtest.Start(t, t.TempDir())}
	e.open(e.srv.Registry(t))
	t.Cleanup(e.close)
	return e
}

// peer is another Dispatcher on the same registry, over a connection of
// its own, as another process would run it.
func (e *env) peer() *env {
	e.t.Helper()
	p := &env{t: e.t, cfg: e.cfg, srv: e.srv}
	p.open(e.srv.Dial(e.t))
	e.t.Cleanup(p.close)
	return p
}

func (e *env) open(reg registry.Registry) {
	e.t.Helper()
	d, err := New(context.Background(), reg, e.cfg, e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	mux := http.NewServeMux()
	d.Register(mux)
	e.reg, e.d, e.api = reg, d, httptest.NewServer(withTestPrincipal(mux))
}

// headerScopes names, in a test's request, the scopes of its caller: as
// the auth middleware would, the handler finds a Principal in the
// context. Without the header there is none (a process without auth).
const headerScopes = "X-Test-Scopes"

func withTestPrincipal(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := r.Header[headerScopes]; ok {
			scopes := strings.Fields(strings.Join(v, " "))
			r = r.WithContext(auth.WithPrincipal(r.Context(), auth.Principal{ID: "key_test", Kind: "key", Scopes: scopes}))
		}
		h.ServeHTTP(w, r)
	})
}

// close closes the dispatcher, then the registry.
func (e *env) close() {
	if e.d == nil {
		return
	}
	e.api.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.d.Close(ctx); err != nil {
		e.t.Error(err)
	}
	if err := e.reg.Close(); err != nil {
		e.t.Error(err)
	}
	e.d = nil
}

// reopen restarts the dispatcher and the broker under it.
func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.srv = e.srv.Restart(e.t)
	e.open(e.srv.Registry(e.t))
}

// live reports whether the webhook id is live in e's dispatcher.
func (e *env) live(id string) bool {
	e.d.mu.RLock()
	defer e.d.mu.RUnlock()
	_, ok := e.d.hooks[id]
	return ok
}

func (e *env) do(method, path string, body any) (int, []byte) {
	e.t.Helper()
	return e.doAs("", method, path, body)
}

// doAs makes a request as a caller with scopes ("": no principal).
func (e *env) doAs(scopes, method, path string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.api.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if scopes != "" {
		req.Header.Set(headerScopes, scopes)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// register registers a webhook and returns it. Targets in tests are
// loopback receivers: allow_private is true unless in says otherwise.
func (e *env) register(in map[string]any) Webhook {
	e.t.Helper()
	if _, ok := in["secret"]; !ok {
		in["secret"] = secret
	}
	if _, ok := in["allow_private"]; !ok {
		in["allow_private"] = true
	}
	code, body := e.do("POST", "/v1/webhooks", in)
	if code != http.StatusCreated {
		e.t.Fatalf("register: %d %s", code, body)
	}
	var w Webhook
	decode(e.t, body, &w)
	return w
}

func (e *env) get(id string) Webhook {
	e.t.Helper()
	code, body := e.do("GET", "/v1/webhooks/"+id, nil)
	if code != 200 {
		e.t.Fatalf("get webhook: %d %s", code, body)
	}
	var w Webhook
	decode(e.t, body, &w)
	return w
}

func (e *env) failures(id string) []Failure {
	e.t.Helper()
	code, body := e.do("GET", "/v1/webhooks/"+id+"/failures", nil)
	if code != 200 {
		e.t.Fatalf("failures: %d %s", code, body)
	}
	var fb struct {
		Failures []Failure `json:"failures"`
	}
	decode(e.t, body, &fb)
	return fb.Failures
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// eventually waits, boundedly, for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var at = time.Date(2026, 7, 14, 15, 0, 0, 0, time.UTC)

// rec is a realistic enriched record; temp < -100 means no weather
// (unavailable).
func rec(id, country string, temp float64) event.Record {
	lat, lon := 40.42, -3.70
	r := event.Record{
		Event: event.Event{
			EventID: id, EventType: event.TypeUserObserved, OccurredAt: at,
			User:       event.User{ID: "u-" + id, Name: "Ada " + id},
			Location:   event.Location{Latitude: &lat, Longitude: &lon, City: "Madrid", Country: country},
			Attributes: map[string]string{"plan": "pro"},
		},
		Enrichment:  event.Enrichment{Status: event.StatusEnriched},
		IngestedAt:  at.Add(time.Second),
		ProcessedAt: at.Add(2 * time.Second),
	}
	if temp < -100 {
		r.Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "weather provider: 503"}
		return r
	}
	r.Weather = &event.Weather{ObservedAt: at, TemperatureC: temp, WeatherCode: 3, Condition: "Overcast", Provider: "sim"}
	return r
}

func TestFilterMatch(t *testing.T) {
	hotSpain, coldSpain, hotFrance, noWeather := rec("a", "Spain", 34.5), rec("b", "Spain", 12), rec("c", "France", 35), rec("d", "Spain", -999)
	hotSpain.Properties = []byte(`{"amount":12.5,"paid":true,"plan":"pro","items":[{"sku":"a","qty":1},{"sku":"b","qty":3}],"shipping":{"address":{"city":"Madrid"}}}`)
	tests := []struct {
		filter  string
		rec     event.Record
		want    bool
		wantErr bool
	}{
		{`weather.temperature_c > 30 && location.country == "Spain"`, hotSpain, true, false},
		{`weather.temperature_c > 30 && location.country == "Spain"`, coldSpain, false, false},
		{`weather.temperature_c > 30 && location.country == "Spain"`, hotFrance, false, false},
		// No weather: the key is missing, an evaluation error, no match.
		{`weather.temperature_c > 30 && location.country == "Spain"`, noWeather, false, true},
		{`has(weather.temperature_c) && weather.temperature_c > 30`, noWeather, false, false},
		{`enrichment.status == "unavailable"`, noWeather, true, false},
		{`weather.code == 3 && weather.condition == "Overcast"`, hotSpain, true, false},
		{`weather.temperature_c >= 34.5`, hotSpain, true, false},
		{`occurred_at > timestamp("2026-01-01T00:00:00Z") && processed_at - occurred_at == duration("2s")`, hotSpain, true, false},
		{`attributes.plan == "pro" && "plan" in attributes`, hotSpain, true, false},
		{`event_type.startsWith("user.") && user.id == "u-a"`, hotSpain, true, false},
		{`location.latitude > 40.0 && location.longitude < 0`, hotSpain, true, false},
		{``, noWeather, true, false},
		// Typed properties: numbers, booleans, lists and nested maps.
		{`properties.amount > 10 && properties.paid && properties.items.size() == 2`, hotSpain, true, false},
		{`properties.items.exists(i, i.sku == "b" && i.qty >= 2)`, hotSpain, true, false},
		{`properties.shipping.address.city == "Madrid" && properties.plan == "pro"`, hotSpain, true, false},
		{`properties.amount > 100`, hotSpain, false, false},
		{`has(properties.amount)`, coldSpain, false, false},
		{`properties.amount > 10`, coldSpain, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.filter+"/"+tt.rec.EventID, func(t *testing.T) {
			f, err := compileFilter(tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := encodeRecord(&tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.match(enc.vars)
			if (err != nil) != tt.wantErr {
				t.Fatalf("match error = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRegisterValidation(t *testing.T) {
	e := newEnv(t, Config{})
	tests := []struct {
		name     string
		body     any
		code     int
		field    string   // in details.errors
		contains []string // in the message
	}{
		{"syntax error", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/", "filter": "weather.temperature_c >", "secret": secret},
			400, "filter", []string{"filter: compile error", "Syntax error", "| weather.temperature_c >"}},
		{"undeclared", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/", "filter": `wether.temperature_c > 30`, "secret": secret},
			400, "filter", []string{"undeclared reference to 'wether'"}},
		{"not bool", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/", "filter": `event_id + "x"`, "secret": secret},
			400, "filter", []string{"must evaluate to a bool"}},
		{"type error", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/", "filter": `event_type > 3`, "secret": secret},
			400, "filter", []string{"found no matching overload"}},
		{"no url", map[string]any{"filter": "true", "secret": secret}, 400, "url", []string{"url: required"}},
		{"ftp url", map[string]any{"url": "ftp://127.0.0.1/x", "secret": secret}, 400, "url", []string{"scheme must be http or https"}},
		{"relative url", map[string]any{"url": "/hook", "secret": secret}, 400, "url", []string{"url: scheme"}},
		{"no host", map[string]any{"url": "http:///hook", "secret": secret}, 400, "url", []string{"url: has no host"}},
		{"bad url", map[string]any{"url": "http://exa mple.test/", "secret": secret}, 400, "url", []string{"url: not a URL"}},
		{"credentials", map[string]any{"allow_private": true, "url": "http://u:p@127.0.0.1:1/", "secret": secret}, 400, "url", []string{"credentials"}},
		{"no secret", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/"}, 400, "secret", []string{"secret: required"}},
		{"short secret", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/", "secret": "abc"}, 400, "secret", []string{"at least 16"}},
		{"batch size", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/", "secret": secret, "batch_size": 0}, 400, "batch_size", []string{"between 1 and 1000"}},
		{"max wait", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/", "secret": secret, "max_wait_ms": -1}, 400, "max_wait_ms", []string{"between 0 and 60000"}},
		{"unknown field", `{"allow_private":true,"url":"http://127.0.0.1:1/","secret":"` + secret + `","filtr":"true"}`, 400, "", []string{`unknown field "filtr"`}},
		{"wrong type", `{"allow_private":true,"url":"http://127.0.0.1:1/","secret":"` + secret + `","batch_size":"ten"}`, 400, "", []string{"batch_size: must be an integer"}},
		{"not json", `url=x`, 400, "", []string{"body:"}},
		{"empty", ``, 400, "", []string{"a JSON object is required"}},
		{"ok", map[string]any{"allow_private": true, "url": "http://127.0.0.1:1/hook", "filter": `location.country == "Spain"`, "secret": secret, "batch_size": 10, "max_wait_ms": 0}, 201, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.do("POST", "/v1/webhooks", tt.body)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %s", code, tt.code, body)
			}
			if code == 201 {
				return
			}
			var eb struct {
				Error struct {
					Message string `json:"message"`
					Details struct {
						Errors []FieldError `json:"errors"`
					} `json:"details"`
				} `json:"error"`
			}
			decode(t, body, &eb)
			for _, s := range tt.contains {
				if !strings.Contains(eb.Error.Message, s) {
					t.Errorf("message %q does not contain %q", eb.Error.Message, s)
				}
			}
			if tt.field != "" {
				var fields []string
				for _, fe := range eb.Error.Details.Errors {
					fields = append(fields, fe.Field)
				}
				if len(fields) != 1 || fields[0] != tt.field {
					t.Errorf("fields in error %v, want [%s]", fields, tt.field)
				}
			}
		})
	}
}

func TestRegistrationsPersist(t *testing.T) {
	e := newEnv(t, Config{})
	code, body := e.do("POST", "/v1/webhooks", map[string]any{"url": "http://127.0.0.1:1/a", "allow_private": true, "filter": `weather.temperature_c > 30`, "secret": secret, "batch_size": 7, "max_wait_ms": 250})
	if code != 201 {
		t.Fatalf("register: %d %s", code, body)
	}
	if bytes.Contains(body, []byte(secret)) || bytes.Contains(body, []byte(`"secret"`)) {
		t.Fatalf("the answer shows the secret: %s", body)
	}
	var a Webhook
	decode(t, body, &a)
	if !strings.HasPrefix(a.ID, "wh_") || a.BatchSize != 7 || a.MaxWaitMS != 250 || a.Filter != `weather.temperature_c > 30` {
		t.Fatalf("registration %+v", a)
	}
	b := e.register(map[string]any{"url": "http://127.0.0.1:1/b"})
	if b.BatchSize != DefaultBatchSize || b.MaxWaitMS != DefaultMaxWait.Milliseconds() || b.Filter != "" {
		t.Fatalf("defaults not applied: %+v", b)
	}

	e.reopen()
	code, body = e.do("GET", "/v1/webhooks", nil)
	if code != 200 {
		t.Fatalf("list: %d %s", code, body)
	}
	if bytes.Contains(body, []byte(secret)) {
		t.Fatalf("the list shows the secret: %s", body)
	}
	var list listBody
	decode(t, body, &list)
	if len(list.Webhooks) != 2 || list.Webhooks[0].ID != a.ID || list.Webhooks[1].ID != b.ID {
		t.Fatalf("after reopen: %s", body)
	}
	got := list.Webhooks[0]
	if got.URL != a.URL || got.Filter != a.Filter || got.BatchSize != 7 || got.MaxWaitMS != 250 || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("after reopen %+v, want %+v", got, a)
	}
	// The secret survived too: deliveries are signed with it (see
	// TestDeliverySigned); here, delete one and check it stays deleted.
	if code, body := e.do("DELETE", "/v1/webhooks/"+b.ID, nil); code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, _ := e.do("DELETE", "/v1/webhooks/"+b.ID, nil); code != 404 {
		t.Fatalf("second delete: %d, want 404", code)
	}
	e.reopen()
	if code, _ := e.do("GET", "/v1/webhooks/"+b.ID, nil); code != 404 {
		t.Fatalf("deleted webhook after reopen: %d, want 404", code)
	}
	if w := e.get(a.ID); w.ID != a.ID {
		t.Fatalf("get %s: %+v", a.ID, w)
	}
}

// receiver is an httptest target that verifies signatures and can fail on
// purpose.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string

	mu         sync.Mutex
	status     int // answer; 0 means 200
	attempts   int
	badSigs    int
	deliveries map[string][]string // delivery id -> event ids
	webhookIDs map[string]bool
	block      chan struct{} // when set, requests wait for it to close
	started    chan struct{} // receives once per request, if set
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: secret, deliveries: map[string][]string{}, webhookIDs: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	block, started := r.block, r.started
	r.attempts++
	status := r.status
	r.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if block != nil {
		<-block
	}
	if err := Verify(r.secret, req.Header, body, 0, time.Now()); err != nil {
		r.mu.Lock()
		r.badSigs++
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if status != 0 {
		w.Header().Set("Retry-After", "0")
		http.Error(w, "failing on purpose", status)
		return
	}
	var p struct {
		WebhookID  string         `json:"webhook_id"`
		DeliveryID string         `json:"delivery_id"`
		Records    []event.Record `json:"records"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	if p.DeliveryID != req.Header.Get(HeaderDelivery) || p.WebhookID != req.Header.Get(HeaderWebhookID) {
		http.Error(w, "headers do not match the body", 400)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range p.Records {
		r.deliveries[p.DeliveryID] = append(r.deliveries[p.DeliveryID], rec.EventID)
	}
	r.webhookIDs[p.WebhookID] = true
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) set(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

func (r *receiver) snapshot() (attempts, badSigs int, deliveries map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := map[string][]string{}
	for k, v := range r.deliveries {
		d[k] = append([]string(nil), v...)
	}
	return r.attempts, r.badSigs, d
}

func (r *receiver) received() []string {
	_, _, d := r.snapshot()
	var ids []string
	for _, v := range d {
		ids = append(ids, v...)
	}
	return ids
}

func TestDeliverySigned(t *testing.T) {
	e := newEnv(t, Config{})
	good := newReceiver(t, secret)
	wrong := newReceiver(t, "another-secret-0123456789") // verifies with the wrong key
	spain := e.register(map[string]any{"url": good.srv.URL + "/hook", "filter": `weather.temperature_c > 30 && location.country == "Spain"`, "batch_size": 2, "max_wait_ms": 20})
	all := e.register(map[string]any{"url": wrong.srv.URL, "max_wait_ms": 0})

	recs := []event.Record{rec("s1", "Spain", 31), rec("f1", "France", 40), rec("s2", "Spain", 10), rec("s3", "Spain", -999), rec("s4", "Spain", 35.5), rec("s5", "Spain", 33)}
	e.d.Deliver(recs[:3], nil)
	e.d.Deliver(recs[3:], nil)

	eventually(t, "3 hot Spanish records at the receiver", func() bool { return len(good.received()) == 3 })
	_, badSigs, deliveries := good.snapshot()
	if badSigs != 0 {
		t.Fatalf("%d deliveries with a bad signature", badSigs)
	}
	seen := map[string]bool{}
	for id, evs := range deliveries {
		if len(evs) > 2 {
			t.Errorf("delivery %s has %d records, batch_size is 2", id, len(evs))
		}
		for _, ev := range evs {
			seen[ev] = true
		}
	}
	for _, want := range []string{"s1", "s4", "s5"} {
		if !seen[want] {
			t.Errorf("record %s not delivered; got %v", want, deliveries)
		}
	}
	if !good.webhookIDs[spain.ID] {
		t.Errorf("webhook_id %s not in the payloads", spain.ID)
	}
	// The sender counts a batch once the receiver's response is read, which
	// can be just after the receiver recorded it.
	eventually(t, "3 records counted delivered", func() bool { return e.get(spain.ID).Stats.DeliveredRecords == 3 })
	w := e.get(spain.ID)
	if w.Stats.Matched != 3 || w.Stats.FilterErrors != 1 || w.Stats.DeliveredRecords != 3 || w.Stats.FailedBatches != 0 {
		t.Errorf("stats %+v: want 3 matched, 1 filter error (the record without weather), 3 delivered", *w.Stats)
	}

	// The receiver with another key refuses every delivery (401, not
	// retried), so they end in the failure list.
	eventually(t, "the wrongly keyed receiver's failures", func() bool { return len(e.failures(all.ID)) > 0 })
	if _, bad, _ := wrong.snapshot(); bad == 0 {
		t.Fatal("a receiver with the wrong secret accepted a signature")
	}
	f := e.failures(all.ID)[0]
	if f.Attempts != 1 || !strings.Contains(f.Reason, "401") {
		t.Errorf("failure %+v: want 1 attempt (401 is not retried) and the status in the error", f)
	}
}

func TestRetryFailureListReplay(t *testing.T) {
	cfg := Config{MaxAttempts: 3, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond}
	e := newEnv(t, cfg)
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusServiceUnavailable)
	w := e.register(map[string]any{"url": rcv.srv.URL, "filter": `location.country == "Spain"`, "batch_size": 10, "max_wait_ms": 0})

	e.d.Deliver([]event.Record{rec("r1", "Spain", 20), rec("r2", "Spain", 25), rec("x", "Norway", 1)}, nil)
	eventually(t, "the batch in the failure list", func() bool { return len(e.failures(w.ID)) == 1 })
	f := e.failures(w.ID)[0]
	if f.Attempts != cfg.MaxAttempts || f.Count != 2 || !strings.Contains(f.Reason, "503") ||
		strings.Join(f.EventIDs, ",") != "r1,r2" || f.FailedAt.IsZero() || !strings.HasPrefix(f.ID, "dlv_") {
		t.Fatalf("failure %+v: want %d attempts, 2 records r1,r2 and the 503 in the error", f, cfg.MaxAttempts)
	}
	if attempts, _, _ := rcv.snapshot(); attempts != cfg.MaxAttempts {
		t.Fatalf("receiver saw %d attempts, want %d", attempts, cfg.MaxAttempts)
	}
	st := e.get(w.ID)
	if st.Stats.Retries != int64(cfg.MaxAttempts-1) || st.Stats.FailedBatches != 1 || *st.Failures != 1 {
		t.Fatalf("stats %+v failures %d: want %d retries, 1 failed batch", *st.Stats, *st.Failures, cfg.MaxAttempts-1)
	}

	// The failure list survives a restart.
	e.reopen()
	if fs := e.failures(w.ID); len(fs) != 1 || fs[0].ID != f.ID {
		t.Fatalf("after reopen: %+v", fs)
	}

	// Replay while the receiver still fails: the failure stays, counted.
	code, body := e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", nil)
	if code != 200 {
		t.Fatalf("replay: %d %s", code, body)
	}
	var res ReplayResult
	decode(t, body, &res)
	if res.Replayed != 1 || res.Delivered != 0 || len(res.Failed) != 1 || res.Failed[0].Attempts != cfg.MaxAttempts+1 {
		t.Fatalf("replay while failing: %s", body)
	}
	if code, _ := e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", map[string]any{"ids": []string{"dlv_nope"}}); code != 404 {
		t.Fatalf("replay of an unknown failure: %d, want 404", code)
	}

	// The receiver recovers: replay delivers the batch with its original
	// delivery id and empties the list.
	rcv.set(0)
	code, body = e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", map[string]any{"ids": []string{f.ID}})
	if code != 200 {
		t.Fatalf("replay: %d %s", code, body)
	}
	decode(t, body, &res)
	if res.Replayed != 1 || res.Delivered != 1 || len(res.Failed) != 0 {
		t.Fatalf("replay after recovery: %s", body)
	}
	if fs := e.failures(w.ID); len(fs) != 0 {
		t.Fatalf("failure list after replay: %+v", fs)
	}
	_, bad, deliveries := rcv.snapshot()
	if bad != 0 || strings.Join(deliveries[f.ID], ",") != "r1,r2" {
		t.Fatalf("receiver got %v (bad signatures %d), want delivery %s with r1,r2", deliveries, bad, f.ID)
	}
}

func TestFailuresExpire(t *testing.T) {
	e := newEnv(t, Config{MaxAttempts: 1})
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusServiceUnavailable)
	a := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	b := e.register(map[string]any{"url": rcv.srv.URL + "/b", "max_wait_ms": 0})
	both := func(n int) func() bool {
		return func() bool { return len(e.failures(a.ID)) == n && len(e.failures(b.ID)) == n }
	}

	e.d.Deliver([]event.Record{rec("old", "Spain", 20)}, nil)
	eventually(t, "the first batch in both failure lists", both(1))
	// The two webhooks' senders fail the first batch each at its time.
	oa, ob := e.failures(a.ID)[0].FailedAt, e.failures(b.ID)[0].FailedAt
	first, last := oa, ob
	if ob.Before(oa) {
		first, last = ob, oa
	}
	e.d.Deliver([]event.Record{rec("new", "Spain", 21)}, nil)
	eventually(t, "the second batch in both failure lists", both(2))

	ctx := context.Background()
	if n, err := e.d.expireFailures(ctx, first); err != nil || n != 0 {
		t.Fatalf("expire before the first failure's time: %d deleted, %v; want none", n, err)
	}
	n, err := e.d.expireFailures(ctx, last.Add(time.Microsecond))
	if err != nil || n != 2 {
		t.Fatalf("expire after the first failures: %d deleted, %v; want the first batch of each webhook", n, err)
	}
	for _, id := range []string{a.ID, b.ID} {
		fs := e.failures(id)
		if len(fs) != 1 || strings.Join(fs[0].EventIDs, ",") != "new" {
			t.Fatalf("webhook %s keeps %+v; want the newer failure only", id, fs)
		}
		if w := e.get(id); w.Stats.ExpiredFailures != 1 || *w.Failures != 1 {
			t.Errorf("webhook %s: stats %+v, %d failures; want 1 expired, 1 left", id, *w.Stats, *w.Failures)
		}
	}

	// With a max age, the dispatcher deletes them by itself.
	e.cfg.FailureMaxAge = time.Millisecond
	e.reopen()
	eventually(t, "the failure lists emptied by the dispatcher", both(0))

	if err := (Config{FailureMaxAge: -time.Hour}).withDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "webhook-failure-max-age") {
		t.Errorf("a negative max age: %v; want it refused by name", err)
	}
}

func TestNonRetryableAndRetryAfter(t *testing.T) {
	tests := []struct {
		status       int
		wantAttempts int
	}{
		{http.StatusBadRequest, 1},
		{http.StatusGone, 1},
		{http.StatusTooManyRequests, 4},
		{http.StatusInternalServerError, 4},
		{http.StatusRequestTimeout, 4},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			e := newEnv(t, Config{MaxAttempts: 4, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Millisecond})
			rcv := newReceiver(t, secret)
			rcv.set(tt.status)
			w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
			e.d.Deliver([]event.Record{rec("n1", "Spain", 20)}, nil)
			eventually(t, "a failure", func() bool { return len(e.failures(w.ID)) == 1 })
			if f := e.failures(w.ID)[0]; f.Attempts != tt.wantAttempts {
				t.Fatalf("attempts %d, want %d (%s)", f.Attempts, tt.wantAttempts, f.Reason)
			}
		})
	}
}

func TestNetworkErrorRetried(t *testing.T) {
	e := newEnv(t, Config{MaxAttempts: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Millisecond})
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close() // connection refused from now on
	w := e.register(map[string]any{"url": url, "max_wait_ms": 0})
	e.d.Deliver([]event.Record{rec("n1", "Spain", 20)}, nil)
	eventually(t, "a failure", func() bool { return len(e.failures(w.ID)) == 1 })
	if f := e.failures(w.ID)[0]; f.Attempts != 2 || !strings.Contains(f.Reason, "refused") {
		t.Fatalf("failure %+v: want 2 attempts and connection refused", f)
	}
}

func TestQueueFull(t *testing.T) {
	e := newEnv(t, Config{QueueSize: 1})
	rcv := newReceiver(t, secret)
	block := make(chan struct{})
	started := make(chan struct{}, 16)
	rcv.mu.Lock()
	rcv.block, rcv.started = block, started
	rcv.mu.Unlock()
	w := e.register(map[string]any{"url": rcv.srv.URL, "batch_size": 1, "max_wait_ms": 0})

	e.d.Deliver([]event.Record{rec("q1", "Spain", 20)}, nil)
	<-started // the sender is stuck in its POST
	e.d.Deliver([]event.Record{rec("q2", "Spain", 20)}, nil)
	eventually(t, "one batch queued", func() bool { return e.get(w.ID).Stats.Queued == 1 })
	e.d.Deliver([]event.Record{rec("q3", "Spain", 20)}, nil) // finds the queue full

	eventually(t, "the queue-full failure", func() bool { return len(e.failures(w.ID)) == 1 })
	f := e.failures(w.ID)[0]
	if f.Reason != ReasonQueueFull || f.Attempts != 0 || strings.Join(f.EventIDs, ",") != "q3" {
		t.Fatalf("failure %+v: want q3 with reason %q and no attempt", f, ReasonQueueFull)
	}
	if st := e.get(w.ID).Stats; st.QueueFull != 1 {
		t.Fatalf("stats %+v: want queue_full 1", *st)
	}
	close(block)
	eventually(t, "q1 and q2 delivered", func() bool { return len(rcv.received()) == 2 })

	// Nothing was lost: replaying the failure delivers q3.
	code, body := e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", "")
	if code != 200 || len(e.failures(w.ID)) != 0 {
		t.Fatalf("replay: %d %s", code, body)
	}
	if got := len(rcv.received()); got != 3 {
		t.Fatalf("receiver has %d records, want 3", got)
	}
}

func TestShutdownKeepsUndelivered(t *testing.T) {
	// A long backoff: at shutdown the batch is waiting for its second
	// attempt; the deadline passes and it goes to the failure list.
	e := newEnv(t, Config{MaxAttempts: 5, RetryDelay: time.Hour, MaxRetryDelay: time.Hour})
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusBadGateway)
	w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	e.d.Deliver([]event.Record{rec("z1", "Spain", 20), rec("z2", "Spain", 20)}, nil)
	eventually(t, "the first attempt", func() bool { a, _, _ := rcv.snapshot(); return a == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the deadline has passed already
	if err := e.d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	e.d.Deliver([]event.Record{rec("late", "Spain", 20)}, nil) // after Close: not taken, no panic
	e.reopen()
	fs := e.failures(w.ID)
	if len(fs) != 1 || fs[0].Attempts != 1 || !strings.Contains(fs[0].Reason, "shutting down") || fs[0].Count != 2 {
		t.Fatalf("failures after shutdown: %+v", fs)
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"webhook_id":"wh_1","delivery_id":"dlv_1","records":[]}`)
	now := time.Unix(1_800_000_000, 0)
	signed := func(ts time.Time, b []byte, key string) http.Header {
		h := http.Header{}
		h.Set(HeaderTimestamp, fmt.Sprint(ts.Unix()))
		h.Set(HeaderSignature, Sign(key, ts, b))
		return h
	}
	tests := []struct {
		name string
		h    http.Header
		body []byte
		want error
	}{
		{"ok", signed(now, body, secret), body, nil},
		{"ok within tolerance", signed(now.Add(-4*time.Minute), body, secret), body, nil},
		{"wrong key", signed(now, body, "not-the-secret-at-all"), body, ErrBadSignature},
		{"tampered body", signed(now, body, secret), append([]byte(nil), append(body[:len(body)-1], ' ', '}')...), ErrBadSignature},
		{"replayed later", signed(now.Add(-10*time.Minute), body, secret), body, ErrStale},
		{"no headers", http.Header{}, body, ErrNoSignature},
		{"timestamp swapped", func() http.Header {
			h := signed(now, body, secret)
			h.Set(HeaderTimestamp, fmt.Sprint(now.Unix()-1))
			return h
		}(), body, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(secret, tt.h, tt.body, 0, now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestDeliveredJSONHasProperties: the JSON a webhook receives carries the
// record's properties as a JSON object, as they were sent.
func TestDeliveredJSONHasProperties(t *testing.T) {
	r := rec("p", "Spain", 20)
	r.Properties = []byte(`{"amount":12.5,"items":["a","b"],"n":{"ok":true}}`)
	enc, err := encodeRecord(&r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(enc.json), `"properties":{"amount":12.5,"items":["a","b"],"n":{"ok":true}}`) {
		t.Errorf("delivered JSON lacks the properties object: %s", enc.json)
	}
}
