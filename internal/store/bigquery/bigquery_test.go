package bigquery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	bq "google.golang.org/api/bigquery/v2"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/bigquery/bqtest"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

const (
	testProject = "skyjoin-test"
	testDataset = "skyjoin_ds"
)

// openFake opens a Store on the two fakes.
func openFake(t *testing.T, fw *bqtest.Write, fq *fakeQuery, mod func(*Config)) *Store {
	t.Helper()
	cfg := Config{Project: testProject, Dataset: testDataset, Location: "EU", MaxAttempts: 3}
	cfg.WriteOptions = fw.Start(t)
	if fq == nil {
		fq = &fakeQuery{answer: func(*bq.QueryRequest) [][]any { return nil }}
	}
	cfg.QueryOptions = startFakeQuery(t, fq)
	if mod != nil {
		mod(&cfg)
	}
	s, err := Open(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Writer.sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func storedIDs(fw *bqtest.Write) []string {
	var out []string
	for _, r := range fw.Rows() {
		out = append(out, r["event_id"].(string))
	}
	return out
}

// roundTripRecords are storetest's realistic records and its edge cases.
func roundTripRecords() []event.Record {
	recs := storetest.Records(1, 60)
	r := recs[0]
	r.EventID = "rt-zones"
	zone := time.FixedZone("NZDT", 13*3600)
	r.OccurredAt = time.Date(2026, 1, 15, 10, 0, 0, 123456789, zone)
	r.User = event.User{ID: "u-minimal"}
	r.Attributes = map[string]string{"app": "naïve café ☕", "empty": "", "quote": `a "b" \c`}
	r.Weather = &event.Weather{ObservedAt: time.Date(2026, 1, 15, 9, 45, 0, 0, zone), Provider: "sim"}
	return append(recs, r)
}

// TestRoundTrip writes through the Storage Write API fake, serves what it
// stored from the REST fake, and reads every record back with Get.
func TestRoundTrip(t *testing.T) {
	fw := &bqtest.Write{}
	fq := &fakeQuery{}
	fq.answer = func(q *bq.QueryRequest) [][]any {
		id, ok := param(q, "event_id")
		if !ok {
			t.Errorf("Get without an event_id parameter: %s", q.Query)
		}
		for _, r := range fw.Rows() {
			if r["event_id"] == id {
				return [][]any{rowValues(r)}
			}
		}
		return nil
	}
	s := openFake(t, fw, fq, nil)
	recs := roundTripRecords()
	if err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if got := storedIDs(fw); len(got) != len(recs) {
		t.Fatalf("stored %d rows, want %d", len(got), len(recs))
	}
	for _, r := range recs {
		if r.Seq != r.ProcessedAt.UnixMicro() {
			t.Fatalf("Write set seq %d on %s, want processed_at in µs", r.Seq, r.EventID)
		}
	}
	for _, want := range recs {
		got, err := s.Get(t.Context(), want.EventID)
		if err != nil {
			t.Fatalf("Get(%s): %v", want.EventID, err)
		}
		if d := storetest.Diff(want, got); d != "" {
			t.Errorf("%s: %s", want.EventID, d)
		}
		if got.Seq != got.ProcessedAt.UnixMicro() {
			t.Errorf("%s: seq %d, want processed_at in µs %d", want.EventID, got.Seq, got.ProcessedAt.UnixMicro())
		}
	}
	// TIMESTAMP travels as int64 microseconds.
	for _, r := range fw.Rows() {
		if r["event_id"] == "rt-zones" {
			if got, want := r["occurred_at"], time.Date(2026, 1, 14, 21, 0, 0, 123456000, time.UTC).UnixMicro(); got != want {
				t.Errorf("occurred_at sent as %v, want %d", got, want)
			}
			if _, ok := r["weather_temperature_c"]; !ok {
				t.Error("a zero temperature of present weather was not sent")
			}
		}
	}
	if _, err := s.Get(t.Context(), "' OR 1=1 --"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(injection): %v, want ErrNotFound", err)
	}
}

func TestWriteEmpty(t *testing.T) {
	fw := &bqtest.Write{}
	s := openFake(t, fw, nil, nil)
	if err := s.Write(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if fw.Appends() != 0 {
		t.Errorf("%d appends for no records", fw.Appends())
	}
}

func TestWriteBatches(t *testing.T) {
	fw := &bqtest.Write{}
	s := openFake(t, fw, nil, func(c *Config) { c.MaxRequestBytes = 16 << 10 })
	recs := storetest.Records(2, 300)
	if err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	got := storedIDs(fw)
	slices.Sort(got)
	want := make([]string, len(recs))
	for i, r := range recs {
		want[i] = r.EventID
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("stored %d rows, want the %d records once each", len(got), len(want))
	}
	if fw.Appends() < 5 {
		t.Errorf("%d appends for about 150 kB in 16 kB requests", fw.Appends())
	}
}

// rejectIDs answers a request holding one of the ids as BigQuery does: the
// whole request fails, with a row error for each bad row.
func rejectIDs(ids ...string) func(int, []map[string]any) (*storagepb.AppendRowsResponse, error) {
	return func(_ int, rows []map[string]any) (*storagepb.AppendRowsResponse, error) {
		var rowErrs []*storagepb.RowError
		for i, r := range rows {
			if slices.Contains(ids, r["event_id"].(string)) {
				rowErrs = append(rowErrs, &storagepb.RowError{Index: int64(i), Code: storagepb.RowError_FIELDS_ERROR,
					Message: "Field location_postcode: value too long"})
			}
		}
		if rowErrs == nil {
			return nil, nil
		}
		return &storagepb.AppendRowsResponse{
			Response:  &storagepb.AppendRowsResponse_Error{Error: &status.Status{Code: int32(codes.InvalidArgument), Message: "Errors found while processing rows."}},
			RowErrors: rowErrs,
		}, nil
	}
}

func TestWriteRowErrors(t *testing.T) {
	fw := &bqtest.Write{}
	s := openFake(t, fw, nil, func(c *Config) { c.MaxRequestBytes = 8 << 10 })
	recs := storetest.Records(3, 60)
	bad := []int{3, 4, 41}
	fw.Hook = rejectIDs(recs[3].EventID, recs[4].EventID, recs[41].EventID)
	err := s.Write(t.Context(), recs)
	var rowErrs *RowErrors
	if !errors.As(err, &rowErrs) {
		t.Fatalf("Write: %v, want *RowErrors", err)
	}
	var gotIdx []int
	for _, r := range rowErrs.Rows {
		gotIdx = append(gotIdx, r.Index)
		if r.EventID != recs[r.Index].EventID || r.Message == "" {
			t.Errorf("row error %+v does not name record %d", r, r.Index)
		}
	}
	wantIdx := []int{3, 4, 41}
	if !slices.Equal(gotIdx, wantIdx) || rowErrs.Total != len(recs) {
		t.Fatalf("rejected %v of %d, want %v of %d: %v", gotIdx, rowErrs.Total, wantIdx, len(recs), err)
	}
	if rowErrs.Rows[0].Code != "FIELDS_ERROR" {
		t.Errorf("codes: %+v", rowErrs.Rows)
	}
	if reasons := rowErrs.Reasons(); len(reasons) != 3 || !strings.Contains(reasons[41], "too long") {
		t.Errorf("Reasons() = %v", reasons)
	}
	// Every other record is stored, once.
	stored := storedIDs(fw)
	if len(stored) != len(recs)-3 {
		t.Errorf("stored %d rows, want %d", len(stored), len(recs)-3)
	}
	for i, r := range recs {
		want := !slices.Contains(bad, i)
		if slices.Contains(stored, r.EventID) != want {
			t.Errorf("record %d stored: %v, want %v", i, !want, want)
		}
	}
	if !strings.Contains(err.Error(), "3 of 60 records rejected") {
		t.Errorf("error text: %v", err)
	}
}

func TestWriteTransientFailures(t *testing.T) {
	tests := []struct {
		name string
		fail func() (*storagepb.AppendRowsResponse, error)
	}{
		{"connection ends Unavailable", func() (*storagepb.AppendRowsResponse, error) {
			return nil, grpcstatus.Error(codes.Unavailable, "backend restarting")
		}},
		{"in-band Unavailable", func() (*storagepb.AppendRowsResponse, error) {
			return &storagepb.AppendRowsResponse{Response: &storagepb.AppendRowsResponse_Error{
				Error: &status.Status{Code: int32(codes.Unavailable), Message: "try again"}}}, nil
		}},
		{"in-band Internal", func() (*storagepb.AppendRowsResponse, error) {
			return &storagepb.AppendRowsResponse{Response: &storagepb.AppendRowsResponse_Error{
				Error: &status.Status{Code: int32(codes.Internal), Message: "oops"}}}, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fw := &bqtest.Write{}
			fw.Hook = func(n int, _ []map[string]any) (*storagepb.AppendRowsResponse, error) {
				if n <= 2 {
					return tt.fail()
				}
				return nil, nil
			}
			s := openFake(t, fw, nil, nil)
			recs := storetest.Records(4, 20)
			if err := s.Write(t.Context(), recs); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if got := storedIDs(fw); len(got) != len(recs) {
				t.Errorf("stored %d rows, want %d", len(got), len(recs))
			}
			if fw.Appends() < 3 {
				t.Errorf("%d appends, want the failures retried", fw.Appends())
			}
		})
	}
}

func TestWritePermanentFailure(t *testing.T) {
	fw := &bqtest.Write{}
	fw.Hook = func(int, []map[string]any) (*storagepb.AppendRowsResponse, error) {
		return nil, grpcstatus.Error(codes.PermissionDenied, "bigquery.tables.updateData denied")
	}
	s := openFake(t, fw, nil, nil)
	err := s.Write(t.Context(), storetest.Records(5, 10))
	var rowErrs *RowErrors
	if errors.As(err, &rowErrs) || grpcstatus.Code(err) != codes.PermissionDenied {
		t.Fatalf("Write: %v, want the PermissionDenied error", err)
	}
	if fw.Appends() != 1 {
		t.Errorf("%d appends of a request denied for good, want 1", fw.Appends())
	}
}

func TestWriteRetriesGiveUp(t *testing.T) {
	fw := &bqtest.Write{}
	fw.Hook = func(int, []map[string]any) (*storagepb.AppendRowsResponse, error) {
		return &storagepb.AppendRowsResponse{Response: &storagepb.AppendRowsResponse_Error{
			Error: &status.Status{Code: int32(codes.Unavailable), Message: "down"}}}, nil
	}
	s := openFake(t, fw, nil, func(c *Config) { c.MaxAttempts = 2 })
	err := s.Write(t.Context(), storetest.Records(6, 5))
	if err == nil || !strings.Contains(err.Error(), "attempt 2") {
		t.Fatalf("Write: %v, want a failure after 2 attempts", err)
	}
	if len(fw.Rows()) != 0 {
		t.Error("rows stored")
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		want    Config
		wantErr string
	}{
		{"bigquery://my-project/skyjoin", Config{Project: "my-project", Dataset: "skyjoin"}, ""},
		{"bigquery://my-project/sky_join?table=ev&location=EU&retention=400d",
			Config{Project: "my-project", Dataset: "sky_join", Table: "ev", Location: "EU", Retention: 400 * 24 * time.Hour}, ""},
		{"bigquery://my-project/d?retention=0", Config{Project: "my-project", Dataset: "d"}, ""},
		{"bigquery://my-project/d?retention=48h", Config{Project: "my-project", Dataset: "d", Retention: 48 * time.Hour}, ""},
		{"bigquery://my-project/d?retention=2h", Config{}, "at least 1d"},
		{"bigquery://my-project/d?retention=soon", Config{}, "retention"},
		{"bigquery://my-project/d?max_bytes_billed=10GiB", Config{Project: "my-project", Dataset: "d", MaxBytesBilled: 10 << 30}, ""},
		{"bigquery://my-project/d?max_bytes_billed=500MB", Config{Project: "my-project", Dataset: "d", MaxBytesBilled: 500e6}, ""},
		{"bigquery://my-project/d?max_bytes_billed=none", Config{Project: "my-project", Dataset: "d", MaxBytesBilled: NoMaxBytesBilled}, ""},
		{"bigquery://my-project/d?max_bytes_billed=1MB", Config{}, "under 10MiB"},
		{"bigquery://my-project/d?max_bytes_billed=lots", Config{}, "max_bytes_billed"},
		{"bigquery://my-project/d?max_bytes_billed=-5GB", Config{}, "max_bytes_billed"},
		{"bigquery://my-project/d?tabel=x", Config{}, `unknown parameter "tabel"`},
		{"bigquery://my-project/", Config{}, "dataset"},
		{"bigquery://my-project/d-x", Config{}, "dataset"},
		{"bigquery:///d", Config{}, "project"},
		{"bigquery://my-project/d?table=a`b", Config{}, "table"},
		{"bigquery://my-project/d?table=a&table=b", Config{}, "given 2 times"},
		{"duckdb://x", Config{}, "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := ParseURL(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURL = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("ParseURL = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
