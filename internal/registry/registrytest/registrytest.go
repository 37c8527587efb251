// Package registrytest is the conformance suite every registry backend
// runs:
//
//	func TestConformance(t *testing.T) {
//		registrytest.Run(t, registrytest.Harness{New: newRegistry, Another: another, Reopen: reopen})
//	}
//
// It asserts no timings beyond "a watched change arrives within
// Harness.Timeout".
package registrytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/registry"
)

// Harness tells the suite how to get registries of one backend.
type Harness struct {
	// New returns a fresh, empty registry; the harness closes it at the
	// end of the test. Close must be idempotent.
	New func(t *testing.T) registry.Registry
	// Another returns a second client on r's state, as another process
	// would open it (its own connection).
	Another func(t *testing.T, r registry.Registry) registry.Registry
	// Reopen closes r and returns a client on the same durable state, as
	// after a restart.
	Reopen func(t *testing.T, r registry.Registry) registry.Registry
	// Timeout bounds the wait for a watched change; zero means 10 s.
	Timeout time.Duration
}

// Run runs the suite, one fresh registry per subtest.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil || h.Another == nil || h.Reopen == nil {
		t.Fatal("registrytest: Harness.New, Another and Reopen are required")
	}
	if h.Timeout == 0 {
		h.Timeout = 10 * time.Second
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Harness, registry.Registry)
	}{
		{"CreateGetPutListDelete", testCRUD},
		{"NotFound", testNotFound},
		{"CollectionsApart", testCollectionsApart},
		{"ListPrefix", testListPrefix},
		{"Invalid", testInvalid},
		{"LargeDocument", testLarge},
		{"CreateRace", testCreateRace},
		{"WatchAnotherClient", testWatch},
		{"WatchEndsWithContext", testWatchEnds},
		{"ReopenKeepsData", testReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, h, h.New(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// must fails the test on an error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// doc is a small JSON document.
func doc(s string) []byte { return fmt.Appendf(nil, `{"v":%q}`, s) }

func mustGet(t *testing.T, r registry.Registry, coll, id string, want []byte) {
	t.Helper()
	d, err := r.Get(ctx(t), coll, id)
	if err != nil {
		t.Fatalf("Get %s/%s: %v", coll, id, err)
	}
	if d.ID != id || !bytes.Equal(d.Data, want) {
		t.Fatalf("Get %s/%s = %s %s, want %s", coll, id, d.ID, d.Data, want)
	}
	if d.UpdatedAt.IsZero() {
		t.Errorf("Get %s/%s: no UpdatedAt", coll, id)
	}
}

func ids(docs []registry.Doc) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.ID
	}
	return out
}

func checkList(t *testing.T, r registry.Registry, coll, prefix string, want map[string][]byte) {
	t.Helper()
	docs, err := r.List(ctx(t), coll, prefix)
	if err != nil {
		t.Fatalf("List %s %q: %v", coll, prefix, err)
	}
	wantIDs := make([]string, 0, len(want))
	for id := range want {
		wantIDs = append(wantIDs, id)
	}
	slices.Sort(wantIDs)
	if got := ids(docs); !slices.Equal(got, wantIDs) {
		t.Fatalf("List %s %q = %v, want %v (ordered by id)", coll, prefix, got, wantIDs)
	}
	for _, d := range docs {
		if !bytes.Equal(d.Data, want[d.ID]) {
			t.Errorf("List %s: %s = %s, want %s", coll, d.ID, d.Data, want[d.ID])
		}
	}
	got, err := r.IDs(ctx(t), coll, prefix)
	if err != nil {
		t.Fatalf("IDs %s %q: %v", coll, prefix, err)
	}
	if !slices.Equal(got, wantIDs) {
		t.Fatalf("IDs %s %q = %v, want %v", coll, prefix, got, wantIDs)
	}
}

func testCRUD(t *testing.T, _ Harness, r registry.Registry) {
	c := ctx(t)
	if err := r.Create(c, "things", "a", doc("a1")); err != nil {
		t.Fatalf("Create: %v", err)
	}
	err := r.Create(c, "things", "a", doc("a2"))
	if !errors.Is(err, registry.ErrExists) {
		t.Fatalf("Create of an existing id: %v, want ErrExists", err)
	}
	mustGet(t, r, "things", "a", doc("a1")) // the duplicate stored nothing
	if err := r.Put(c, "things", "a", doc("a3")); err != nil {
		t.Fatalf("Put over a: %v", err)
	}
	mustGet(t, r, "things", "a", doc("a3"))
	if err := r.Put(c, "things", "B-2_x", doc("b")); err != nil { // Put creates too
		t.Fatalf("Put new: %v", err)
	}
	checkList(t, r, "things", "", map[string][]byte{"a": doc("a3"), "B-2_x": doc("b")})

	if err := r.Delete(c, "things", "a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := r.Get(c, "things", "a"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := r.Delete(c, "things", "a"); err != nil {
		t.Fatalf("second Delete: %v, want nil (idempotent)", err)
	}
	checkList(t, r, "things", "", map[string][]byte{"B-2_x": doc("b")})
	if err := r.Create(c, "things", "a", doc("again")); err != nil {
		t.Fatalf("Create after Delete: %v", err)
	}
	mustGet(t, r, "things", "a", doc("again"))
}

func testNotFound(t *testing.T, _ Harness, r registry.Registry) {
	c := ctx(t)
	if _, err := r.Get(c, "things", "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get of a missing id: %v, want ErrNotFound", err)
	}
	if err := r.Delete(c, "things", "nope"); err != nil {
		t.Fatalf("Delete of a missing id: %v, want nil", err)
	}
	docs, err := r.List(c, "empty", "")
	if err != nil || len(docs) != 0 {
		t.Fatalf("List of an empty collection = %v, %v; want nothing", docs, err)
	}
	got, err := r.IDs(c, "empty", "")
	if err != nil || len(got) != 0 {
		t.Fatalf("IDs of an empty collection = %v, %v; want nothing", got, err)
	}
}

