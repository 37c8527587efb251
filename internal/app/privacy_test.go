package app

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/deadletter"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/webhook"
)

// Planted values: distinctive enough that a grep finds them only where
// they were copied.
const (
	plantedEmail  = "Planted.Person.7c1e@example.org"
	plantedPhone  = "+44 20 7946 0958"
	plantedCell   = "07700-900-417"
	plantedName   = "Zyxwvut Plantedname"
	plantedStreet = "17 Plantedstreet Row"
	plantedLat    = "51.5072843"
	plantedLon    = "-0.1275862"
)

// capture is a webhook target that keeps every body it is sent; fail makes
// it answer 400.
type capture struct {
	mu     sync.Mutex
	bodies [][]byte
	fail   bool
	srv    *httptest.Server
}

func newCapture(t *testing.T) *capture {
	c := &capture{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.bodies = append(c.bodies, b)
		if c.fail {
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *capture) all() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Join(c.bodies, []byte("\n"))
}

// openStream reads GET /v1/stream into a buffer.
func openStream(t *testing.T, base string) *syncBuf {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	}
	c := &syncBuf{}
	go func() {
		defer resp.Body.Close()
		io.Copy(c, bufio.NewReader(resp.Body))
	}()
	return c
}

func plantedEvent(id, user string, lat string) string {
	return plantedEventAt(id, user, lat, time.Now())
}

func plantedEventAt(id, user string, lat string, at time.Time) string {
	return fmt.Sprintf(`{"event_id":%q,"event_type":"user.signup","occurred_at":%q,`+
		`"user":{"id":%q,"name":%q,"email":%q,"phone":%q,"cell":%q,"birth_date":"1987-04-02"},`+
		`"location":{"latitude":%s,"longitude":%s,"street":%q,"city":"London","country":"United Kingdom","postcode":"SW1A 1AA"},`+
		`"attributes":{"plan":"pro"}}`,
		id, at.UTC().Format(time.RFC3339Nano), user, plantedName, plantedEmail, plantedPhone, plantedCell, lat, plantedLon, plantedStreet)
}

