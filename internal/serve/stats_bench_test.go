//go:build !noduckdb

package serve_test

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// BenchmarkStats measures GET /v1/stats over 100k records in DuckDB.
func BenchmarkStats(b *testing.B) {
	st, err := duckdb.Open(context.Background(), duckdb.Config{Path: filepath.Join(b.TempDir(), "skyjoin.duckdb")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	recs := storetest.Records(1, 100_000)
	for i := 0; i < len(recs); i += 10_000 {
		if err := st.Write(context.Background(), recs[i:i+10_000]); err != nil {
			b.Fatal(err)
		}
	}
	h := serve.New(st, serve.Options{Logger: platform.Discard})
	since := url.QueryEscape(storetest.Base.Add(-time.Hour).Format(time.RFC3339)) +
		"&until=" + url.QueryEscape(storetest.Base.Add(57*time.Hour).Format(time.RFC3339))
	for _, q := range []string{
		"group_by=country",
		"group_by=city",
		"group_by=time&bucket=5m&since=" + since,
		"group_by=time&bucket=1m&since=" + since + "&min_temp=0&condition=clear+sky",
	} {
		b.Run(q, func(b *testing.B) {
			req := must(http.NewRequestWithContext(context.Background(), http.MethodGet, "/v1/stats?"+q, nil))
			for b.Loop() {
				rec := newRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