func testCollectionsApart(t *testing.T, _ Harness, r registry.Registry) {
	c := ctx(t)
	for _, coll := range []string{"one", "one_two", "two"} {
		if err := r.Create(c, coll, "x", doc(coll)); err != nil {
			t.Fatalf("Create %s/x: %v", coll, err)
		}
	}
	for _, coll := range []string{"one", "one_two", "two"} {
		checkList(t, r, coll, "", map[string][]byte{"x": doc(coll)})
	}
	must(t, r.Delete(c, "one", "x"))
	mustGet(t, r, "one_two", "x", doc("one_two"))
}

func testListPrefix(t *testing.T, _ Harness, r registry.Registry) {
	c := ctx(t)
	all := map[string][]byte{}
	for _, id := range []string{"wh_a-1", "wh_a-2", "wh_ab-1", "wh_b-1", "x"} {
		all[id] = doc(id)
		must(t, r.Put(c, "things", id, doc(id)))
	}
	checkList(t, r, "things", "wh_a-", map[string][]byte{"wh_a-1": all["wh_a-1"], "wh_a-2": all["wh_a-2"]})
	checkList(t, r, "things", "wh_a", map[string][]byte{"wh_a-1": all["wh_a-1"], "wh_a-2": all["wh_a-2"], "wh_ab-1": all["wh_ab-1"]})
	checkList(t, r, "things", "wh_c", map[string][]byte{})
	checkList(t, r, "things", "", all)
}

func testInvalid(t *testing.T, _ Harness, r registry.Registry) {
	c := ctx(t)
	tests := []struct {
		name, coll, id string
		doc            []byte
	}{
		{"empty collection", "", "a", doc("x")},
		{"upper-case collection", "Things", "a", doc("x")},
		{"dotted collection", "a.b", "a", doc("x")},
		{"empty id", "things", "", doc("x")},
		{"dotted id", "things", "a.b", doc("x")},
		{"slash id", "things", "a/b", doc("x")},
		{"wildcard id", "things", "*", doc("x")},
		{"reserved id", "things", "__x__", doc("x")},
		{"long id", "things", strings.Repeat("a", registry.MaxIDLength+1), doc("x")},
		{"empty doc", "things", "a", nil},
		{"not json", "things", "a", []byte("{")},
		{"not utf-8", "things", "a", []byte("\"\xff\"")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for op, err := range map[string]error{
				"Create": r.Create(c, tt.coll, tt.id, tt.doc),
				"Put":    r.Put(c, tt.coll, tt.id, tt.doc),
			} {
				if !errors.Is(err, registry.ErrInvalid) {
					t.Errorf("%s: %v, want ErrInvalid", op, err)
				}
			}
		})
	}
	if _, err := r.Get(c, "things", "a.b"); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("Get of an invalid id: %v, want ErrInvalid", err)
	}
	if _, err := r.List(c, "things", "a*"); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("List with an invalid prefix: %v, want ErrInvalid", err)
	}
	if _, _, err := r.Watch(c, "Things"); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("Watch of an invalid collection: %v, want ErrInvalid", err)
	}
}

// bigDoc is a JSON string of exactly n bytes.
func bigDoc(n int) []byte {
	b := bytes.Repeat([]byte("x"), n)
	b[0], b[n-1] = '"', '"'
	return b
}

