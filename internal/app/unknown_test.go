package app

import (
	"io"
	"net/http"
	"strings"
	"testing"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
)

// TestUnknownFieldsIntoProperties: with --ingest-unknown-fields=properties
// (or ?unknown_fields=properties), unknown top-level fields travel through
// the broker inside properties, the worker's strict decoder takes them, and
// the stored record has them; a request may still ask to be refused.
func TestUnknownFieldsIntoProperties(t *testing.T) {
	base, stop := startInProcess(t, upHooks{}, "--ingest-unknown-fields", "properties")
	defer stop()
	post := func(query, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+"/v1/events"+query, "application/x-ndjson", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	withUnknown := func(id string) string {
		return strings.TrimSuffix(strictEvent(id, "Spain"), "}") + `,"amount":12.5,"items":["a","b"],"properties":{"currency":"EUR"}}`
	}
	if status, b := post("", withUnknown("uf-1")+"\n"+strictEvent("uf-2", "Spain")+"\n"); status != http.StatusAccepted {
		t.Fatalf("process default: %d %s", status, b)
	}
	if status, b := post("?unknown_fields=properties", withUnknown("uf-3")); status != http.StatusAccepted {
		t.Fatalf("on request: %d %s", status, b)
	}
	if status, b := post("?unknown_fields=refuse", withUnknown("uf-4")); status != http.StatusBadRequest || !strings.Contains(b, `"field":"amount"`) {
		t.Fatalf("refused on request: %d %s", status, b)
	}
	waitFor(t, func() bool { n, _ := storedCount(t, base); return n >= 3 })
	if _, dead := storedCount(t, base); dead != 0 {
		t.Fatalf("%d dead letters: the worker refused the rewritten events", dead)
	}
	for id, want := range map[string]string{
		"uf-1": `{"amount":12.5,"currency":"EUR","items":["a","b"]}`,
		"uf-3": `{"amount":12.5,"currency":"EUR","items":["a","b"]}`,
		"uf-2": ``,
	} {
		resp, err := http.Get(base + "/v1/events/" + id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var rec event.Record
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &rec) != nil {
			t.Fatalf("%s: %d %s", id, resp.StatusCode, b)
		}
		if got := canonical(t, rec.Properties); got != canonical(t, []byte(want)) {
			t.Errorf("%s: stored properties %s, want %s", id, rec.Properties, want)
		}
	}
}

// canonical is a JSON value with its object members in order ("" for none).
func canonical(t *testing.T, b []byte) string {
	t.Helper()
	if len(b) == 0 || string(b) == "null" {
		return ""
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}
