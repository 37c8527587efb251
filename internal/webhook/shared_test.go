package webhook

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/registry"
)

// TestTwoDispatchers runs two Dispatchers on one registry, as two
// processes would: a registration made or deleted through either is live,
// or stops, in the other.
func TestTwoDispatchers(t *testing.T) {
	a := newEnv(t, Config{})
	b := a.peer()
	rcv := newReceiver(t, secret)

	// Registered through a, live in b.
	wa := a.register(map[string]any{"url": rcv.srv.URL, "filter": `location.country == "Spain"`, "max_wait_ms": 0})
	eventually(t, "a's registration live in b", func() bool { return b.live(wa.ID) })
	if got := b.get(wa.ID); got.URL != wa.URL || got.Filter != wa.Filter || !got.CreatedAt.Equal(wa.CreatedAt) {
		t.Fatalf("b shows %+v, want %+v", got, wa)
	}
	b.d.Deliver([]event.Record{rec("from-b", "Spain", 20), rec("no", "Norway", 1)}, nil)
	eventually(t, "b's record at a's webhook", func() bool { return slices.Contains(rcv.received(), "from-b") })
	if _, bad, _ := rcv.snapshot(); bad != 0 {
		t.Fatalf("%d deliveries from b with a bad signature: the secret did not travel", bad)
	}

	// Registered through b, live in a.
	rcv2 := newReceiver(t, secret)
	wb := b.register(map[string]any{"url": rcv2.srv.URL, "max_wait_ms": 0})
	eventually(t, "b's registration live in a", func() bool { return a.live(wb.ID) })
	a.d.Deliver([]event.Record{rec("from-a", "France", 20)}, nil)
	eventually(t, "a's record at b's webhook", func() bool { return slices.Contains(rcv2.received(), "from-a") })
	code, body := a.do("GET", "/v1/webhooks", nil)
	var list listBody
	decode(t, body, &list)
	if code != 200 || len(list.Webhooks) != 2 || list.Webhooks[0].ID != wa.ID || list.Webhooks[1].ID != wb.ID {
		t.Fatalf("a lists %d %s, want both webhooks", code, body)
	}

	// Deleted through b: stops in a; its records are no longer wanted.
	if code, body := b.do("DELETE", "/v1/webhooks/"+wa.ID, nil); code != 204 {
		t.Fatalf("delete through b: %d %s", code, body)
	}
	eventually(t, "the deletion to reach a", func() bool { return !a.live(wa.ID) })
	if code, _ := a.do("GET", "/v1/webhooks/"+wa.ID, nil); code != 404 {
		t.Fatalf("a still shows the deleted webhook: %d", code)
	}
	var done atomic.Int32
	a.d.Deliver([]event.Record{rec("after-delete", "Spain", 20)}, func() { done.Add(1) })
	eventually(t, "the record to reach b's webhook", func() bool { return slices.Contains(rcv2.received(), "after-delete") })
	eventually(t, "done", func() bool { return done.Load() == 1 })
	if slices.Contains(rcv.received(), "after-delete") {
		t.Fatal("a delivered to the webhook deleted through b")
	}
	// Gone for both.
	if code, _ := b.do("DELETE", "/v1/webhooks/"+wa.ID, nil); code != 404 {
		t.Fatalf("second delete: %d, want 404", code)
	}
}

