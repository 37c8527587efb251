package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/event"
)

var at = time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)

func ev(id string) string {
	return fmt.Sprintf(`{"event_id":%q,"event_type":"user.observed","occurred_at":"2026-11-26T09:59:00Z",`+
		`"user":{"id":"u-%s"},"location":{"latitude":52.5,"longitude":13.4}}`, id, id)
}

// checkHeader checks what every message built here carries.
func checkHeader(t *testing.T, m *broker.Message, kind Kind, count string) {
	t.Helper()
	a := m.Attributes
	version := "1"
	if kind == KindRecords {
		version = "2"
	}
	if a[AttrVersion] != version || a[AttrKind] != string(kind) || a[AttrCount] != count {
		t.Errorf("attributes %v, want envelope %s, kind %s, count %s", a, version, kind, count)
	}
	if id := a[AttrMessageID]; len(id) != 26 || m.ID != id || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
		t.Errorf("message id %q, attribute %q: want the same 26 base32 characters", m.ID, id)
	}
}

func TestEventsRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name, mediaType, body string
		ids                   []string
	}{
		{"object", event.ContentTypeJSON, ev("a"), []string{"a"}},
		{"array", event.ContentTypeJSON, "[" + ev("a") + "," + ev("b") + "]", []string{"a", "b"}},
		{"ndjson", event.ContentTypeNDJSON, ev("a") + "\n" + ev("b") + "\n" + ev("c") + "\n", []string{"a", "b", "c"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.body)
			m := NewEvents(body, tt.mediaType, len(tt.ids), at, SourceCollect)
			checkHeader(t, m, KindEvents, fmt.Sprint(len(tt.ids)))
			in, err := DecodeEvents(m)
			if err != nil {
				t.Fatal(err)
			}
			if in.ID != m.ID || in.MediaType != tt.mediaType || !in.IngestedAt.Equal(at) || in.Source != SourceCollect || len(in.Events) != len(tt.ids) {
				t.Fatalf("decoded %+v", in)
			}
			for i, d := range in.Events {
				if d.Event.EventID != tt.ids[i] || len(d.Errors) > 0 {
					t.Errorf("event %d: %+v", i, d)
				}
			}
			// No copy of the body on the hot path: an event's raw JSON is a
			// slice of the message's data.
			if tt.mediaType == event.ContentTypeNDJSON && &in.Events[1].Raw[0] != &body[len(ev("a"))+1] {
				t.Error("NDJSON event raw JSON does not alias the message body")
			}
		})
	}
}

// TestDecodeEventsV1WithoutEnvelope: messages as producers wrote them before
// this package (no envelope, kind or message_id) still decode, as version 1
// events.
func TestDecodeEventsV1WithoutEnvelope(t *testing.T) {
	published := at.Add(time.Second)
	for _, tt := range []struct {
		name  string
		attrs map[string]string
		want  time.Time // ingested at
	}{
		{"ingest", map[string]string{"content_type": "application/x-ndjson", "ingested_at": "2026-11-26T10:00:00.123456789Z",
			"count": "2", "source": "ingest", "traceparent": "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"}, at},
		{"no ingested_at", map[string]string{"content_type": "application/x-ndjson"}, published},
		{"content type with parameters", map[string]string{"content_type": "application/jsonl; charset=utf-8", "ingested_at": "yesterday"}, published},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := &broker.Message{ID: "7", Data: []byte(ev("a") + "\n" + ev("b")), Attributes: tt.attrs, PublishedAt: published}
			in, err := DecodeEvents(m)
			if err != nil {
				t.Fatal(err)
			}
			if in.ID != "" || len(in.Events) != 2 || in.Events[1].Event.EventID != "b" || !in.IngestedAt.Equal(tt.want) || in.MediaType != event.ContentTypeNDJSON {
				t.Errorf("decoded %+v", in)
			}
		})
	}
	// No content type at all was JSON.
	in, err := DecodeEvents(&broker.Message{Data: []byte(ev("a"))})
	if err != nil || len(in.Events) != 1 || !in.IngestedAt.IsZero() {
		t.Errorf("message without attributes: %+v, %v", in, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	recs, err := NewRecords([]event.Record{record(1)})
	if err != nil {
		t.Fatal(err)
	}
	events := func(attrs ...string) *broker.Message {
		m := NewEvents([]byte(ev("a")), event.ContentTypeJSON, 1, at, SourceIngest)
		for i := 0; i < len(attrs); i += 2 {
			m.Attributes[attrs[i]] = attrs[i+1]
		}
		return m
	}
	for _, tt := range []struct {
		name    string
		decode  func(*broker.Message) error
		m       *broker.Message
		version bool   // ErrUnknownVersion
		want    string // in the error
	}{
		{"events version 2", decodeEvents, events(AttrVersion, "2"), true, `unknown envelope version "2" (kind events): this build reads version 1`},
		{"events version 0", decodeEvents, events(AttrVersion, "0"), true, `"0"`},
		{"events version 01", decodeEvents, events(AttrVersion, "01"), true, `"01"`},
		{"events version text", decodeEvents, events(AttrVersion, "v1"), true, `"v1"`},
		{"records version 3", decodeRecords, withAttr(recs, AttrVersion, "3"), true, `"3" (kind records): this build reads versions 1 and 2`},
		{"records as events", decodeEvents, recs, false, `kind "records", not events`},
		{"events as records", decodeRecords, events(), false, `kind "events", not records`},
		{"unknown kind", decodeEvents, events(AttrKind, "audit"), false, `kind "audit"`},
		{"unknown content type", decodeEvents, events(AttrContentType, "text/csv"), false, `unknown content type "text/csv"`},
		{"not events", decodeEvents, &broker.Message{Data: []byte("not json")}, false, "JSON object"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.m)
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, ErrUnknownVersion) != tt.version {
				t.Errorf("error %v; want one that says %s (unknown version: %t)", err, tt.want, tt.version)
			}
		})
	}
}