func testLarge(t *testing.T, _ Harness, r registry.Registry) {
	c := ctx(t)
	max := bigDoc(registry.MaxDocSize)
	if err := r.Put(c, "things", "max", max); err != nil {
		t.Fatalf("Put of a document of MaxDocSize: %v", err)
	}
	mustGet(t, r, "things", "max", max)
	err := r.Put(c, "things", "over", bigDoc(registry.MaxDocSize+1))
	if !errors.Is(err, registry.ErrTooLarge) {
		t.Fatalf("Put of a document over MaxDocSize: %v, want ErrTooLarge", err)
	}
	for _, s := range []string{fmt.Sprint(registry.MaxDocSize + 1), fmt.Sprint(registry.MaxDocSize), "things/over"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	if err := r.Create(c, "things", "over", bigDoc(2*registry.MaxDocSize)); !errors.Is(err, registry.ErrTooLarge) {
		t.Fatalf("Create of a document over MaxDocSize: %v, want ErrTooLarge", err)
	}
	if _, err := r.Get(c, "things", "over"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get of the refused document: %v, want ErrNotFound", err)
	}
}

// testCreateRace creates one id from two clients at once: exactly one
// Create wins.
func testCreateRace(t *testing.T, h Harness, r registry.Registry) {
	other := h.Another(t, r)
	c := ctx(t)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		cl := r
		if i%2 == 1 {
			cl = other
		}
		wg.Go(func() { errs[i] = cl.Create(c, "things", "once", doc(fmt.Sprint(i))) })
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, registry.ErrExists):
			t.Errorf("Create %d: %v, want nil or ErrExists", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d Creates of one id succeeded, want exactly 1: %v", won, errs)
	}
}

// next waits for the next change on ch.
func next(t *testing.T, h Harness, ch <-chan registry.Change, what string) registry.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatalf("watch closed while waiting for %s", what)
		}
		if c.Err != nil {
			t.Fatalf("watch broke while waiting for %s: %v", what, c.Err)
		}
		return c
	case <-time.After(h.Timeout):
		t.Fatalf("%s did not reach the watch within %s", what, h.Timeout)
	}
	panic("unreachable")
}

func testWatch(t *testing.T, h Harness, r registry.Registry) {
	c := ctx(t)
	must(t, r.Put(c, "things", "before", doc("b")))
	must(t, r.Put(c, "things", "gone", doc("g")))
	must(t, r.Delete(c, "things", "gone"))
	must(t, r.Put(c, "others", "elsewhere", doc("e")))
	docs, ch, err := r.Watch(c, "things")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if got := ids(docs); !slices.Equal(got, []string{"before"}) || !bytes.Equal(docs[0].Data, doc("b")) {
		t.Fatalf("Watch's current documents = %v, want [before] (deleted ones and other collections left out)", got)
	}

	// Changes made through another client, as by another process.
	other := h.Another(t, r)
	must(t, other.Put(c, "others", "noise", doc("n")))
	must(t, other.Create(c, "things", "new", doc("n1")))
	if got := next(t, h, ch, "a create by another client"); got.ID != "new" || got.Deleted || !bytes.Equal(got.Data, doc("n1")) || got.UpdatedAt.IsZero() {
		t.Fatalf("change %+v, want new created with %s", got, doc("n1"))
	}
	must(t, other.Put(c, "things", "before", doc("b2")))
	if got := next(t, h, ch, "a put by another client"); got.ID != "before" || got.Deleted || !bytes.Equal(got.Data, doc("b2")) {
		t.Fatalf("change %+v, want before updated to %s", got, doc("b2"))
	}
	must(t, other.Delete(c, "things", "new"))
	if got := next(t, h, ch, "a delete by another client"); got.ID != "new" || !got.Deleted || got.Data != nil {
		t.Fatalf("change %+v, want new deleted", got)
	}
	// And through this one.
	must(t, r.Put(c, "things", "mine", doc("m")))
	if got := next(t, h, ch, "a put by the watching client"); got.ID != "mine" || !bytes.Equal(got.Data, doc("m")) {
		t.Fatalf("change %+v, want mine", got)
	}
}

func testWatchEnds(t *testing.T, h Harness, r registry.Registry) {
	wctx, cancel := context.WithCancel(ctx(t))
	_, ch, err := r.Watch(wctx, "things")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.After(h.Timeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the watch's channel still open %s after its context ended", h.Timeout)
		}
	}
}

func testReopen(t *testing.T, h Harness, r registry.Registry) {
	c := ctx(t)
	must(t, r.Create(c, "things", "kept", doc("k")))
	must(t, r.Put(c, "things", "deleted", doc("d")))
	must(t, r.Delete(c, "things", "deleted"))
	r = h.Reopen(t, r)
	mustGet(t, r, "things", "kept", doc("k"))
	checkList(t, r, "things", "", map[string][]byte{"kept": doc("k")})
	if err := r.Create(c, "things", "kept", doc("again")); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("Create after reopen: %v, want ErrExists", err)
	}
}