// TestRegistrationChanged: a registration rewritten in the registry (by
// another process or build) replaces the live one.
func TestRegistrationChanged(t *testing.T) {
	e := newEnv(t, Config{})
	before, after := newReceiver(t, secret), newReceiver(t, secret)
	w := e.register(map[string]any{"url": before.srv.URL, "max_wait_ms": 0})
	e.d.Deliver([]event.Record{rec("old", "Spain", 20)}, nil)
	eventually(t, "delivery to the first URL", func() bool { return len(before.received()) == 1 })

	doc, err := e.reg.Get(t.Context(), collWebhooks, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(doc.Data), before.srv.URL, after.srv.URL, 1)
	if err := e.reg.Put(t.Context(), collWebhooks, w.ID, []byte(changed)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the change to be live", func() bool { return e.get(w.ID).URL == after.srv.URL })
	e.d.Deliver([]event.Record{rec("new", "Spain", 20)}, nil)
	eventually(t, "delivery to the new URL", func() bool { return len(after.received()) == 1 })
	if got := before.received(); len(got) != 1 {
		t.Fatalf("the old URL got %v after the change", got)
	}
}

// TestFailureListShared: a failure recorded by one Dispatcher is listed
// and replayed by another.
func TestFailureListShared(t *testing.T) {
	a := newEnv(t, Config{MaxAttempts: 1})
	b := a.peer()
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusBadRequest)
	w := a.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	a.d.Deliver([]event.Record{rec("f1", "Spain", 20), rec("f2", "Spain", 21)}, nil)
	eventually(t, "a's failure listed by b", func() bool { return len(b.failures(w.ID)) == 1 })
	f := b.failures(w.ID)[0]
	if f.WebhookID != w.ID || f.Count != 2 || strings.Join(f.EventIDs, ",") != "f1,f2" || !strings.Contains(f.Reason, "400") {
		t.Fatalf("b lists %+v", f)
	}
	if got := b.get(w.ID); *got.Failures != 1 {
		t.Fatalf("b counts %d failures, want 1", *got.Failures)
	}

	rcv.set(0)
	code, body := b.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", nil)
	var res ReplayResult
	decode(t, body, &res)
	if code != 200 || res.Delivered != 1 {
		t.Fatalf("replay through b: %d %s", code, body)
	}
	if fs := a.failures(w.ID); len(fs) != 0 {
		t.Fatalf("a still lists %+v after b's replay", fs)
	}
	if got := rcv.received(); !slices.Equal(got, []string{"f1", "f2"}) {
		t.Fatalf("receiver got %v", got)
	}

	// Deleting the webhook through b removes its failures for everyone.
	rcv.set(http.StatusBadRequest)
	a.d.Deliver([]event.Record{rec("f3", "Spain", 20)}, nil)
	eventually(t, "another failure", func() bool { return len(a.failures(w.ID)) == 1 })
	if code, _ := b.do("DELETE", "/v1/webhooks/"+w.ID, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if ids, err := a.reg.IDs(t.Context(), collFailures, ""); err != nil || len(ids) != 0 {
		t.Fatalf("failures left in the registry after the delete: %v %v", ids, err)
	}
}

// TestLargeFailureSplit: a failed batch larger than a registry document
// is stored as several failures, which replay delivers whole.
func TestLargeFailureSplit(t *testing.T) {
	e := newEnv(t, Config{MaxAttempts: 1})
	rcv := newReceiver(t, secret)
	rcv.set(http.StatusBadRequest)
	w := e.register(map[string]any{"url": rcv.srv.URL, "batch_size": 1000, "max_wait_ms": 0})
	// 30 records of about 64 KiB: about 2 MiB, over two documents' worth.
	var recs []event.Record
	for i := range 30 {
		r := rec(fmt.Sprintf("big-%02d", i), "Spain", 20)
		r.Attributes = map[string]string{}
		for k := range 62 {
			r.Attributes[fmt.Sprintf("k%02d", k)] = strings.Repeat("x", 1024)
		}
		recs = append(recs, r)
	}
	var done atomic.Int32
	e.d.Deliver(recs, func() { done.Add(1) })
	eventually(t, "done", func() bool { return done.Load() == 1 })
	fs := e.failures(w.ID) // stored before done
	if len(fs) < 2 {
		t.Fatalf("%d failures, want the batch split into several", len(fs))
	}
	var ids []string
	for _, f := range fs {
		if f.Count != len(f.EventIDs) || !strings.HasPrefix(f.ID, fs[0].ID[:len("dlv_")+20]) {
			t.Errorf("failure %s: count %d, %d event ids", f.ID, f.Count, len(f.EventIDs))
		}
		ids = append(ids, f.EventIDs...)
	}
	slices.Sort(ids)
	if n := len(ids); n != 30 || len(slices.Compact(ids)) != n {
		t.Fatalf("the parts hold %d event ids, want the 30 records once each", len(ids))
	}
	docs, err := e.reg.List(t.Context(), collFailures, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if len(d.Data) > registry.MaxDocSize {
			t.Errorf("failure document %s of %d bytes", d.ID, len(d.Data))
		}
	}

	rcv.set(0)
	code, body := e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", nil)
	var res ReplayResult
	decode(t, body, &res)
	if code != 200 || res.Delivered != len(fs) {
		t.Fatalf("replay: %d %s", code, body)
	}
	if got := len(rcv.received()); got != 30 {
		t.Fatalf("receiver got %d records, want 30", got)
	}
}