func decodeEvents(m *broker.Message) error { _, err := DecodeEvents(m); return err }

func decodeRecords(m *broker.Message) error { _, err := DecodeRecords(m); return err }

// withAttr returns a copy of m with one attribute set.
func withAttr(m *broker.Message, k, v string) *broker.Message {
	c := *m
	c.Attributes = map[string]string{k: v}
	for ak, av := range m.Attributes {
		if ak != k {
			c.Attributes[ak] = av
		}
	}
	return &c
}

func TestDeadLetterAndReplay(t *testing.T) {
	failed := at.Add(time.Minute)
	orig := NewEvents([]byte(ev("a")+"\n"+ev("b")+"\n"), event.ContentTypeNDJSON, 2, at, SourceIngest)
	orig.Attributes["traceparent"] = "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"
	origID := orig.Attributes[AttrMessageID]
	orig.ID, orig.Deliveries = "42", 3 // as delivered: the broker's id
	in, err := DecodeEvents(orig)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("one event", func(t *testing.T) {
		dead := NewDeadLetter(orig, 1, in.Events[1].Raw, "validate", "location.latitude: bad", "enrich", failed)
		checkHeader(t, dead, KindEvents, "1")
		if dead.Attributes[AttrMessageID] == origID || dead.Attributes[AttrContentType] != event.ContentTypeJSON ||
			dead.Attributes[AttrSource] != SourceIngest || dead.Attributes["traceparent"] == "" {
			t.Errorf("dead letter attributes %v", dead.Attributes)
		}
		want := DeadLetter{ID: dead.ID, Stage: "validate", Reason: "location.latitude: bad", Attempts: 3, FailedAt: failed,
			OriginalID: "42", Index: 1, Subscription: "enrich", ContentType: event.ContentTypeJSON, Data: in.Events[1].Raw}
		if got := ParseDeadLetter(dead); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseDeadLetter\n got %+v\nwant %+v", got, want)
		}

		dead.ID = "9" // as delivered from the dead-letter topic
		re := Replay(dead)
		checkHeader(t, re, KindEvents, "1")
		for k := range re.Attributes {
			if strings.HasPrefix(k, DeadLetterPrefix) {
				t.Errorf("replay keeps %s", k)
			}
		}
		if re.ID == dead.Attributes[AttrMessageID] || re.ID == origID || re.Attributes[AttrReplayedFrom] != "9" || re.Attributes["traceparent"] == "" {
			t.Errorf("replay id %s, attributes %v", re.ID, re.Attributes)
		}
		got, err := DecodeEvents(re)
		if err != nil || len(got.Events) != 1 || got.Events[0].Event.EventID != "b" || got.Source != SourceReplay || !got.IngestedAt.Equal(at) {
			t.Errorf("replay decodes to %+v, %v", got, err)
		}
	})

	t.Run("whole message", func(t *testing.T) {
		dead := NewDeadLetter(orig, -1, orig.Data, "store", "rejected", "enrich", failed)
		checkHeader(t, dead, KindEvents, "2")
		if d := ParseDeadLetter(dead); d.Index != -1 || d.ContentType != event.ContentTypeNDJSON || d.Attempts != 3 {
			t.Errorf("ParseDeadLetter %+v", d)
		}
		if got, err := DecodeEvents(Replay(dead)); err != nil || len(got.Events) != 2 {
			t.Errorf("replay decodes to %+v, %v", got, err)
		}
	})

	t.Run("unknown version", func(t *testing.T) {
		// A message of a version this build cannot read is dead-lettered as
		// it is and replays as it was, for a build that reads it.
		v2 := withAttr(orig, AttrVersion, "2")
		_, err := DecodeEvents(v2)
		dead := NewDeadLetter(v2, -1, v2.Data, "decode", err.Error(), "enrich", failed)
		re := Replay(dead)
		if dead.Attributes[AttrVersion] != "2" || re.Attributes[AttrVersion] != "2" || !strings.Contains(ParseDeadLetter(dead).Reason, "unknown envelope version") {
			t.Errorf("dead letter %v, replay %v", dead.Attributes, re.Attributes)
		}
	})

	t.Run("written before envelope", func(t *testing.T) {
		// As the worker wrote dead letters before this package.
		m := &broker.Message{ID: "5", Data: []byte(ev("c")), Attributes: map[string]string{
			"content_type": "application/json", "ingested_at": "2026-11-26T10:00:00Z", "count": "1", "source": "ingest",
			"dl_reason": "bad", "dl_stage": "validate", "dl_attempts": "2", "dl_message_id": "17", "dl_index": "4",
			"dl_failed_at": "2026-11-26T10:01:00Z", "dl_subscription": "enrich"}}
		want := DeadLetter{Stage: "validate", Reason: "bad", Attempts: 2, FailedAt: time.Date(2026, 11, 26, 10, 1, 0, 0, time.UTC),
			OriginalID: "17", Index: 4, Subscription: "enrich", ContentType: event.ContentTypeJSON, Data: m.Data}
		if got := ParseDeadLetter(m); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseDeadLetter\n got %+v\nwant %+v", got, want)
		}
		re := Replay(m)
		if got, err := DecodeEvents(re); err != nil || len(got.Events) != 1 || got.ID != re.ID || re.Attributes[AttrVersion] != "" {
			t.Errorf("replay %v decodes to %+v, %v", re.Attributes, got, err)
		}
		if d := ParseDeadLetter(&broker.Message{Data: []byte("x")}); d.Index != -1 || d.Attempts != 0 || !d.FailedAt.IsZero() {
			t.Errorf("dead letter without attributes: %+v", d)
		}
	})
}

