// Package segment drives skyjoin's Segment-compatible endpoint against the
// real binary, `skyjoin up --demo` with auth on: with an official tracker
// library, @segment/analytics-node (pinned in node/package-lock.json),
// which sends its writeKey as HTTP Basic auth; and as browser trackers
// do, with the writeKey in the body. The library needs node and npm:
// without them TestAnalyticsNode is skipped, saying so, except where the
// environment variable CI is set (CI runs `CI=true bash .ci/run`): there
// it fails, so that CI cannot pass without it.
package segment

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/test/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// inCI reports whether the environment variable CI says this is CI.
func inCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// npmCI installs the pinned library into node/node_modules.
func npmCI(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("%s is not installed: this test runs @segment/analytics-node, which needs node and npm", tool)
			if inCI() {
				t.Fatalf("%s; CI is set (CI=%s), where it must run: install node and npm", msg, os.Getenv("CI"))
			}
			t.Skip(msg)
		}
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = "node"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in test/segment/node: %v\n%s", err, out)
	}
}

// key runs `skyjoin keys create --scope SCOPE --json` on a data dir no
// process holds yet, and returns the key's token.
func key(t *testing.T, dataDir, scope string) string {
	t.Helper()
	cmd := exec.Command(binary, "keys", "create", "--scope", scope, "--name", "test-"+scope, "--data-dir", dataDir, "--json")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("skyjoin keys create --scope %s: %v\n%s", scope, err, errOut.String())
	}
	var k struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(out.Bytes(), &k); err != nil || k.Token == "" {
		t.Fatalf("skyjoin keys create: %v: %s", err, out.String())
	}
	return k.Token
}

// server is `skyjoin up --demo` with auth on, and its keys.
type server struct {
	proc                *testbin.Proc
	base                string
	ingest, read, admin string
	readClient, adminHC *http.Client
}

func startAuthed(t *testing.T) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{ingest: key(t, dir, "ingest"), read: key(t, dir, "read"), admin: key(t, dir, "admin")}
	s.proc, s.base = testbin.StartAPI(t, binary, "up", "--demo", "--collect=false", "--addr", "127.0.0.1:0", "--auth=on",
		"--data-dir", dir, "--stats-every", "0", "--log-level", "debug")
	s.readClient = &http.Client{Timeout: 10 * time.Second, Transport: bearer{s.read}}
	s.adminHC = &http.Client{Timeout: 10 * time.Second, Transport: bearer{s.admin}}
	return s
}

// bearer adds Authorization: Bearer to each request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// records waits until n records are stored (or 30 s), then a little longer
// (a duplicate would be stored by then), and returns them by event id,
// with the count of each id.
func (s *server) records(t *testing.T, n int) (map[string]event.Record, map[string]int, []byte) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if len(testbin.List[event.Record](t, s.readClient, s.base)) >= n {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	var raws []json.RawMessage
	testbin.ListEach(t, s.readClient, s.base, func(r json.RawMessage) { raws = append(raws, r) })
	byID, count := map[string]event.Record{}, map[string]int{}
	for _, raw := range raws {
		var r event.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		count[r.EventID]++
		byID[r.EventID] = r
	}
	all, _ := json.Marshal(raws)
	return byID, count, all
}

