package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// BenchmarkLoopbackFloor measures what single-event requests cost on this
// machine before skyjoin does anything with them: the bench's own load
// generator (16 requests in flight, one event a request, as `skyjoin bench`'s
// single-event phase) against a server in the same process on 127.0.0.1.
//
//   - bare: the handler reads the body and answers 202: HTTP/1.1 over
//     loopback, both sides, and nothing else.
//   - ingest: skyjoin's ingest handler (decoding, validation, the broker
//     message) publishing to nowhere.
//
// req/s is with both sides on the machine's cores, as in `skyjoin bench`;
// cpu-us/req is the process's CPU (client and server) a request. A
// single-event target of R requests a second on C cores leaves C/R of CPU
// a request for everything; these figures are what HTTP alone takes of it.
func BenchmarkLoopbackFloor(b *testing.B) {
	handlers := []struct {
		name string
		h    func(b *testing.B) http.Handler
	}{
		{"bare", func(*testing.B) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := io.Copy(io.Discard, r.Body); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusAccepted)
				io.WriteString(w, `{"accepted":1}`)
			})
		}},
		{"ingest", func(*testing.B) http.Handler {
			h := ingest.New(ingest.Config{MaxEvents: 1000, MaxBodyBytes: 5 << 20, MaxClockSkew: time.Hour,
				PublishTimeout: time.Second, MaxErrors: 10}, nowhere{}, platform.Discard)
			mux := http.NewServeMux()
			h.Register(mux)
			return mux
		}},
	}
	for _, hc := range handlers {
		b.Run(hc.name, func(b *testing.B) {
			srv := httptest.NewServer(hc.h(b)) // 127.0.0.1
			defer srv.Close()
			events, err := NewEvents("floor", 1000)
			if err != nil {
				b.Fatal(err)
			}
			const conc = 16
			c := NewClient(srv.URL, conc)
			l := &Load{Client: c, Events: events, BatchSize: 1, Concurrency: conc, MaxEvents: int64(b.N), Duration: time.Hour}
			cpu0, err := selfCPU()
			if err != nil {
				b.Skip(err)
			}
			b.ResetTimer()
			r := l.Run(context.Background())
			b.StopTimer()
			cpu1, _ := selfCPU()
			if r.Accepted != int64(b.N) || r.OtherErrors > 0 || r.Refused503 > 0 {
				b.Fatalf("%d of %d accepted, %d refused, %d errors", r.Accepted, b.N, r.Refused503, r.OtherErrors)
			}
			b.ReportMetric(float64(b.N)/r.Elapsed.Seconds(), "req/s")
			b.ReportMetric((cpu1-cpu0)*1e6/float64(b.N), "cpu-us/req")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// nowhere takes every broker message and keeps none.
type nowhere struct{}

func (nowhere) Publish(context.Context, string, ...*broker.Message) error { return nil }