func record(seq int64) event.Record {
	lat, lon := 52.52, 13.405
	return event.Record{
		Event: event.Event{EventID: fmt.Sprintf("e-%d", seq), EventType: event.TypeUserObserved, OccurredAt: at.Add(-time.Minute),
			User:       event.User{ID: "u-1", Name: "Ada \"Countess\" Lovelace\nof Ockham"},
			Location:   event.Location{Latitude: &lat, Longitude: &lon, City: "Berlin"},
			Attributes: map[string]string{"plan": "pro"}},
		Weather: &event.Weather{ObservedAt: at.Truncate(15 * time.Minute), TemperatureC: -3.5, WeatherCode: 3, Condition: "Overcast",
			Provider: "sim", CellLatitude: 52.5, CellLongitude: 13.4},
		Enrichment:  event.Enrichment{Status: event.StatusEnriched},
		IngestedAt:  at,
		ProcessedAt: at.Add(time.Second),
		Seq:         seq,
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	want := []event.Record{record(181), record(182)}
	want[1].Weather = nil
	want[1].Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "HTTP 502"}
	m, err := NewRecords(want)
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, m, KindRecords, "2")
	if m.Attributes[AttrContentType] != event.ContentTypeNDJSON {
		t.Errorf("attributes %v", m.Attributes)
	}
	got, err := DecodeRecords(m)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records\n got %+v\nwant %+v", got, want)
	}
	// Version 1, plain NDJSON, as the first records producers wrote it.
	var plain []byte
	for i := range want {
		b, _ := event.Marshal(&want[i])
		plain = append(append(plain, b...), '\n')
	}
	v1 := &broker.Message{Data: plain, Attributes: map[string]string{AttrVersion: "1", AttrKind: "records",
		AttrContentType: event.ContentTypeNDJSON, AttrCount: "2"}}
	if got, err := DecodeRecords(v1); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("version 1: %v, %+v", err, got)
	}
	if len(m.Data) >= len(plain) {
		t.Errorf("version 2 body of %d bytes, the plain one %d: not compressed", len(m.Data), len(plain))
	}

	if _, err := NewRecords(nil); err == nil {
		t.Error("NewRecords(nil): no error")
	}
	for _, tt := range []struct {
		name string
		m    *broker.Message
		want string
	}{
		{"fewer than count", withAttr(m, AttrCount, "3"), "holds 2 records, its count says 3"},
		{"more than count", withAttr(m, AttrCount, "1"), "more than its count of 1"},
		{"no count", withAttr(m, AttrCount, ""), `count ""`},
		{"version 2 not S2", withAttr(v1, AttrVersion, "2"), "not S2"},
		{"content type", withAttr(m, AttrContentType, event.ContentTypeJSON), `content type "application/json"`},
		{"not an object", &broker.Message{Data: []byte("null\n"), Attributes: map[string]string{
			AttrKind: "records", AttrContentType: event.ContentTypeNDJSON, AttrCount: "1"}}, "record 0: not a JSON object"},
		{"bad record", &broker.Message{Data: []byte(`{"seq":"x"}`), Attributes: map[string]string{
			AttrKind: "records", AttrContentType: event.ContentTypeNDJSON, AttrCount: "1"}}, "record 0:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeRecords(tt.m); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one that says %s", err, tt.want)
			}
		})
	}
}