// TestAnalyticsNode: track and identify calls with typed properties and
// context.location, sent by the official Node.js library with its
// writeKey (an API key of scope ingest, as Basic auth), are each stored
// once, enriched with weather, as the mapping says (docs/segment.md) and
// as the default PII policy leaves them; an event without a location is
// stored with status no_location.
func TestAnalyticsNode(t *testing.T) {
	npmCI(t)
	s := startAuthed(t)

	run := fmt.Sprintf("run%d", time.Now().UnixNano())
	cmd := exec.Command("node", "send.mjs", s.base, s.ingest, run)
	cmd.Dir = "node"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node send.mjs: %v\n%s", err, stderr.String())
	}
	var sent struct {
		Sent   int      `json:"sent"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &sent); err != nil || len(sent.Errors) > 0 {
		t.Fatalf("the library reports %s (%v)\n%s", out, err, stderr.String())
	}

	byID, count, all := s.records(t, sent.Sent)
	want := []string{run + "-track-0", run + "-track-1", run + "-track-2", run + "-track-3", run + "-identify-0", run + "-nolocation-0"}
	if len(byID) != len(want) {
		t.Errorf("%d records stored, want %d: %v", len(byID), len(want), count)
	}
	for _, id := range want {
		if count[id] != 1 {
			t.Errorf("%s stored %d times", id, count[id])
		}
	}
	// Nothing personal in clear, anywhere in the stored records: the
	// traits that became user fields, the exact coordinates, the IP
	// address; nor the writeKey.
	for _, clear := range []string{"ann@example.com", `"Ann"`, `"Lee"`, "+33 1 23 45 67 89", "1 Rue de Rivoli", "203.0.113.9",
		`"latitude":48.85`, `"latitude":52.52`, `"longitude":2.35`, `"longitude":13.41`, s.ingest} {
		if bytes.Contains(all, []byte(clear)) {
			t.Errorf("%s in clear in the stored records", clear)
		}
	}

	cities := []string{"Paris", "Berlin"}
	for i := range 4 {
		r := byID[fmt.Sprintf("%s-track-%d", run, i)]
		if r.EventType != "Order Completed" || r.User.ID != fmt.Sprintf("user-%d", i) || r.Weather == nil ||
			r.Enrichment.Status != event.StatusEnriched || !r.Location.HasCoordinates() || r.Location.City != cities[i%2] {
			t.Errorf("track %d: %+v", i, r)
		}
		// Properties come back as sent, typed and nested; the message's
		// own fields in _segment, as the default policy leaves them.
		var p struct {
			Amount   float64 `json:"amount"`
			Items    []any   `json:"items"`
			Paid     *bool   `json:"paid"`
			Shipping *struct {
				Days    float64 `json:"days"`
				Express *bool   `json:"express"`
			} `json:"shipping"`
			Segment struct {
				MessageID string `json:"messageId"`
				Context   struct {
					IP       string         `json:"ip"`
					Location map[string]any `json:"location"`
					Library  map[string]any `json:"library"`
				} `json:"context"`
			} `json:"_segment"`
		}
		if err := json.Unmarshal(r.Properties, &p); err != nil || p.Amount != 12.5+float64(i) || len(p.Items) != 2 || p.Items[0] != "a" ||
			p.Paid == nil || *p.Paid != (i%2 == 0) || p.Shipping == nil || p.Shipping.Days != 2 || p.Shipping.Express == nil || *p.Shipping.Express {
			t.Errorf("properties of track %d: %s (%v)", i, r.Properties, err)
		}
		if p.Segment.MessageID != r.EventID || !strings.HasPrefix(p.Segment.Context.IP, "h1:") || p.Segment.Context.Library["name"] != "@segment/analytics-node" ||
			p.Segment.Context.Location["city"] != cities[i%2] || p.Segment.Context.Location["latitude"] != nil {
			t.Errorf("_segment of track %d: %s", i, r.Properties)
		}
	}

	id := byID[run+"-identify-0"]
	// The traits that are user fields became user fields, then the
	// default PII policy applied (e-mail and phone hashed, names dropped;
	// docs/data.md); the others are properties, typed as sent; the address
	// (personal, no user field) went to _segment.traits, which the policy
	// drops.
	if id.EventType != "identify" || id.User.ID != "user-0" || !strings.HasPrefix(id.User.Email, "h1:") || !strings.HasPrefix(id.User.Phone, "h1:") ||
		id.User.FirstName != "" || id.User.LastName != "" || id.Weather == nil || id.Enrichment.Status != event.StatusEnriched || id.Location.City != "Paris" {
		t.Errorf("identify: %+v", id)
	}
	var traits map[string]any
	if err := json.Unmarshal(id.Properties, &traits); err != nil || traits["plan"] != "pro" || traits["logins"] != 3.0 || traits["beta"] != true {
		t.Errorf("identify's traits in properties: %s", id.Properties)
	}
	for _, name := range []string{"email", "firstName", "lastName", "phone", "address"} {
		if _, ok := traits[name]; ok {
			t.Errorf("identify's trait %s is in properties: %s", name, id.Properties)
		}
	}
	if seg, _ := traits["_segment"].(map[string]any); seg == nil || seg["traits"] != nil || seg["userId"] != "user-0" {
		t.Errorf("identify's _segment: %s", id.Properties)
	}

	nl := byID[run+"-nolocation-0"]
	var depth struct {
		Depth float64 `json:"depth"`
	}
	if nl.EventType != "Page Scrolled" || nl.User.ID != "anon-1" || nl.Enrichment.Status != event.StatusNoLocation || nl.Weather != nil ||
		json.Unmarshal(nl.Properties, &depth) != nil || depth.Depth != 0.75 {
		t.Errorf("no location: %+v %s", nl, nl.Properties)
	}
	if strings.Contains(s.proc.Logs(), s.ingest) {
		t.Errorf("the writeKey is in the logs")
	}
}

// TestWriteKey: with auth on, the writeKey is taken as HTTP Basic auth
// (what Segment's server libraries send) and, without an Authorization
// header, from the body (what browser trackers send: analytics.js, with
// Content-Type text/plain), batch and single calls; a wrong writeKey is a
// 401, a key without the ingest scope a 403. The writeKey is in no stored
// record, no dead letter and no log.
func TestWriteKey(t *testing.T) {
	s := startAuthed(t)
	post := func(path, basicUser, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		if basicUser != "" {
			req.SetBasicAuth(basicUser, "")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ts := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	msg := func(id, writeKey string) string {
		m := `{"type":"track","event":"Order Completed","messageId":"` + id + `","userId":"u","timestamp":"` + ts +
			`","properties":{"amount":12.5},"context":{"location":{"latitude":48.85,"longitude":2.35}}`
		if writeKey != "" {
			m += `,"writeKey":"` + writeKey + `"`
		}
		return m + "}"
	}
	batch := func(writeKey string, msgs ...string) string {
		return `{"batch":[` + strings.Join(msgs, ",") + `],"writeKey":"` + writeKey + `","sentAt":"` + ts + `"}`
	}
	bad := `{"type":"track","userId":"u","messageId":"wk-bad","writeKey":"` + s.ingest + `"}` // no event: a dead letter
	for _, c := range []struct {
		name, path, basic, body string
		want                    int
	}{
		{"Basic auth", "/v1/batch", s.ingest, `{"batch":[` + msg("wk-basic", "") + `]}`, 200},
		{"the body's writeKey, batch", "/v1/batch", "", batch(s.ingest, msg("wk-body-batch", s.ingest), bad), 200},
		{"the body's writeKey, single call", "/v1/track", "", msg("wk-body-track", s.ingest), 200},
		{"a wrong writeKey in the body", "/v1/batch", "", batch("sk_wrong0wrong0wrong0wrong0wrong0", msg("wk-wrong", "")), 401},
		{"a wrong writeKey as Basic auth", "/v1/batch", "sk_wrong0wrong0wrong0wrong0wrong0", batch("", msg("wk-wrong-basic", "")), 401},
		{"no writeKey", "/v1/track", "", msg("wk-none", ""), 401},
		{"a key without the ingest scope in the body", "/v1/batch", "", batch(s.read, msg("wk-read", "")), 403},
		{"a key without the ingest scope as Basic auth", "/v1/track", s.read, msg("wk-read-basic", ""), 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := post(c.path, c.basic, c.body)
			if code != c.want {
				t.Errorf("%d %s, want %d", code, body, c.want)
			}
			if strings.Contains(body, s.ingest) || strings.Contains(body, s.read) {
				t.Errorf("the answer holds a key: %s", body)
			}
		})
	}

	byID, count, all := s.records(t, 3)
	for _, id := range []string{"wk-basic", "wk-body-batch", "wk-body-track"} {
		if count[id] != 1 || byID[id].Enrichment.Status != event.StatusEnriched {
			t.Errorf("%s stored %d times: %+v", id, count[id], byID[id])
		}
	}
	if len(byID) != 3 {
		t.Errorf("%d records stored, want 3: %v", len(byID), count)
	}
	resp, err := s.adminHC.Get(s.base + "/v1/deadletters")
	if err != nil {
		t.Fatal(err)
	}
	dead, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(dead, []byte("event: is required")) {
		t.Errorf("GET /v1/deadletters: %d %s", resp.StatusCode, dead)
	}
	for what, b := range map[string][]byte{"the stored records": all, "the dead letters": dead, "the logs": []byte(s.proc.Logs())} {
		for _, k := range []string{s.ingest, s.read} {
			if bytes.Contains(b, []byte(k)) {
				t.Errorf("a key is in %s", what)
			}
		}
	}
}
