package webhook

import (
	"net/http"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/event"
)

// TestEraseUsers: a user's records leave every webhook's failure list; a
// batch of theirs alone is deleted, a mixed one kept without them and
// still replays.
func TestEraseUsers(t *testing.T) {
	e := newEnv(t, Config{MaxAttempts: 1})
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusBadRequest)
	w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	mine := func(id string) event.Record { r := rec(id, "Spain", 20); r.User.ID = "victim"; return r }
	e.d.Deliver([]event.Record{mine("a"), mine("b")}, nil)
	eventually(t, "the first failure", func() bool { return len(e.failures(w.ID)) == 1 })
	e.d.Deliver([]event.Record{mine("c"), rec("d", "Spain", 20)}, nil)
	eventually(t, "the second failure", func() bool { return len(e.failures(w.ID)) == 2 })
	e.d.Deliver([]event.Record{rec("x", "Spain", 20)}, nil)
	eventually(t, "the third failure", func() bool { return len(e.failures(w.ID)) == 3 })

	got, err := EraseUsers(t.Context(), e.reg, []string{"victim", "h1:00"})
	if err != nil {
		t.Fatal(err)
	}
	if got != (Erased{Deleted: 1, Rewritten: 1, Records: 3}) {
		t.Errorf("EraseUsers = %+v", got)
	}
	fs := e.failures(w.ID)
	if len(fs) != 2 || strings.Join(fs[0].EventIDs, ",") != "d" || fs[0].Count != 1 || strings.Join(fs[1].EventIDs, ",") != "x" {
		t.Fatalf("failures left: %+v", fs)
	}
	docs, _ := e.reg.List(t.Context(), collFailures, "")
	for _, d := range docs {
		if strings.Contains(string(d.Data), "victim") {
			t.Errorf("failure %s still holds the user: %s", d.ID, d.Data)
		}
	}
	// The kept batch replays with what is left of it.
	rcv.set(0)
	code, body := e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", map[string]any{"ids": []string{fs[0].ID}})
	if code != 200 || !strings.Contains(string(body), `"delivered":1`) {
		t.Fatalf("replay: %d %s", code, body)
	}
	if ids := rcv.received(); len(ids) != 1 || ids[0] != "d" {
		t.Errorf("the replay delivered %v, want d", ids)
	}
	if got, err := EraseUsers(t.Context(), e.reg, []string{"victim"}); err != nil || got != (Erased{}) {
		t.Errorf("again: %+v, %v", got, err)
	}
}