// TestMessageIDs: every message gets its own id, set as broker.Message.ID
// (JetStream drops a second publish of the same ID: see the jetstream
// package's TestPublishDedupByID).
func TestMessageIDs(t *testing.T) {
	recs := []event.Record{record(1)}
	orig := NewEvents([]byte(ev("a")), event.ContentTypeJSON, 1, at, SourceIngest)
	seen := map[string]bool{}
	for range 1000 {
		r, err := NewRecords(recs)
		if err != nil {
			t.Fatal(err)
		}
		dead := NewDeadLetter(orig, 0, orig.Data, "validate", "bad", "enrich", at)
		for _, m := range []*broker.Message{NewEvents(orig.Data, event.ContentTypeJSON, 1, at, SourceIngest), r, dead, Replay(dead)} {
			id := m.Attributes[AttrMessageID]
			if id == "" || m.ID != id || seen[id] || id == "e-1" || id == "a" {
				t.Fatalf("message id %q (ID %q): empty, reused or an event id", id, m.ID)
			}
			seen[id] = true
		}
	}
}

// FuzzDecodeEvents: any message decodes or is refused, without a panic, and
// every event of a decoded one is accounted for.
func FuzzDecodeEvents(f *testing.F) {
	for _, s := range []struct{ data, contentType, version, kind string }{
		{ev("a"), event.ContentTypeJSON, "", ""},
		{"[" + ev("a") + ",1]", event.ContentTypeJSON, "1", "events"},
		{ev("a") + "\n{oops\n", event.ContentTypeNDJSON, "1", "events"},
		{"", "", "2", "events"},
		{ev("a"), event.ContentTypeNDJSON, "1", "records"},
	} {
		f.Add([]byte(s.data), s.contentType, s.version, s.kind)
	}
	f.Fuzz(func(t *testing.T, data []byte, contentType, version, kind string) {
		m := &broker.Message{Data: data, Attributes: map[string]string{
			AttrContentType: contentType, AttrVersion: version, AttrKind: kind}}
		in, err := DecodeEvents(m)
		if err != nil {
			if in.Events != nil {
				t.Fatalf("error %v with %d events", err, len(in.Events))
			}
			return
		}
		for i, d := range in.Events {
			if len(d.Raw) == 0 && len(d.Errors) == 0 {
				t.Fatalf("event %d: empty and no error", i)
			}
		}
	})
}

