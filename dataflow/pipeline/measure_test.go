package pipeline

import (
	"context"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
	"github.com/skyjoin/skyjoin/internal/store/bigquery/bqtest"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

// TestMeasureSideBySide is a measurement for docs/dataflow.md, not a test
// of behaviour: it runs only with SKYJOIN_DATAFLOW_MEASURE=EVENTS set. The
// same events (makeInput) go through the pipeline on Prism and through the
// Go worker (enrich.Worker.Process in batches of 64 messages, as
// --enrich-batch was when it was measured), each with its own simulator and BigQueryWrite fake,
// and it logs events/s of each. It checks only that both stored every
// valid event, so that the figures mean something.
func TestMeasureSideBySide(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SKYJOIN_DATAFLOW_MEASURE"))
	if n <= 0 {
		t.Skip("a measurement: set SKYJOIN_DATAFLOW_MEASURE=EVENTS to run it")
	}
	now := time.Now().UTC()
	in := makeInput(t, n, now)

	// The pipeline on Prism.
	weatherSrv := httptest.NewServer(sim.New(sim.Options{}).OpenMeteo())
	t.Cleanup(weatherSrv.Close)
	fw := &bqtest.Write{}
	fw.Start(t)
	cfg := Config{BQTable: "test-project.skyjoin.events", BQEndpoint: fw.Addr, WeatherProvider: ProviderOpenMeteo,
		WeatherURL: weatherSrv.URL, WeatherQuota: "none", PIIPolicy: "keep", MaxClockSkew: 5 * time.Minute}
	p, root := beam.NewPipelineWithRoot()
	dead, records := Build(root, beam.CreateList(root, in.msgs), cfg)
	beam.ParDo0(root, &collectFn{Key: t.Name()}, dead)
	beam.ParDo0(root, &collectFn{Key: t.Name() + "/records"}, records)
	start := time.Now()
	if _, err := ptest.RunWithMetrics(p); err != nil {
		t.Fatal(err)
	}
	beamTook := time.Since(start)
	if got := distinct(fw.Rows()); got != len(in.valid) {
		t.Fatalf("the pipeline stored %d events of %d", got, len(in.valid))
	}

	// The Go worker, on the same kind of sink and provider.
	weatherSrv2 := httptest.NewServer(sim.New(sim.Options{}).OpenMeteo())
	t.Cleanup(weatherSrv2.Close)
	fw2 := &bqtest.Write{}
	bw, err := bigquery.NewWriter(t.Context(), bigquery.Config{Project: "test-project", Dataset: "skyjoin", WriteOptions: fw2.Start(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bw.Close()
	om, err := openmeteo.New(openmeteo.Config{BaseURL: weatherSrv2.URL, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	svc := weather.NewService(om, weather.ServiceConfig{StaleMaxAge: 30 * time.Minute})
	defer svc.Close()
	q := &memQueue{}
	w := enrich.New(enrich.Config{Subscription: "enrich", MaxClockSkew: 5 * time.Minute}, q, q, svc, bw, logger)
	msgs := make([]*broker.Message, len(in.msgs))
	for i, m := range in.msgs {
		msgs[i] = toBroker(m)
	}
	start = time.Now()
	for i := 0; i < len(msgs); i += 64 {
		if err := w.Process(context.Background(), msgs[i:min(i+64, len(msgs))]); err != nil {
			t.Fatal(err)
		}
	}
	workerTook := time.Since(start)
	if got := distinct(fw2.Rows()); got != len(in.valid) {
		t.Fatalf("the worker stored %d events of %d", got, len(in.valid))
	}
	t.Logf("%d events in %d messages: pipeline on Prism %s (%.0f events/s, job start included); Go worker %s (%.0f events/s)",
		in.events, len(in.msgs), beamTook.Round(time.Millisecond), float64(in.events)/beamTook.Seconds(),
		workerTook.Round(time.Millisecond), float64(in.events)/workerTook.Seconds())
}

func distinct(rows []map[string]any) int {
	seen := map[any]bool{}
	for _, r := range rows {
		seen[r["event_id"]] = true
	}
	return len(seen)
}

// memQueue is the worker's broker for the measurement: it acks everything
// and keeps what is published.
type memQueue struct {
	mu   sync.Mutex
	sent int
}

func (q *memQueue) Fetch(context.Context, int, time.Duration) ([]*broker.Message, error) {
	return nil, nil
}
func (q *memQueue) Ack(context.Context, ...*broker.Message) error                 { return nil }
func (q *memQueue) Nack(context.Context, time.Duration, ...*broker.Message) error { return nil }
func (q *memQueue) Close() error                                                  { return nil }
func (q *memQueue) Publish(_ context.Context, _ string, msgs ...*broker.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent += len(msgs)
	return nil
}
