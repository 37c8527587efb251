package enrich

import (
	"context"
	"strings"
	"testing"

	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
	"github.com/skyjoin/skyjoin/internal/store/bigquery/bqtest"
)

// TestWorkerWithBigQueryWriter runs the worker on the BigQuery store's
// Storage Write API writer against the in-process fake (bqtest, which the
// Beam pipeline's tests use too): the records land in the table, and a row
// BigQuery refuses is dead-lettered with its reason (stage store) while the
// others are acked.
func TestWorkerWithBigQueryWriter(t *testing.T) {
	fw := &bqtest.Write{}
	fw.Hook = func(_ int, rows []map[string]any) (*storagepb.AppendRowsResponse, error) {
		for i, r := range rows {
			if r["event_id"] == "b" {
				return &storagepb.AppendRowsResponse{
					Response: &storagepb.AppendRowsResponse_Error{Error: &status.Status{Code: int32(codes.InvalidArgument), Message: "Errors found while processing rows."}},
					RowErrors: []*storagepb.RowError{{Index: int64(i), Code: storagepb.RowError_FIELDS_ERROR,
						Message: "Field location_postcode: value too long"}},
				}, nil
			}
		}
		return nil, nil
	}
	cfg := bigquery.Config{Project: "test-project", Dataset: "skyjoin", WriteOptions: fw.Start(t)}
	bw, err := bigquery.NewWriter(t.Context(), cfg, platform.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bw.Close() })
	q := &queue{}
	w := newWorker(q, &joiner{failSouthOf: -1000}, bw)
	m := envelope.NewEvents([]byte(ev("a", 10)+"\n"+ev("b", 20)+"\n"+ev("c", 30)), event.ContentTypeNDJSON, 3, now.Add(-1), envelope.SourceIngest)
	m.Deliveries = 1
	if err := w.Process(context.Background(), []*broker.Message{m}); err != nil {
		t.Fatal(err)
	}
	var stored []string
	for _, r := range fw.Rows() {
		stored = append(stored, r["event_id"].(string))
		if r["enrichment_status"] != event.StatusEnriched {
			t.Errorf("row %v: status %v", r["event_id"], r["enrichment_status"])
		}
	}
	if len(stored) != 2 || stored[0] != "a" || stored[1] != "c" {
		t.Errorf("stored %v, want a and c", stored)
	}
	if len(q.dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(q.dead))
	}
	d := envelope.ParseDeadLetter(q.dead[0])
	if d.Stage != "store" || !strings.Contains(d.Reason, "Field location_postcode: value too long") || d.Index != 1 {
		t.Errorf("dead letter %+v", d)
	}
	if len(q.acked) != 1 {
		t.Errorf("%d messages acked, want 1", len(q.acked))
	}
}
