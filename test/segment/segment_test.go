// Package segment drives skyjoin's Segment-compatible endpoint with an
// official tracker library, @segment/analytics-node (pinned in
// node/package-lock.json), against the real binary: `skyjoin up --demo`.
// It needs node and npm; without them it is skipped, saying so.
package segment

import (
	"bytes"
	"fmt"
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

// npmCI installs the pinned library into node/node_modules.
func npmCI(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: this test runs @segment/analytics-node, which needs node and npm", tool)
		}
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = "node"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in test/segment/node: %v\n%s", err, out)
	}
}

// TestAnalyticsNode: track and identify calls with typed properties and
// context.location, sent by the official Node.js library, are each stored
// once, enriched with weather; an event without a location is stored with
// status no_location.
func TestAnalyticsNode(t *testing.T) {
	npmCI(t)
	_, base := testbin.StartAPI(t, binary, "up", "--demo", "--collect=false", "--addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--stats-every", "0", "--log-level", "warn")

	run := fmt.Sprintf("run%d", time.Now().UnixNano())
	cmd := exec.Command("node", "send.mjs", base, "", run)
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

	hc := &http.Client{Timeout: 10 * time.Second}
	var recs []event.Record
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		recs = testbin.List[event.Record](t, hc, base)
		if len(recs) >= sent.Sent {
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would be stored by now
	recs = testbin.List[event.Record](t, hc, base)
	count := map[string]int{}
	byID := map[string]event.Record{}
	for _, r := range recs {
		count[r.EventID]++
		byID[r.EventID] = r
	}
	want := []string{run + "-track-0", run + "-track-1", run + "-track-2", run + "-track-3", run + "-identify-0", run + "-nolocation-0"}
	if len(recs) != len(want) {
		t.Errorf("%d records stored, want %d: %v", len(recs), len(want), count)
	}
	for _, id := range want {
		if count[id] != 1 {
			t.Errorf("%s stored %d times", id, count[id])
		}
	}
	for i := range 4 {
		r := byID[fmt.Sprintf("%s-track-%d", run, i)]
		if r.EventType != "Order Completed" || r.User.ID != fmt.Sprintf("user-%d", i) || r.Weather == nil ||
			r.Enrichment.Status != event.StatusEnriched || !r.Location.HasCoordinates() || r.Location.City == "" {
			t.Errorf("track %d: %+v", i, r)
		}
	}
	id := byID[run+"-identify-0"]
	// The traits became user fields, then the default PII policy applied
	// (the e-mail address hashed; see docs/data.md).
	if id.EventType != "identify" || !strings.HasPrefix(id.User.Email, "h1:") || id.Weather == nil {
		t.Errorf("identify: %+v", id)
	}
	nl := byID[run+"-nolocation-0"]
	if nl.EventType != "Page Scrolled" || nl.User.ID != "anon-1" || nl.Enrichment.Status != event.StatusNoLocation || nl.Weather != nil {
		t.Errorf("no location: %+v", nl)
	}
	// Properties come back as sent, typed and nested.
	p := byID[run+"-track-1"].Properties
	var props map[string]any
	if err := json.Unmarshal(p, &props); err != nil || props["amount"] != 13.5 || props["paid"] != false ||
		!strings.Contains(string(p), `"shipping":{"days":2,"express":false}`) {
		t.Errorf("properties of a stored track call: %s", p)
	}
	if strings.Contains(os.Getenv("SKYJOIN_SEGMENT_DEBUG"), "1") {
		t.Logf("records: %+v", recs)
	}
}