// FuzzDecodeRecords: any body decodes to exactly count records or is
// refused, without a panic.
func FuzzDecodeRecords(f *testing.F) {
	m, err := NewRecords([]event.Record{record(1), record(2)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Data, "2")
	f.Add([]byte("{}\n\n{}"), "2")
	f.Add([]byte("null"), "1")
	f.Add([]byte(`{"seq":1}`), "99999999999")
	f.Fuzz(func(t *testing.T, data []byte, count string) {
		recs, err := DecodeRecords(&broker.Message{Data: data, Attributes: map[string]string{
			AttrKind: string(KindRecords), AttrContentType: event.ContentTypeNDJSON, AttrCount: count}})
		if n, _ := strconv.Atoi(count); err == nil && len(recs) != n {
			t.Fatalf("%d records, count %s", len(recs), count)
		}
	})
}

// TestRecordsMessagesSplit: a large stored batch goes out as several
// messages under the size bound, every record once, in order.
func TestRecordsMessagesSplit(t *testing.T) {
	recs := make([]event.Record, 50)
	for i := range recs {
		recs[i].EventID = fmt.Sprintf("split-%02d", i)
		recs[i].Seq = int64(i + 1)
	}
	one, err := event.Marshal(&recs[len(recs)-1]) // the longest
	if err != nil {
		t.Fatal(err)
	}
	limit := (len(one) + 1) * 7 // seven records a message
	msgs, err := NewRecordsMessages(recs, limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 8 {
		t.Fatalf("%d messages, want 8 (7 records each, 1 last)", len(msgs))
	}
	var got []string
	for _, m := range msgs {
		if len(m.Data) > limit {
			t.Errorf("message of %d bytes, limit %d", len(m.Data), limit)
		}
		rs, err := DecodeRecords(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			got = append(got, r.EventID)
		}
	}
	for i := range recs {
		if i >= len(got) || got[i] != recs[i].EventID {
			t.Fatalf("records %v", got)
		}
	}
	if msgs[0].ID == msgs[1].ID || msgs[0].ID == "" {
		t.Errorf("message ids %q %q", msgs[0].ID, msgs[1].ID)
	}
}

// TestRecordsBodyIsMarshal: a records body is each record as event.Marshal
// writes it (HTML escaped, U+2028 escaped) and a newline, and the buffers
// NewRecordsMessages reuses never reach a message: messages built before
// still decode to their own records after later calls.
func TestRecordsBodyIsMarshal(t *testing.T) {
	recs := []event.Record{record(1), record(2)}
	recs[0].Properties = []byte(`{"html":"<b>&amp;</b>","sep":"a` + "\u2028" + `b"}`)
	recs[1].User.ID = "<script>"
	first, err := NewRecordsMessages(recs, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := marshalLines(t, nil, recs...)
	body, err := s2.Decode(nil, first[0].Data)
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("body\n got %s\nwant %s (%v)", body, want, err)
	}
	for i := range 20 {
		other := []event.Record{record(int64(100 + i))}
		if _, err := NewRecordsMessages(other, 0); err != nil {
			t.Fatal(err)
		}
	}
	got, err := DecodeRecords(first[0])
	if err != nil || len(got) != 2 || got[0].EventID != recs[0].EventID || got[1].User.ID != "<script>" {
		t.Fatalf("the first message after later ones: %v, %+v", err, got)
	}
}

// TestRecordsMessagesOf: a record given its line goes as that line, byte
// for byte; one without is encoded; a line without its newline, or lines
// not one for each record, are refused.
func TestRecordsMessagesOf(t *testing.T) {
	recs := []event.Record{record(1), record(2), record(3)}
	given := []byte(`{"event_id":"as-stored","seq":1}` + "\n")
	msgs, err := NewRecordsMessagesOf(recs, [][]byte{given, nil, nil}, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	want := marshalLines(t, append([]byte(nil), given...), recs[1:]...)
	body, err := s2.Decode(nil, msgs[0].Data)
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("body\n got %s\nwant %s (%v)", body, want, err)
	}
	got, err := DecodeRecords(msgs[0])
	if err != nil || len(got) != 3 || got[0].EventID != "as-stored" || got[1].EventID != recs[1].EventID {
		t.Fatalf("decoded %v, %+v", err, got)
	}
	if _, err := NewRecordsMessagesOf(recs, [][]byte{[]byte(`{"event_id":"x"}`), nil, nil}, 0); err == nil || !strings.Contains(err.Error(), "newline") {
		t.Errorf("a line without its newline: %v", err)
	}
	if _, err := NewRecordsMessagesOf(recs, [][]byte{given}, 0); err == nil || !strings.Contains(err.Error(), "1 lines for 3 records") {
		t.Errorf("one line for three records: %v", err)
	}
}

// marshalLines appends each record as event.Marshal writes it, and a
// newline, to dst: a records body.
func marshalLines(t *testing.T, dst []byte, recs ...event.Record) []byte {
	t.Helper()
	for i := range recs {
		b, err := event.Marshal(&recs[i])
		if err != nil {
			t.Fatal(err)
		}
		dst = append(append(dst, b...), '\n')
	}
	return dst
}