func post(t *testing.T, method, u, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func registerWebhook(t *testing.T, base, target string) webhook.Webhook {
	t.Helper()
	code, b := post(t, "POST", base+"/v1/webhooks", fmt.Sprintf(`{"url":%q,"secret":"0123456789abcdef0123","max_wait_ms":0,"allow_private":true}`, target))
	if code != 201 {
		t.Fatalf("register webhook: %d %s", code, b)
	}
	var w webhook.Webhook
	json.Unmarshal(b, &w)
	return w
}

func listRecords(t *testing.T, base, query string) []event.Record {
	t.Helper()
	resp, err := http.Get(base + "/v1/events?limit=1000&" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Events []event.Record `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	return page.Events
}

// dumpRowStore reads every record of the row store at dir (a Pebble
// database; its process stopped) through Pebble, which decompresses the
// blocks, and writes the keys and values to a file outside dir, whose path
// it returns.
func dumpRowStore(t *testing.T, dir string) string {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open the row store: %v", err)
	}
	defer db.Close()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	n := 0
	for it.First(); it.Valid(); it.Next() {
		b.Write(it.Key())
		b.WriteByte('\n')
		b.Write(it.Value())
		b.WriteByte('\n')
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("the row store is empty: the grep of its records proves nothing")
	}
	out := filepath.Join(t.TempDir(), "row-store-records")
	if err := os.WriteFile(out, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// grepFiles returns the paths of the files among paths that hold what.
func grepFiles(t *testing.T, what string, paths ...string) []string {
	t.Helper()
	var in []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(what)) {
			in = append(in, p)
		}
	}
	return in
}

// TestPIINeverInClear runs `up` with distinctive planted values (an e-mail,
// phone numbers, a name, a street, exact coordinates) and lets the records
// flow to DuckDB, a webhook target and a live-stream client; then it greps
// the DuckDB file, its WAL, the hot segments and every file of the row
// store (before the stop, and after it, when Close has checkpointed; then
// also the row store's records read through Pebble, whose tables are
// compressed), the webhook bodies and the stream for the planted values.
// With the default policy none is there; the positive control, with the
// policy set to keep, finds every one in each place, the row store
// included, so the grep is able to find them.
func TestPIINeverInClear(t *testing.T) {
	planted := []string{plantedEmail, strings.ToLower(plantedEmail), plantedPhone, plantedCell, plantedName, plantedStreet, plantedLat, plantedLon}
	// Coordinates are DOUBLE columns in DuckDB, not text: the file grep
	// cannot see them either way; the records read back from the store
	// show they are coarsened (below).
	notText := map[string]bool{plantedLat: true, plantedLon: true}
	for _, tc := range []struct {
		policy  string
		inClear bool
	}{{"default", false}, {"keep", true}} {
		t.Run(tc.policy, func(t *testing.T) {
			dir := t.TempDir()
			base, stop := startInProcess(t, upHooks{}, "--data-dir", dir, "--pii-policy", tc.policy)
			stopped := false
			defer func() {
				if !stopped {
					stop()
				}
			}()
			target := newCapture(t)
			registerWebhook(t, base, target.srv.URL)
			stream := openStream(t, base)
			const n = 20
			var events []string
			for i := range n {
				events = append(events, plantedEvent(fmt.Sprintf("pii-%d", i), fmt.Sprintf("user-%d", i%3), plantedLat))
			}
			if code, b := post(t, "POST", base+"/v1/events", "["+strings.Join(events, ",")+"]"); code != 202 {
				t.Fatalf("post: %d %s", code, b)
			}
			waitFor(t, func() bool { return len(listRecords(t, base, "")) == n })
			waitFor(t, func() bool { return strings.Count(string(target.all()), `"event_id"`) >= n })
			waitFor(t, func() bool { return strings.Count(stream.String(), "event: record") >= n })

			stored := listRecords(t, base, "")
			// The store's files: the database, its WAL, the hot segments
			// (and their WALs) the writer appends to, and every file of the
			// row store's directory (skyjoin.duckdb.rows/, Pebble: its WAL,
			// tables and manifest), which holds a JSON copy of each record.
			rowsDir := filepath.Join(dir, "skyjoin.duckdb.rows")
			storeFiles := func() []string {
				names, err := filepath.Glob(filepath.Join(dir, "skyjoin.duckdb*"))
				if err != nil {
					t.Fatal(err)
				}
				var files []string
				for _, name := range names {
					err := filepath.WalkDir(name, func(p string, d fs.DirEntry, err error) error {
						if err == nil && d.Type().IsRegular() {
							files = append(files, p)
						}
						return err
					})
					if err != nil && !errors.Is(err, fs.ErrNotExist) {
						t.Fatal(err)
					}
				}
				if !slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(f, rowsDir+string(filepath.Separator)) }) {
					t.Fatalf("no file of the row store in %s: %v", rowsDir, files)
				}
				return files
			}
			running := map[string][]string{}
			files := storeFiles()
			for _, v := range planted {
				running[v] = grepFiles(t, v, files...)
			}
			stop() // Close moves the segments into the file and checkpoints: the WAL is folded into it
			stopped = true
			// Pebble compresses its tables' blocks (snappy), in which a
			// value need not be in one piece: the row store's records are
			// also read back through Pebble, into a file the grep sees.
			files = append(storeFiles(), dumpRowStore(t, rowsDir))
			for _, v := range planted {
				places := map[string]bool{}
				inStore, inRows := false, false
				for _, f := range append(running[v], grepFiles(t, v, files...)...) {
					if rel, err := filepath.Rel(dir, f); err == nil && !strings.HasPrefix(rel, "..") {
						places[rel] = true
					} else {
						places["the row store's records, read through Pebble"] = true
					}
					inStore = true
					inRows = inRows || !strings.HasPrefix(f, dir+string(filepath.Separator)) || strings.HasPrefix(f, rowsDir+string(filepath.Separator))
				}
				if strings.Contains(string(target.all()), v) {
					places["webhook bodies"] = true
				}
				if strings.Contains(stream.String(), v) {
					places["live stream"] = true
				}
				if !tc.inClear && len(places) > 0 {
					t.Errorf("%q is in clear in %v", v, places)
				}
				if tc.inClear && v != strings.ToLower(plantedEmail) &&
					(!places["webhook bodies"] || !places["live stream"] || !notText[v] && !inStore || !inRows) {
					t.Errorf("positive control: %q found only in %v (the row store's too? %v): the grep cannot be trusted", v, places, inRows)
				}
			}
			if !tc.inClear {
				// The store's own records: coarsened coordinates.
				for _, r := range stored {
					if *r.Location.Latitude != 51.5 || *r.Location.Longitude != -0.1 || r.Weather == nil || r.Weather.CellLatitude != 51.5 && r.Weather.CellLatitude != 51.6 {
						t.Fatalf("stored record %s at %v,%v, weather %+v", r.EventID, *r.Location.Latitude, *r.Location.Longitude, r.Weather)
					}
				}
				// What the policy left: hashes that still group a person's
				// events, a coarse place, the year of birth.
				var recs []event.Record
				for line := range strings.Lines(stream.String()) {
					if d, ok := strings.CutPrefix(line, "data: "); ok {
						var r event.Record
						if json.Unmarshal([]byte(d), &r) == nil && r.EventID != "" {
							recs = append(recs, r)
						}
					}
				}
				r := recs[0]
				if !strings.HasPrefix(r.User.Email, pii.HashPrefix) || r.User.Name != "" || r.User.BirthDate != "1987" ||
					*r.Location.Latitude != 51.5 || *r.Location.Longitude != -0.1 || r.Location.Street != "" || r.Location.Postcode != "SW1" {
					t.Errorf("stored record: %+v %+v", r.User, r.Location)
				}
				for _, o := range recs {
					if o.User.Email != r.User.Email {
						t.Errorf("one address hashes to %s and %s", r.User.Email, o.User.Email)
					}
				}
			}
		})
	}
}

// TestPIIKeyRequiredBeyondLoopback: a policy that hashes needs --pii-key
// once the process listens beyond loopback (the development key is
// public); a policy that does not hash, or a key, lets it start.
func TestPIIKeyRequiredBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--addr", "0.0.0.0:0"}, false},
		{[]string{"--addr", "[::]:0", "--pii-policy", "keep,user.email=hash"}, false},
		{[]string{"--addr", "0.0.0.0:0", "--pii-key", "env://SKYJOIN_TEST_PII_KEY"}, true},
		{[]string{"--addr", "0.0.0.0:0", "--pii-policy", "keep,user.name=drop"}, true},
		{[]string{"--addr", "127.0.0.1:0"}, true},
		{[]string{"--addr", "localhost:0"}, true},
		{[]string{"--pii-policy", "user.id=drop"}, false},
	} {
		cfg := newConfig("enrich")
		fs, stages, _ := stageFlagSet(findStageCommand("enrich"), cfg, io.Discard)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := validateStages(cfg, stages)
		if (err == nil) != tc.ok {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
}

// logEntries returns the JSON log lines of log with the message msg.
func logEntries(log *syncBuf, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(log.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestEraseUser runs `up` with a policy that also hashes user ids, stores
// records of a user and of others, dead-letters one event of each and
// fails webhook deliveries of both into the failure list; then DELETE
// /v1/users/{id} (the id as sent) removes the user's records from the
// store, the dead letters and the failure list, leaves the others', and
// the audit trail has the erasure. Reads and the stream are audited too.
func TestEraseUser(t *testing.T) {
	logs := &syncBuf{}
	// Only errors and the audit trail, which is written whatever the level.
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelError}))
	base, stop := startInProcessLog(t, upHooks{}, io.Discard, log, "--pii-policy", "default,user.id=hash", "--webhook-max-attempts", "1",
		"--ingest-max-clock-skew", "1h", "--enrich-max-clock-skew", "0s")
	defer stop()
	target := newCapture(t)
	target.fail = true
	wh := registerWebhook(t, base, target.srv.URL)

	var events []string
	for i := range 6 {
		user := "victim-1"
		if i%2 == 1 {
			user = "other-2"
		}
		events = append(events, plantedEvent(fmt.Sprintf("er-%d", i), user, plantedLat))
	}
	// Dead letters: an event of each half an hour ahead, which ingest
	// takes and the worker, allowed no clock skew, refuses.
	future := time.Now().Add(30 * time.Minute)
	events = append(events, plantedEventAt("er-dl-1", "victim-1", plantedLat, future), plantedEventAt("er-dl-2", "other-2", plantedLat, future))
	body := strings.Join(events, ",")
	if code, b := post(t, "POST", base+"/v1/events", "["+body+"]"); code != 202 {
		t.Fatalf("post: %d %s", code, b)
	}
	waitFor(t, func() bool { return len(listRecords(t, base, "")) == 6 })
	waitFor(t, func() bool {
		_, b := post(t, "GET", base+"/v1/deadletters", "")
		return strings.Count(string(b), `"stage":"validate"`) == 2
	})
	var failures []webhook.Failure
	waitFor(t, func() bool {
		_, b := post(t, "GET", base+"/v1/webhooks/"+wh.ID+"/failures", "")
		var fb struct {
			Failures []webhook.Failure `json:"failures"`
		}
		json.Unmarshal(b, &fb)
		failures = fb.Failures
		n := 0
		for _, f := range failures {
			n += f.Count
		}
		return n == 6
	})
	p := mustPolicy(t, "default,user.id=hash")
	victim, other := p.UserID("victim-1"), p.UserID("other-2")
	if got := listRecords(t, base, "user_id="+url.QueryEscape(victim)); len(got) != 3 {
		t.Fatalf("%d records of the victim's hashed id before the erasure, want 3", len(got))
	}

	code, b := post(t, "DELETE", base+"/v1/users/victim-1", "")
	if code != 200 {
		t.Fatalf("erase: %d %s", code, b)
	}
	var res struct {
		Records         int64             `json:"records"`
		WebhookFailures webhook.Erased    `json:"webhook_failures"`
		DeadLetters     deadletter.Erased `json:"dead_letters"`
	}
	json.Unmarshal(b, &res)
	if res.Records != 3 || res.WebhookFailures.Records != 3 {
		t.Errorf("erased %s", b)
	}
	if got := listRecords(t, base, "user_id="+url.QueryEscape(victim)); len(got) != 0 {
		t.Errorf("%d records of the victim left", len(got))
	}
	if got := listRecords(t, base, "user_id="+url.QueryEscape(other)); len(got) != 3 {
		t.Errorf("%d records of the other user left, want 3", len(got))
	}
	_, fb := post(t, "GET", base+"/v1/webhooks/"+wh.ID+"/failures", "")
	if !strings.Contains(string(fb), `"event_ids":["er-1","er-3","er-5"]`) || strings.Contains(string(fb), `"er-0"`) {
		t.Errorf("failures after the erasure: %s", fb)
	}
	if res.DeadLetters != (deadletter.Erased{Deleted: 1, Events: 1}) {
		t.Errorf("dead letters: %+v", res.DeadLetters)
	}
	_, dl := post(t, "GET", base+"/v1/deadletters", "")
	if strings.Contains(string(dl), "victim-1") || !strings.Contains(string(dl), "other-2") || !strings.Contains(string(dl), "er-dl-2") {
		t.Errorf("dead letters after the erasure: %s", dl)
	}

	// The audit trail: the erasure, who and what (the id as the store
	// holds it), and the reads before it.
	var erasure map[string]any
	for _, e := range logEntries(logs, "audit") {
		if e["route"] == "DELETE /v1/users/{id}" {
			erasure = e
		}
	}
	if erasure == nil {
		t.Fatalf("no audit entry of the erasure in %v", logEntries(logs, "audit"))
	}
	params, _ := erasure["params"].(map[string]any)
	if erasure["principal"] != "anonymous" || erasure["status"] != float64(200) || params["id"] != victim || erasure["audit"] != true {
		t.Errorf("audit entry of the erasure: %v", erasure)
	}
	reads := 0
	for _, e := range logEntries(logs, "audit") {
		if e["route"] == "GET /v1/events" {
			reads++
		}
	}
	if reads == 0 {
		t.Error("no audit entry of the reads")
	}
	if strings.Contains(logs.String(), `"victim-1"`) {
		t.Error("the raw user id is in the logs, though the policy hashes user ids")
	}
}

func mustPolicy(t *testing.T, spec string) *pii.Policy {
	t.Helper()
	s, err := pii.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pii.New(s, []byte(devPIIKey))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRetention: with --retention the process that writes the store
// deletes the records whose occurred_at is older, now and then; recent
// ones stay, whenever they were ingested.
func TestRetention(t *testing.T) {
	base, stop := startInProcess(t, upHooks{}, "--retention", "30d", "--retention-interval", "100ms")
	defer stop()
	now := time.Now()
	events := []string{
		plantedEventAt("old-1", "u-1", plantedLat, now.AddDate(0, 0, -40)),
		plantedEventAt("old-2", "u-2", plantedLat, now.AddDate(0, 0, -31)),
		plantedEventAt("new-1", "u-1", plantedLat, now.AddDate(0, 0, -29)),
		plantedEventAt("new-2", "u-2", plantedLat, now),
	}
	if code, b := post(t, "POST", base+"/v1/events", "["+strings.Join(events, ",")+"]"); code != 202 {
		t.Fatalf("post: %d %s", code, b)
	}
	waitFor(t, func() bool { n, _ := storedCount(t, base); return n == 4 })
	var ids []string
	waitFor(t, func() bool {
		ids = ids[:0]
		for _, r := range listRecords(t, base, "") {
			ids = append(ids, r.EventID)
		}
		return len(ids) == 2
	})
	if strings.Join(ids, ",") != "new-2,new-1" {
		t.Errorf("left %v, want new-2,new-1", ids)
	}
}
