package deadletter

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
)

func TestEraseUser(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := openBrokerIn(t, dir)
	const planted = "planted.victim@example.org"
	victim := func(id string) string {
		return `{"event_id":"` + id + `","event_type":"t","user":{"id":"u<42>","email":"` + planted + `"},"location":{"latitude":95,"longitude":1}}`
	}
	other := func(id string) string {
		return `{"event_id":"` + id + `","event_type":"t","user":{"id":"u-7","email":"keep@example.org"},"location":{"latitude":95,"longitude":1}}`
	}
	dl := func(body, ct, index string) *broker.Message {
		return &broker.Message{Data: []byte(body), Attributes: map[string]string{
			envelope.AttrContentType: ct, envelope.AttrStage: "validate", envelope.AttrReason: "bad", envelope.AttrOriginalIndex: index,
			envelope.AttrIngestedAt: "2026-11-26T10:00:00Z", envelope.AttrAttempts: "3"}}
	}
	msgs := []*broker.Message{
		dl(victim("a"), event.ContentTypeJSON, "0"),                                   // the user's: deleted
		dl(other("b"), event.ContentTypeJSON, "1"),                                    // another's: kept
		dl("[\n"+victim("c")+",\n"+other("d")+"\n]", event.ContentTypeJSON, "-1"),     // both: rewritten
		dl(`{"broken": "u<42>", "email": "`+planted+`"`, event.ContentTypeJSON, "-1"), // undecodable, with the id: deleted
		dl(`{"broken": "u-4"`, event.ContentTypeJSON, "-1"),                           // undecodable, without it: kept
	}
	if err := b.Publish(ctx, broker.TopicDeadLetter, msgs...); err != nil {
		t.Fatal(err)
	}
	got, err := EraseUser(ctx, b, "u<42>")
	if err != nil {
		t.Fatal(err)
	}
	if got != (Erased{Deleted: 2, Rewritten: 1, Events: 3}) {
		t.Errorf("EraseUser = %+v", got)
	}
	left, err := List(ctx, b, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, e := range left {
		body := string(e.Data) + e.Text
		bodies = append(bodies, body)
		if strings.Contains(body, planted) || strings.Contains(body, "u<42>") {
			t.Errorf("dead letter %s still holds the user: %s", e.ID, body)
		}
	}
	if len(left) != 3 || !strings.Contains(bodies[0], `"b"`) || !strings.Contains(bodies[1], `"u-4"`) || !strings.Contains(bodies[2], `"d"`) {
		t.Fatalf("left: %q", bodies)
	}
	// The rewritten one keeps why, where and when, and replays.
	rw := left[2]
	if rw.Stage != "validate" || rw.Reason != "bad" || rw.Attempts != 3 || rw.Index != -1 || rw.ContentType != event.ContentTypeNDJSON {
		t.Errorf("rewritten dead letter %+v", rw)
	}
	if _, _, err := Replay(ctx, b, Filter{IDs: []string{rw.ID}}); err != nil {
		t.Fatal(err)
	}
	// Erasing again finds nothing.
	if got, err := EraseUser(ctx, b, "u<42>"); err != nil || got != (Erased{}) {
		t.Errorf("again: %+v, %v", got, err)
	}
	// The dead-letter stream's files no longer hold the user's data: the
	// broker overwrites a deleted dead letter (positive control: another
	// user's address is there).
	b.Close() // flushes the stream's files
	if found := grepDir(t, dir, "deadletter", planted); found {
		t.Errorf("%s is still in the dead-letter stream's files", planted)
	}
	if found := grepDir(t, dir, "deadletter", "keep@example.org"); !found {
		t.Error("positive control: keep@example.org is not found in the dead-letter stream's files: the grep proves nothing")
	}
}

// grepDir reports whether a file under dir whose path contains part holds
// what.
func grepDir(t *testing.T, dir, part, what string) bool {
	found := false
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(strings.ToLower(p), part) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(what)) {
			found = true
		}
		return nil
	})
	return found
}
