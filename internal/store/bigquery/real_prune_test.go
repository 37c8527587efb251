package bigquery

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"

	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestRealProjectPruning dry-runs reader queries on a real table (only with
// SKYJOIN_GCP_PROJECT set, as TestRealProject): a List filtered on one day
// must read fewer bytes than the table holds, so the filter on occurred_at
// reached the table below the dedup. It also logs what the same filter on
// the view reads, the fact docs/gcp.md leaves open. A dry run costs
// nothing.
func TestRealProjectPruning(t *testing.T) {
	cfg, ctx := realTable(t, "events_prune", 30*24*time.Hour)
	s, err := Open(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Rows in several day partitions: today's and three earlier days'.
	now := time.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	recs := storetest.Records(40, 40)
	for i := range recs {
		r := &recs[i]
		day := today.AddDate(0, 0, -(i % 4))
		r.OccurredAt = day.Add(time.Duration(i) * time.Minute)
		r.IngestedAt = r.OccurredAt.Add(time.Second)
		r.ProcessedAt = now
	}
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}

	dryRun := func(sql string, params []bigquery.QueryParameter) int64 {
		t.Helper()
		q := s.Reader.readQuery(sql, params)
		q.DryRun = true
		job, err := q.Run(ctx)
		if err != nil {
			t.Fatalf("dry run %s: %v", sql, err)
		}
		qs, ok := job.LastStatus().Statistics.Details.(*bigquery.QueryStatistics)
		if !ok {
			t.Fatalf("dry run: statistics %T", job.LastStatus().Statistics.Details)
		}
		return qs.TotalBytesProcessed
	}
	all := dryRun("SELECT "+selectColumns+" FROM "+cfg.tableSQLName(), nil)
	if all == 0 {
		t.Skip("the dry run of the whole table reads 0 bytes: the rows are not in the table's storage yet (write buffer); run again later")
	}
	sql, params, err := listSQL(cfg, store.Query{Since: today, Until: today.Add(24 * time.Hour)}, 100)
	if err != nil {
		t.Fatal(err)
	}
	oneDay := dryRun(sql, params)
	t.Logf("dry run: whole table %d bytes; List of one day %d bytes", all, oneDay)
	if oneDay >= all {
		t.Errorf("List of one day reads %d bytes, the whole table %d: the occurred_at filter does not prune", oneDay, all)
	}
	view := dryRun("SELECT "+selectColumns+" FROM "+cfg.viewSQLName()+" WHERE occurred_at >= @since",
		[]bigquery.QueryParameter{{Name: "since", Value: today}})
	t.Logf("dry run: the view filtered on one day reads %d bytes (pushed below its window if less than %d)", view, all)
}

// realTable returns the Config of a new table (named prefix + a time) in
// the real project of SKYJOIN_GCP_PROJECT, migrated, deleted with its view
// when the test ends, and a context bounding the test; it skips the test
// without SKYJOIN_GCP_PROJECT. SKYJOIN_BQ_DATASET (default skyjoin_test,
// created if missing) and SKYJOIN_BQ_LOCATION (default EU) choose where.
func realTable(t *testing.T, prefix string, retention time.Duration) (Config, context.Context) {
	t.Helper()
	project := os.Getenv("SKYJOIN_GCP_PROJECT")
	if project == "" {
		t.Skip("SKYJOIN_GCP_PROJECT is not set")
	}
	cfg := Config{
		Project:   project,
		Dataset:   envOr("SKYJOIN_BQ_DATASET", "skyjoin_test"),
		Location:  envOr("SKYJOIN_BQ_LOCATION", "EU"),
		Table:     fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano()),
		Retention: retention,
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	changes, err := Migrate(ctx, cfg, MigrateOptions{CreateDataset: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("migrate: %q", changes)
	t.Cleanup(func() {
		c, err := bigquery.NewClient(context.Background(), cfg.Project)
		if err != nil {
			t.Log(err)
			return
		}
		defer c.Close()
		for _, name := range []string{cfg.View(), cfg.table()} {
			if err := c.Dataset(cfg.Dataset).Table(name).Delete(context.Background()); err != nil {
				t.Logf("delete %s: %v", name, err)
			}
		}
	})
	return cfg, ctx
}
