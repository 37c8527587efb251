package segment_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/segment"
)

// memBroker keeps what is published, by topic; fail makes it refuse.
type memBroker struct {
	mu   sync.Mutex
	msgs map[string][]*broker.Message
	fail bool
}

func (b *memBroker) Publish(ctx context.Context, topic string, msgs ...*broker.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return errors.New("broker down")
	}
	if b.msgs == nil {
		b.msgs = map[string][]*broker.Message{}
	}
	b.msgs[topic] = append(b.msgs[topic], msgs...)
	return nil
}

// events decodes every event published to the events topic as the worker
// does (envelope.DecodeEvents, the strict decoder).
func (b *memBroker) events(t *testing.T) []event.Event {
	t.Helper()
	var out []event.Event
	for _, m := range b.msgs[broker.TopicEvents] {
		in, err := envelope.DecodeEvents(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range in.Events {
			if len(d.Errors) > 0 {
				t.Fatalf("the worker could not decode %s: %v", d.Raw, d.Errors)
			}
			if errs := d.Event.Validate(0, time.Now(), time.Minute); len(errs) > 0 {
				t.Fatalf("the worker would refuse %s: %v", d.Raw, errs)
			}
			out = append(out, d.Event)
		}
	}
	return out
}

func newServer(t *testing.T, b *memBroker, cfg ingest.Config) *httptest.Server {
	cfg.MaxEvents, cfg.MaxBodyBytes, cfg.PublishTimeout, cfg.MaxClockSkew = 100, 1<<20, time.Second, 5*time.Minute
	ing := ingest.New(cfg, b, platform.Discard)
	mux := http.NewServeMux()
	segment.New(segment.Config{MaxEvents: 100, MaxBodyBytes: 1 << 20, PublishTimeout: time.Second}, ing, b, platform.Discard).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, url, contentType, body string, gz bool) (int, map[string]any) {
	t.Helper()
	var rd bytes.Buffer
	if gz {
		zw := gzip.NewWriter(&rd)
		zw.Write([]byte(body))
		zw.Close()
	} else {
		rd.WriteString(body)
	}
	req, _ := http.NewRequest("POST", url, &rd)
	req.Header.Set("Content-Type", contentType)
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

const batch = `{
  "batch": [
    {"type": "track", "messageId": "m-1", "userId": "u-1", "anonymousId": "a-1", "event": "Order Completed",
     "timestamp": "2026-11-26T11:59:00.123Z",
     "properties": {"amount": 12.5, "items": ["a", "b"], "paid": true, "shipping": {"days": 2}},
     "context": {"location": {"latitude": 48.85, "longitude": 2.35, "city": "Paris", "country": "France", "speed": 0},
                 "ip": "203.0.113.9", "library": {"name": "analytics-node", "version": "2.1.0"},
                 "traits": {"email": "ann@example.com"}},
     "integrations": {"All": true}, "_metadata": {"nodeVersion": "22"}, "channel": "server"},
    {"type": "identify", "messageId": "m-2", "anonymousId": "a-2", "originalTimestamp": "2026-11-26T11:00:00Z",
     "traits": {"email": "bob@example.com", "firstName": "Bob", "plan": "pro", "logins": 3}},
    {"type": "track", "messageId": "m-3", "userId": "u-3", "timestamp": "2026-11-26T11:59:00Z"},
    {"type": "track", "messageId": "m-4", "userId": "u-4", "event": "Bad Place", "timestamp": "2026-11-26T11:59:00Z",
     "context": {"location": {"latitude": 123, "longitude": 2}}},
    {"type": "page", "messageId": "m-5", "userId": "u-5", "name": "Home", "timestamp": "2026-11-26T11:59:00Z",
     "properties": {"path": "/"}}
  ],
  "sentAt": "2026-11-26T12:00:00Z",
  "writeKey": "secret-write-key"
}`

// TestBatch: good messages are published as events, each bad one is a dead
// letter with its reason, and the answer is 200 {"success": true}.
func TestBatch(t *testing.T) {
	b := &memBroker{}
	srv := newServer(t, b, ingest.Config{})
	for _, ct := range []string{"application/json", "text/plain"} {
		for _, gz := range []bool{false, true} {
			b.msgs = nil
			code, ans := post(t, srv.URL+"/v1/batch", ct, batch, gz)
			if code != 200 || ans["success"] != true || ans["dead_lettered"] != 2.0 {
				t.Fatalf("%s gzip %v: %d %v", ct, gz, code, ans)
			}
			evs := b.events(t)
			if len(evs) != 3 {
				t.Fatalf("%d events", len(evs))
			}
			byID := map[string]event.Event{}
			for _, e := range evs {
				byID[e.EventID] = e
			}
			tr := byID["m-1"]
			if tr.EventType != "Order Completed" || tr.User.ID != "u-1" || tr.User.Email != "ann@example.com" ||
				*tr.Location.Latitude != 48.85 || tr.Location.City != "Paris" || !tr.OccurredAt.Equal(time.Date(2026, 11, 26, 11, 59, 0, 123e6, time.UTC)) {
				t.Errorf("track: %+v", tr)
			}
			var props map[string]any
			if err := json.Unmarshal(tr.Properties, &props); err != nil {
				t.Fatal(err)
			}
			seg, _ := props["_segment"].(map[string]any)
			if props["amount"] != 12.5 || props["paid"] != true || len(props["items"].([]any)) != 2 ||
				seg["anonymousId"] != "a-1" || seg["channel"] != "server" || seg["context"].(map[string]any)["ip"] != "203.0.113.9" ||
				seg["integrations"] == nil || seg["_metadata"] == nil || seg["sentAt"] != "2026-11-26T12:00:00Z" {
				t.Errorf("track properties: %s", tr.Properties)
			}
			if strings.Contains(string(tr.Properties), "secret-write-key") {
				t.Errorf("the writeKey is kept: %s", tr.Properties)
			}
			id := byID["m-2"]
			// originalTimestamp corrected by sentAt against the receive time.
			skew := time.Since(id.OccurredAt) - time.Hour
			if id.EventType != "identify" || id.User.ID != "a-2" || id.User.FirstName != "Bob" || skew < 0 || skew > time.Minute ||
				id.Location.HasCoordinates() || !strings.Contains(string(id.Properties), `"plan":"pro"`) {
				t.Errorf("identify: %+v %s (skew %s)", id, id.Properties, skew)
			}
			if pg := byID["m-5"]; pg.EventType != "page" || !strings.Contains(string(pg.Properties), `"name":"Home"`) {
				t.Errorf("page: %+v %s", pg, pg.Properties)
			}
			dl := b.msgs[broker.TopicDeadLetter]
			if len(dl) != 2 {
				t.Fatalf("%d dead letters", len(dl))
			}
			reasons := ""
			for _, m := range dl {
				d := envelope.ParseDeadLetter(m)
				if d.Stage != segment.Stage || d.Reason == "" {
					t.Errorf("dead letter %+v", d)
				}
				reasons += d.Reason + "|"
				// A message that could not be mapped is kept as sent and
				// cannot replay; a mapped event that failed validation can.
				if unmapped := strings.Contains(d.Reason, "event: is required"); unmapped != (d.NoReplay != "") {
					t.Errorf("dead letter %q: no_replay %q", d.Reason, d.NoReplay)
				}
			}
			if !strings.Contains(reasons, "event: is required") || !strings.Contains(reasons, "location.latitude") {
				t.Errorf("reasons %s", reasons)
			}
		}
	}
}

// TestSingleCalls: each route maps its call; the type comes from the path.
func TestSingleCalls(t *testing.T) {
	b := &memBroker{}
	srv := newServer(t, b, ingest.Config{})
	for _, c := range segment.Calls {
		b.msgs = nil
		body := `{"userId": 42, "event": "Signed Up", "timestamp": "2026-11-26T11:59:00Z", "groupId": "g", "previousId": "p"}`
		code, ans := post(t, srv.URL+"/v1/"+c, "application/json", body, false)
		if code != 200 || ans["success"] != true {
			t.Fatalf("%s: %d %v", c, code, ans)
		}
		evs := b.events(t)
		want := c
		if c == "track" {
			want = "Signed Up"
		}
		if len(evs) != 1 || evs[0].EventType != want || evs[0].User.ID != "42" || !strings.HasPrefix(evs[0].EventID, "sj-") {
			t.Errorf("%s: %+v", c, evs)
		}
	}
}

// TestRefusals: a body that can never be accepted is a 400 or 413; a broker
// that does not take the events is a 503 with Retry-After; a location
// required by the receiver makes a dead letter, not a refusal.
func TestRefusals(t *testing.T) {
	b := &memBroker{}
	srv := newServer(t, b, ingest.Config{})
	for _, c := range []struct{ path, body string }{
		{"/v1/batch", `not json`},
		{"/v1/batch", `{"messages": []}`},
		{"/v1/batch", `{"batch": {}}`},
		{"/v1/track", `[1]`},
	} {
		if code, ans := post(t, srv.URL+c.path, "application/json", c.body, false); code != 400 {
			t.Errorf("%s %s: %d %v", c.path, c.body, code, ans)
		}
	}
	many := `{"batch": [` + strings.Repeat(`{"type":"track"},`, 100) + `{"type":"track"}]}`
	if code, _ := post(t, srv.URL+"/v1/batch", "application/json", many, false); code != 413 {
		t.Errorf("101 messages: %d", code)
	}
	b.fail = true
	if code, _ := post(t, srv.URL+"/v1/batch", "application/json", batch, false); code != 503 {
		t.Errorf("broker down: %d", code)
	}

	rb := &memBroker{}
	rsrv := newServer(t, rb, ingest.Config{RequireLocation: true})
	code, ans := post(t, rsrv.URL+"/v1/batch", "application/json", batch, false)
	if code != 200 || ans["dead_lettered"] != 4.0 || len(rb.events(t)) != 1 {
		t.Errorf("location required: %d %v, %d events", code, ans, len(rb.events(t)))
	}
}

// TestMapRefusesNothingOfSegment: every field of Segment's spec is kept or
// deliberately dropped (writeKey), never refused.
func TestMapRefusesNothingOfSegment(t *testing.T) {
	raw := `{"type":"track","event":"X","userId":"u","anonymousId":"a","messageId":"m","timestamp":"2026-11-26T11:59:00Z",
	"originalTimestamp":"2026-11-26T11:58:00Z","sentAt":"2026-11-26T11:59:30Z","receivedAt":"2026-11-26T11:59:31Z","version":2,
	"channel":"browser","context":{"active":true,"app":{},"campaign":{},"device":{},"ip":"x","library":{},"locale":"en","network":{},
	"os":{},"page":{},"referrer":{},"screen":{},"groupId":"g","timezone":"Europe/Paris","userAgent":"ua","userAgentData":{}},
	"integrations":{"All":false},"_metadata":{"bundled":[]},"properties":{},"writeKey":"w","futureField":1}`
	e, err := segment.Map([]byte(raw), "", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if e.Location.Timezone != "Europe/Paris" || !strings.Contains(string(e.Properties), `"futureField":1`) || strings.Contains(string(e.Properties), `"writeKey"`) {
		t.Errorf("%+v %s", e, e.Properties)
	}
}

// TestMapKeepsNoPersonalDataTwice: a trait that became a user field and
// the coordinates that became the location are not kept a second time in
// properties, where the PII policy's rules for those fields would not
// reach them; what the default policy then leaves holds none of them in
// clear. The other traits and location members stay.
func TestMapKeepsNoPersonalDataTwice(t *testing.T) {
	spec, err := pii.ParseSpec("default")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := pii.New(spec, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	clear := []string{"ann@example.com", "Ann", "Lee", "Ann Lee", "+33 1 23", "ann_l", "1 Main St", "48.8566", "2.3522", "48.85", "2.35"}
	for _, c := range []struct{ name, msg, kept string }{
		{"identify", `{"type":"identify","userId":"u","timestamp":"2026-11-26T11:59:00Z",
			"traits":{"email":"ann@example.com","firstName":"Ann","lastName":"Lee","name":"Ann Lee","phone":"+33 1 23","username":"ann_l",
			"address":{"street":"1 Main St","city":"Paris"},"plan":"pro","logins":3},
			"context":{"location":{"latitude":48.8566,"longitude":2.3522,"city":"Paris","speed":0},"locale":"fr-FR"}}`,
			`"plan":"pro"`},
		{"track", `{"type":"track","event":"Order Completed","userId":"u","timestamp":"2026-11-26T11:59:00Z",
			"properties":{"amount":12.5},
			"context":{"traits":{"email":"ann@example.com","firstName":"Ann","lastName":"Lee","name":"Ann Lee","phone":"+33 1 23","username":"ann_l","plan":"pro"},
			"location":{"latitude":48.85,"longitude":2.35,"city":"Paris","speed":0},"locale":"fr-FR"}}`,
			`"amount":12.5`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := segment.Map([]byte(c.msg), "", nil, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if e.User.Email != "ann@example.com" || e.User.FirstName != "Ann" || e.User.Phone != "+33 1 23" || !e.Location.HasCoordinates() {
				t.Fatalf("mapped: %+v", e)
			}
			var props map[string]any
			if err := json.Unmarshal(e.Properties, &props); err != nil {
				t.Fatal(err)
			}
			seg := props["_segment"].(map[string]any)
			ctx := seg["context"].(map[string]any)
			loc, _ := ctx["location"].(map[string]any)
			if loc["city"] != "Paris" || loc["speed"] != 0.0 || ctx["locale"] != "fr-FR" || !strings.Contains(string(e.Properties), c.kept) {
				t.Errorf("members that became no field are lost: %s", e.Properties)
			}
			for _, name := range []string{"email", "firstName", "lastName", "name", "phone", "username"} {
				if _, ok := props[name]; ok {
					t.Errorf("properties.%s is kept beside user.*: %s", name, e.Properties)
				}
			}
			if _, ok := loc["latitude"]; ok {
				t.Errorf("the coordinates are kept in _segment: %s", e.Properties)
			}
			if c.name == "track" {
				if tr := ctx["traits"].(map[string]any); len(tr) != 1 || tr["plan"] != "pro" {
					t.Errorf("context.traits: %v", tr)
				}
			}
			// As the default policy leaves the record.
			r := event.Record{Event: e}
			policy.Apply(&r)
			stored, _ := json.Marshal(r)
			for _, s := range clear {
				if strings.Contains(string(stored), `"`+s+`"`) || strings.Contains(string(stored), ":"+s+",") || strings.Contains(string(stored), ":"+s+"}") {
					t.Errorf("%q in clear in the record as the default policy leaves it: %s", s, stored)
				}
			}
			if !strings.Contains(string(r.Properties), c.kept) {
				t.Errorf("the policy dropped %s: %s", c.kept, r.Properties)
			}
		})
	}
}

// orderCompleted is an "Order Completed" as Segment's e-commerce spec
// shapes it (the spec's example, with n products), as analytics.js sends
// it (its usual context).
func orderCompleted(n int) string {
	var products []string
	for i := range n {
		// The product of the spec's example: 8 members.
		products = append(products, fmt.Sprintf(`{"product_id":"507f1f77bcf86cd7994390%02d","sku":"45790-%03d","name":"Monopoly: 3rd Edition %d",
			"price":19.99,"quantity":%d,"category":"Games","url":"https://www.example.com/product/path/%d","image_url":"https://www.example.com/product/path/%d.jpg"}`,
			i, i, i, 1+i%3, i, i))
	}
	return `{"type":"track","event":"Order Completed","messageId":"ajs-next-1a2b3c4d5e6f","userId":"u-1","anonymousId":"4f8c2a1e-5b7d-4c3a-9e2f-1d6b8a7c5e3f",
	"timestamp":"2026-11-26T11:59:00.123Z","sentAt":"2026-11-26T11:59:00.456Z","originalTimestamp":"2026-11-26T11:59:00.123Z","receivedAt":"2026-11-26T11:59:01.000Z",
	"channel":"client","version":2,"writeKey":"not-stored",
	"properties":{"checkout_id":"fksdjfsdjfisjf9sdfjsd9f","order_id":"50314b8e9bcf000000000000","affiliation":"Google Store",
	"total":27.50,"subtotal":22.50,"revenue":25.00,"shipping":3,"tax":2,"discount":2.5,"coupon":"hasbros","currency":"USD",
	"products":[` + strings.Join(products, ",") + `]},
	"context":{"library":{"name":"analytics.js","version":"next-1.64.0"},"locale":"en-US","timezone":"Europe/Paris",
	"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
	"userAgentData":{"brands":[{"brand":"Not_A Brand","version":"8"},{"brand":"Chromium","version":"120"},{"brand":"Google Chrome","version":"120"}],"mobile":false,"platform":"macOS"},
	"page":{"path":"/checkout/complete","referrer":"https://www.example.com/checkout","search":"?step=3","title":"Thank you","url":"https://www.example.com/checkout/complete?step=3"},
	"campaign":{"name":"winter","source":"newsletter","medium":"email","term":"games","content":"banner"},
	"ip":"203.0.113.9","location":{"latitude":48.85,"longitude":2.35,"city":"Paris","country":"France"},
	"traits":{"email":"ann@example.com","plan":"pro"},
	"device":{"id":"B5372DB0-C21E-11E4-8DFC-AA07A5B093DB","manufacturer":"Apple","model":"MacBookPro18,3","type":"desktop"},
	"os":{"name":"macOS","version":"14.2"},"screen":{"width":1512,"height":982,"density":2},"network":{"wifi":true,"cellular":false}},
	"integrations":{"All":true,"Mixpanel":false,"Google Analytics":{"clientId":"1234567890.1234567890"}},
	"_metadata":{"bundled":["Segment.io","Google Analytics 4"],"unbundled":["Mixpanel"],"bundledIds":["5f2b3c4d5e6f7a8b9c0d1e2f"]}}`
}

// TestOrderCompleted: a realistic e-commerce "Order Completed" of 20
// products (about 7 KB, 192 entries in its properties; Segment takes up
// to 32 KB a message) is stored, not dead-lettered: the properties as sent
// are within the property limits, and _segment (the message's own fields,
// about 90 entries here) is bounded on its own.
func TestOrderCompleted(t *testing.T) {
	b := &memBroker{}
	srv := newServer(t, b, ingest.Config{})
	msg := orderCompleted(20)
	code, ans := post(t, srv.URL+"/v1/track", "application/json", msg, false)
	if code != 200 || ans["success"] != true || ans["dead_lettered"] != nil {
		t.Fatalf("a %d-byte Order Completed of 20 products: %d %v", len(msg), code, ans)
	}
	evs := b.events(t)
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	var props struct {
		Products []map[string]any `json:"products"`
		Revenue  float64          `json:"revenue"`
		Segment  map[string]any   `json:"_segment"`
	}
	if err := json.Unmarshal(evs[0].Properties, &props); err != nil {
		t.Fatal(err)
	}
	if len(props.Products) != 20 || props.Products[19]["quantity"] != 2.0 || props.Revenue != 25 || props.Segment["integrations"] == nil {
		t.Errorf("properties: %s", evs[0].Properties)
	}
	// The same properties within a _segment over its own bound: a dead
	// letter that names it.
	big := strings.Replace(msg, `"channel":"client"`, `"channel":"`+strings.Repeat("c", event.PropertiesReservedMaxBytes)+`"`, 1)
	b.msgs = nil
	if code, ans := post(t, srv.URL+"/v1/track", "application/json", big, false); code != 200 || ans["dead_lettered"] != 1.0 ||
		!strings.Contains(fmt.Sprint(ans["errors"]), "properties._segment: must be at most") {
		t.Errorf("a _segment over its bound: %d %v", code, ans)
	}
}

// TestWriteKeyNotKept: browser trackers put the writeKey in each message;
// it is in no event, and in no dead letter, whether the message could be
// mapped or not.
func TestWriteKeyNotKept(t *testing.T) {
	const key = "sk_secret-write-key-0123456789"
	b := &memBroker{}
	srv := newServer(t, b, ingest.Config{})
	body := `{"batch":[
	{"type":"track","event":"E","userId":"u","timestamp":"2026-11-26T11:59:00Z","writeKey":"` + key + `"},
	{"type":"track","userId":"u","timestamp":"2026-11-26T11:59:00Z","writeKey":"` + key + `"},
	{"type":"track","event":"E","userId":"u","timestamp":"not a time","write\u004bey":"` + key + `"},
	{"type":"track","event":"E","userId":"u","timestamp":"2026-11-26T11:59:00Z","context":{"location":{"latitude":123,"longitude":2}},"writeKey":"` + key + `"},
	{"type":"track","event":"E","userId":"u","writeKey":"` + key + `","writeKey":"x"}
	],"writeKey":"` + key + `"}`
	code, ans := post(t, srv.URL+"/v1/batch", "text/plain", body, false)
	if code != 200 || ans["dead_lettered"] != 4.0 {
		t.Fatalf("%d %v", code, ans)
	}
	if evs := b.events(t); len(evs) != 1 || strings.Contains(string(evs[0].Properties), key) {
		t.Errorf("events: %+v", evs)
	}
	for _, m := range b.msgs[broker.TopicDeadLetter] {
		d := envelope.ParseDeadLetter(m)
		if strings.Contains(string(d.Data), key) || strings.Contains(d.Reason, key) {
			t.Errorf("a dead letter holds the writeKey: %s (%s)", d.Data, d.Reason)
		}
		if d.Index == 1 && !strings.Contains(string(d.Data), `"userId":"u"`) {
			t.Errorf("the message of a dead letter is lost: %s", d.Data)
		}
	}
}
