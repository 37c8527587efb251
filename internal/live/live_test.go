package live_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/live"
)

func recs(from, n int64, country string) []event.Record {
	out := make([]event.Record, n)
	for i := range out {
		out[i].EventID = fmt.Sprintf("e%d", from+int64(i))
		out[i].Seq = from + int64(i)
		out[i].Location.Country = country
	}
	return out
}

func receive(t *testing.T, s *live.Subscription, n int) []int64 {
	t.Helper()
	var got []int64
	deadline := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case r, ok := <-s.C:
			if !ok {
				t.Fatalf("channel closed after %d of %d records (dropped: %q)", len(got), n, s.Dropped())
			}
			got = append(got, r.Seq)
		case <-deadline:
			t.Fatalf("got %d of %d records within 10 s", len(got), n)
		}
	}
	return got
}

func TestPublishFilterOrder(t *testing.T) {
	h := live.NewHub(16)
	all, err := h.Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	spain, err := h.Subscribe(func(r *event.Record) bool { return r.Location.Country == "Spain" })
	if err != nil {
		t.Fatal(err)
	}
	batch := append(recs(1, 3, "Spain"), recs(4, 2, "France")...)
	batch = append(batch, func() (r event.Record) { r.EventID = "dup"; return r }()) // Seq 0: not stored
	h.Publish(batch)
	batch[0].Seq = 99 // Publish copied: reusing the slice changes nothing
	h.Publish(recs(6, 1, "Spain"))

	if got := fmt.Sprint(receive(t, all, 6)); got != "[1 2 3 4 5 6]" {
		t.Errorf("all got %s", got)
	}
	if got := fmt.Sprint(receive(t, spain, 4)); got != "[1 2 3 6]" {
		t.Errorf("spain got %s", got)
	}
	if h.Len() != 2 {
		t.Errorf("Len = %d, want 2", h.Len())
	}
	spain.Close()
	spain.Close()
	if _, ok := <-spain.C; ok {
		t.Error("closed subscription's channel still open")
	}
	if r := spain.Dropped(); r != "" {
		t.Errorf("Dropped after own Close = %q, want empty", r)
	}
	if h.Len() != 1 {
		t.Errorf("Len = %d, want 1", h.Len())
	}
}

func TestSlowSubscriberDropped(t *testing.T) {
	h := live.NewHub(4)
	slow, _ := h.Subscribe(nil) // never reads
	fast, _ := h.Subscribe(nil)
	var got []int64
	for i := int64(1); i <= 100; i++ {
		h.Publish(recs(i, 1, "X")) // must not block although slow never reads
		got = append(got, receive(t, fast, 1)...)
	}
	if len(got) != 100 || got[0] != 1 || got[99] != 100 {
		t.Errorf("fast subscriber got %d records (%v...)", len(got), got[:min(len(got), 5)])
	}
	n := 0
	for range slow.C {
		n++
	}
	if n != 4 {
		t.Errorf("slow subscriber had %d buffered records, want 4", n)
	}
	if r := slow.Dropped(); !strings.Contains(r, "buffer of 4 records was full") {
		t.Errorf("Dropped = %q", r)
	}
	if h.Len() != 1 {
		t.Errorf("Len = %d, want 1", h.Len())
	}
}

func TestClose(t *testing.T) {
	h := live.NewHub(0)
	s, _ := h.Subscribe(nil)
	h.Close()
	h.Close()
	if _, ok := <-s.C; ok {
		t.Error("channel open after Hub.Close")
	}
	if s.Dropped() != live.ReasonClosed {
		t.Errorf("Dropped = %q, want %q", s.Dropped(), live.ReasonClosed)
	}
	s.Close()
	h.Publish(recs(1, 1, "X"))
	if _, err := h.Subscribe(nil); !errors.Is(err, live.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

// TestConcurrent is for the race detector.
func TestConcurrent(t *testing.T) {
	h := live.NewHub(8)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				s, err := h.Subscribe(nil)
				if err != nil {
					return
				}
				select {
				case <-s.C:
				default:
				}
				s.Close()
			}
		})
	}
	wg.Go(func() {
		for i := int64(1); i <= 500; i++ {
			h.Publish(recs(i, 1, "X"))
		}
	})
	wg.Wait()
	h.Close()
}

// BenchmarkPublish publishes 100-record batches to 100 subscribers that
// each read what they receive; half of them filter out half the records.
func BenchmarkPublish(b *testing.B) {
	h := live.NewHub(DefaultBenchBuffer)
	var wg sync.WaitGroup
	for i := range 100 {
		var f func(*event.Record) bool
		if i%2 == 1 {
			f = func(r *event.Record) bool { return r.Seq%2 == 0 }
		}
		s, err := h.Subscribe(f)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for range s.C {
			}
		})
	}
	batch := recs(1, 100, "X")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range batch {
			batch[j].Seq = int64(i*100 + j + 1)
		}
		h.Publish(batch)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "records/s")
	if h.Len() != 100 {
		b.Logf("%d of 100 subscribers were dropped (fell behind)", 100-h.Len())
	}
	h.Close()
	wg.Wait()
}

const DefaultBenchBuffer = 1 << 16

func TestDropAll(t *testing.T) {
	h := live.NewHub(4)
	a, _ := h.Subscribe(nil)
	b, _ := h.Subscribe(nil)
	h.DropAll("source lost records")
	for _, s := range []*live.Subscription{a, b} {
		if _, ok := <-s.C; ok || s.Dropped() != "source lost records" {
			t.Errorf("after DropAll: open %v, reason %q", ok, s.Dropped())
		}
	}
	c, err := h.Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Publish([]event.Record{{Seq: 1}})
	if r := <-c.C; r.Seq != 1 {
		t.Errorf("a new subscription after DropAll got %+v", r)
	}
}
