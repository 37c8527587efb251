package deadletter

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/jetstream"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
)

func openBroker(t *testing.T) *jetstream.Broker {
	t.Helper()
	return openBrokerIn(t, t.TempDir())
}

func openBrokerIn(t *testing.T, dir string) *jetstream.Broker {
	t.Helper()
	b, err := jetstream.Open(context.Background(), jetstream.Config{URL: "nats://embedded", DataDir: dir}, platform.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func deadLetter(i int, stage, reason string) *broker.Message {
	return &broker.Message{
		Data: []byte(fmt.Sprintf(`{"event_id":"dl-%d"}`, i)),
		Attributes: map[string]string{
			envelope.AttrContentType: event.ContentTypeJSON, envelope.AttrIngestedAt: "2026-11-26T10:00:00Z",
			envelope.AttrStage: stage, envelope.AttrReason: reason, envelope.AttrAttempts: "1",
			envelope.AttrOriginalIndex: "0", envelope.AttrFailedAt: time.Date(2026, 11, 26, 10, i, 0, 0, time.UTC).Format(time.RFC3339Nano),
		},
	}
}

func TestListAndReplay(t *testing.T) {
	ctx := context.Background()
	b := openBroker(t)
	sub, err := b.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*broker.Message
	for i := range 6 {
		stage, reason := "validate", "location.latitude: must be between -90 and 90"
		if i%2 == 1 {
			stage, reason = "decode", "invalid JSON"
		}
		msgs = append(msgs, deadLetter(i, stage, reason))
	}
	msgs = append(msgs, &broker.Message{Data: []byte("not json"), Attributes: map[string]string{envelope.AttrStage: "decode"}})
	if err := b.Publish(ctx, broker.TopicDeadLetter, msgs...); err != nil {
		t.Fatal(err)
	}

	all, err := List(ctx, b, Filter{})
	if err != nil || len(all) != 7 {
		t.Fatalf("List: %d entries, %v", len(all), err)
	}
	if all[0].Stage != "validate" || all[0].Index != 0 || all[0].Attempts != 1 || string(all[0].Data) != `{"event_id":"dl-0"}` {
		t.Errorf("first entry %+v", all[0])
	}
	if all[6].Text != "not json" || all[6].Data != nil {
		t.Errorf("non-JSON entry %+v", all[6])
	}
	for _, tt := range []struct {
		f    Filter
		want int
	}{
		{Filter{Stage: "validate"}, 3},
		{Filter{ReasonContains: "LATITUDE"}, 3},
		{Filter{Since: time.Date(2026, 11, 26, 10, 4, 0, 0, time.UTC)}, 2},
		{Filter{Limit: 2}, 2},
		{Filter{IDs: []string{all[1].ID, all[2].ID}}, 2},
	} {
		got, err := List(ctx, b, tt.f)
		if err != nil || len(got) != tt.want {
			t.Errorf("List(%+v): %d, %v; want %d", tt.f, len(got), err, tt.want)
		}
	}

	// Replay the validate ones: they go back to the events topic, without
	// the dl_ attributes, and leave the dead-letter topic.
	n, _, err := Replay(ctx, b, Filter{Stage: "validate"})
	if err != nil || n != 3 {
		t.Fatalf("Replay: %d, %v", n, err)
	}
	got, err := sub.Fetch(ctx, 10, 5*time.Second)
	if err != nil || len(got) != 3 {
		t.Fatalf("events topic has %d messages, %v", len(got), err)
	}
	ids := map[string]bool{}
	for _, m := range got {
		if m.Attributes[envelope.AttrSource] != "replay" || m.Attributes[envelope.AttrReason] != "" || m.Attributes[envelope.AttrContentType] != event.ContentTypeJSON {
			t.Errorf("replayed attributes %v", m.Attributes)
		}
		ids[m.Attributes[envelope.AttrMessageID]] = true
		if in, err := envelope.DecodeEvents(m); err != nil || len(in.Events) != 1 || in.Source != envelope.SourceReplay {
			t.Errorf("replayed message decodes to %+v, %v", in, err)
		}
	}
	if len(ids) != 3 || ids[""] {
		t.Errorf("replayed message ids %v, want 3 distinct", ids)
	}
	left, _ := List(ctx, b, Filter{})
	if len(left) != 4 {
		t.Errorf("%d dead letters left, want 4", len(left))
	}
}

// TestReplayKeepsWhatCannotReplay: a dead letter marked not replayable (a
// Segment message that could not be mapped, kept as sent) is counted and
// kept by a replay that selects it; the others of the selection replay.
func TestReplayKeepsWhatCannotReplay(t *testing.T) {
	ctx := context.Background()
	b := openBroker(t)
	sub, err := b.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	asSent := deadLetter(1, "segment", "event: is required")
	asSent.Data = []byte(`{"type":"track","userId":"u"}`)
	asSent.Attributes[envelope.AttrNoReplay] = "a Segment message that could not be mapped"
	if err := b.Publish(ctx, broker.TopicDeadLetter, asSent, deadLetter(2, "segment", "location.latitude: must be between -90 and 90")); err != nil {
		t.Fatal(err)
	}
	all, err := List(ctx, b, Filter{})
	if err != nil || len(all) != 2 || all[0].NoReplay == "" || all[1].NoReplay != "" {
		t.Fatalf("List: %+v, %v", all, err)
	}
	n, kept, err := Replay(ctx, b, Filter{Stage: "segment"})
	if err != nil || n != 1 || kept != 1 {
		t.Fatalf("Replay: replayed %d, kept %d, %v; want 1 and 1", n, kept, err)
	}
	if got, err := sub.Fetch(ctx, 10, 2*time.Second); err != nil || len(got) != 1 || !strings.Contains(string(got[0].Data), "dl-2") {
		t.Errorf("events topic: %d messages, %v; want the mapped event only", len(got), err)
	}
	if left, _ := List(ctx, b, Filter{}); len(left) != 1 || left[0].ID != all[0].ID {
		t.Errorf("left: %+v, want the one that cannot replay", left)
	}
}

func TestHandler(t *testing.T) {
	ctx := context.Background()
	b := openBroker(t)
	if _, err := b.Subscribe(ctx, broker.TopicEvents, "enrich", broker.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, broker.TopicDeadLetter, deadLetter(1, "validate", "bad"), deadLetter(2, "decode", "worse")); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	NewHandler(b, platform.Discard).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(q string) (int, ListResponse) {
		resp, err := http.Get(srv.URL + "/v1/deadletters" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var lr ListResponse
		json.NewDecoder(resp.Body).Decode(&lr)
		return resp.StatusCode, lr
	}
	if code, lr := get(""); code != 200 || lr.Count != 2 {
		t.Fatalf("list: %d %+v", code, lr)
	}
	if code, lr := get("?stage=decode"); code != 200 || lr.Count != 1 || lr.DeadLetters[0].Reason != "worse" {
		t.Fatalf("list stage: %d %+v", code, lr)
	}
	for _, q := range []string{"?bogus=1", "?limit=0", "?since=yesterday"} {
		if code, _ := get(q); code != 400 {
			t.Errorf("%s: %d, want 400", q, code)
		}
	}
	resp, err := http.Post(srv.URL+"/v1/deadletters/replay", "application/json", strings.NewReader(`{"stage":"validate"}`))
	if err != nil {
		t.Fatal(err)
	}
	var rr ReplayResponse
	json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if resp.StatusCode != 200 || rr.Replayed != 1 {
		t.Fatalf("replay: %d %+v", resp.StatusCode, rr)
	}
	// Strict input: a body that is not a JSON object of known fields, or
	// not JSON, replays nothing; an id that cannot be one is a 400, not a
	// retryable 503.
	for _, tt := range []struct{ ct, body, want string }{
		{"application/json", `{"stages":"validate"}`, `unknown field \"stages\"`},
		{"application/json", `{"Stage":"validate"}`, `unknown field \"Stage\"`},
		{"application/json", `{"stage":"validate","stage":"decode"}`, `stage: is given more than once`},
		{"text/plain", `{"stage":"validate"}`, `Content-Type \"text/plain\" is not accepted`},
		{"application/x-www-form-urlencoded", `stage=validate`, `is not accepted`},
	} {
		resp, err := http.Post(srv.URL+"/v1/deadletters/replay", tt.ct, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 4 || !strings.Contains(string(b), tt.want) {
			t.Errorf("replay %s %s: %d %s, want a 4xx saying %s", tt.ct, tt.body, resp.StatusCode, b, tt.want)
		}
	}
	for _, id := range []string{"abc", "0", "-1", "1.5"} {
		req, _ := http.NewRequest("DELETE", srv.URL+"/v1/deadletters/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || resp.Header.Get("Retry-After") != "" || !strings.Contains(string(b), "id: ") {
			t.Errorf("DELETE %s: %d %s, want 400 naming id", id, resp.StatusCode, b)
		}
	}
	_, lr := get("")
	req, _ := http.NewRequest("DELETE", srv.URL+"/v1/deadletters/"+lr.DeadLetters[0].ID, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, lr := get(""); resp.StatusCode != 204 || code != 200 || lr.Count != 0 {
		t.Fatalf("delete: %d, then %d entries", resp.StatusCode, lr.Count)
	}
}
