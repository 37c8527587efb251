package ingest

import (
	"flag"
	"io"
	"net/http"
	"strings"
	"testing"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// postQuery posts body to POST /v1/events with a query string.
func postQuery(t *testing.T, url, query, body string) (int, platform.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/events"+query, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, eb := do(t, req)
	return resp.StatusCode, eb
}

// TestUnknownFields: an unknown top-level field is refused by name unless
// the request (?unknown_fields=properties) or the process
// (--ingest-unknown-fields=properties) opts in; then it is moved into
// properties, in the broker message itself, so the worker's strict decoder
// reads it there.
func TestUnknownFields(t *testing.T) {
	const head = `"event_type":"order.completed","occurred_at":"2026-11-26T11:59:00Z","user":{"id":"u"},"location":{"latitude":1,"longitude":2}`
	withUnknown := `{"event_id":"a",` + head + `,"amount":12.5,"items":["a","b"],"properties":{"currency":"EUR"}}`
	plain := `{"event_id":"b",` + head + `}`
	clash := `{"event_id":"c",` + head + `,"currency":"USD","properties":{"currency":"EUR"}}`
	huge := `{"event_id":"d",` + head + `,"blob":"` + strings.Repeat("x", event.PropertiesMaxBytes) + `"}`

	t.Run("refused by default", func(t *testing.T) {
		rec := &recorder{}
		srv := newServer(t, rec, nil)
		status, eb := postQuery(t, srv.URL, "", "["+plain+","+withUnknown+"]")
		if status != http.StatusBadRequest || !strings.Contains(string(mustJSON(t, eb.Error.Details)), `"field":"amount"`) {
			t.Fatalf("%d %+v", status, eb)
		}
		if len(rec.msgs) != 0 {
			t.Fatal("published")
		}
	})

	moved := func(t *testing.T, rec *recorder) {
		t.Helper()
		if len(rec.msgs) != 1 {
			t.Fatalf("%d messages", len(rec.msgs))
		}
		// The worker's decoder is the strict one: the fields arrive in properties.
		got, err := envelope.DecodeEvents(rec.msgs[0])
		if err != nil || len(got.Events) != 2 {
			t.Fatalf("%+v %v", got, err)
		}
		for _, d := range got.Events {
			if len(d.Errors) > 0 {
				t.Fatalf("the worker refuses %s: %+v", d.Raw, d.Errors)
			}
		}
		if p := string(got.Events[0].Event.Properties); p != "" {
			t.Errorf("event without unknown fields got properties %s", p)
		}
		if p := string(got.Events[1].Event.Properties); p != `{"currency":"EUR","amount":12.5,"items":["a","b"]}` {
			t.Errorf("properties %s", p)
		}
	}
	t.Run("moved on request", func(t *testing.T) {
		rec := &recorder{}
		srv := newServer(t, rec, nil)
		if status, eb := postQuery(t, srv.URL, "?unknown_fields=properties", "["+plain+","+withUnknown+"]"); status != http.StatusAccepted {
			t.Fatalf("%d %+v", status, eb)
		}
		moved(t, rec)
	})
	t.Run("moved by the process default", func(t *testing.T) {
		rec := &recorder{}
		srv := newServer(t, rec, func(c *Config) { c.UnknownFields = event.UnknownToProperties })
		if status, eb := postQuery(t, srv.URL, "", "["+plain+","+withUnknown+"]"); status != http.StatusAccepted {
			t.Fatalf("%d %+v", status, eb)
		}
		moved(t, rec)
		// A request may still ask to be refused.
		if status, eb := postQuery(t, srv.URL, "?unknown_fields=refuse", withUnknown); status != http.StatusBadRequest || !strings.Contains(eb.Error.Message, "amount") {
			t.Fatalf("%d %+v", status, eb)
		}
	})

	for _, tc := range []struct {
		name, query, body, want string
	}{
		{"clash with a property", "?unknown_fields=properties", "[" + plain + "," + clash + "]", `"field":"currency","index":1,"message":"is not a field of the event schema and cannot be moved into properties: properties already has \"currency\"`},
		{"bounds after the move", "?unknown_fields=properties", huge, "properties: must be at most 16384 bytes"},
		{"case variant of a field", "?unknown_fields=properties", `{"event_id":"e",` + head + `,"Event_Type":"x"}`, `did you mean "event_type"`},
		{"bad mode", "?unknown_fields=drop", plain, `unknown_fields: must be one of refuse, properties, got "drop"`},
		{"mode twice", "?unknown_fields=properties&unknown_fields=refuse", plain, "unknown_fields: is given more than once"},
		{"unknown parameter", "?unknown=properties", plain, "unknown: unknown parameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			srv := newServer(t, rec, nil)
			status, eb := postQuery(t, srv.URL, tc.query, tc.body)
			msg := eb.Error.Message + " " + string(mustJSON(t, eb.Error.Details))
			if status != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
				t.Fatalf("%d %s, want 400 with %q", status, msg, tc.want)
			}
			if len(rec.msgs) != 0 {
				t.Fatal("published")
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnknownFieldsFlag(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if c.UnknownFields != event.UnknownRefuse {
		t.Fatal("the default is not refuse")
	}
	if err := fs.Parse([]string{"--ingest-unknown-fields=properties"}); err != nil || c.UnknownFields != event.UnknownToProperties {
		t.Fatalf("%v %v", err, c.UnknownFields)
	}
	if err := fs.Parse([]string{"--ingest-unknown-fields=drop"}); err == nil {
		t.Fatal("drop accepted")
	}
}
