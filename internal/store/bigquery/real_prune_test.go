package bigquery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestRealProjectPruning dry-runs reader queries on a real table (only with
// SKYJOIN_GCP_PROJECT set, as TestRealProject): a List filtered on one day
// must read fewer bytes than the table holds, so the filter on occurred_at
// reached the table below the dedup; and the same filter on the view must
// read fewer bytes than the whole view, so BigQuery moved it below the
// view's window. The rows go in with a load job, into the table's managed
// storage: rows appended through the Storage Write API sit in the
// streaming buffer for a while, and a dry run counts no bytes there. A dry
// run costs nothing; the load job is free too.
func TestRealProjectPruning(t *testing.T) {
	cfg, ctx := realTable(t, "events_prune", 30*24*time.Hour)
	rd, err := NewReader(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
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
	if err := loadRecords(ctx, cfg, recs); err != nil {
		t.Fatal(err)
	}

	dryRun := func(sql string, params []bigquery.QueryParameter) int64 {
		t.Helper()
		q := rd.readQuery(sql, params)
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
		t.Fatal("the dry run of the whole table reads 0 bytes after a load job: the comparisons below would prove nothing")
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
	viewAll := dryRun("SELECT "+selectColumns+" FROM "+cfg.viewSQLName(), nil)
	viewDay := dryRun("SELECT "+selectColumns+" FROM "+cfg.viewSQLName()+" WHERE occurred_at >= @since",
		[]bigquery.QueryParameter{{Name: "since", Value: today}})
	t.Logf("dry run: the whole view %d bytes; the view filtered on one day %d bytes", viewAll, viewDay)
	if viewAll == 0 {
		t.Fatal("the dry run of the whole view reads 0 bytes")
	}
	if viewDay >= viewAll {
		t.Errorf("the view filtered on one day reads %d bytes, the whole view %d: BigQuery did not move the occurred_at filter below the view's window", viewDay, viewAll)
	}
}

// loadRecords appends recs to cfg's table with a load job (newline-delimited
// JSON), which writes to the table's managed storage, not the streaming
// buffer.
func loadRecords(ctx context.Context, cfg Config, recs []event.Record) error {
	data, err := ndjsonRows(recs)
	if err != nil {
		return err
	}
	c, err := bigquery.NewClient(ctx, cfg.Project)
	if err != nil {
		return err
	}
	defer c.Close()
	src := bigquery.NewReaderSource(bytes.NewReader(data))
	src.SourceFormat = bigquery.JSON
	l := c.Dataset(cfg.Dataset).Table(cfg.table()).LoaderFrom(src)
	l.CreateDisposition = bigquery.CreateNever
	l.WriteDisposition = bigquery.WriteAppend
	l.Location = cfg.Location
	job, err := l.Run(ctx)
	if err != nil {
		return fmt.Errorf("load job: %w", err)
	}
	st, err := job.Wait(ctx)
	if err == nil {
		err = st.Err()
	}
	if err != nil {
		return fmt.Errorf("load job %s: %w", job.ID(), err)
	}
	return nil
}

// ndjsonRows is recs as a load job's newline-delimited JSON: one object a
// record, its columns by name, NULLs left out, timestamps in UTC as
// "YYYY-MM-DD HH:MM:SS.ffffff", the JSON column as the JSON value itself.
func ndjsonRows(recs []event.Record) ([]byte, error) {
	cols := event.Columns()
	var b bytes.Buffer
	for i := range recs {
		row := make(map[string]any, len(cols))
		for j, v := range recs[i].Values() {
			switch x := v.(type) {
			case nil:
				continue
			case time.Time:
				row[cols[j].Name] = x.UTC().Format("2006-01-02 15:04:05.000000")
			case string:
				if cols[j].Kind == event.KindObject {
					row[cols[j].Name] = json.RawMessage(x)
				} else {
					row[cols[j].Name] = x
				}
			default:
				row[cols[j].Name] = x
			}
		}
		line, err := json.Marshal(row)
		if err != nil {
			return nil, fmt.Errorf("record %s: %w", recs[i].EventID, err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// TestNDJSONRows: the load job's rows of TestRealProjectPruning (which
// runs only against a real project) hold every column a record has, by
// name, in the formats a BigQuery load job takes: timestamps in UTC to the
// microsecond, the JSON column as a JSON object, no NULLs.
func TestNDJSONRows(t *testing.T) {
	recs := roundTripRecords()
	data, err := ndjsonRows(recs)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(lines) != len(recs) {
		t.Fatalf("%d lines for %d records", len(lines), len(recs))
	}
	cols := event.Columns()
	var props int
	for i, line := range lines {
		var row map[string]any
		if err := json.Unmarshal(line, &row); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, line)
		}
		for j, v := range recs[i].Values() {
			c := cols[j]
			got, ok := row[c.Name]
			if v == nil {
				if ok {
					t.Errorf("%s: %s is %v, want it left out (NULL)", recs[i].EventID, c.Name, got)
				}
				continue
			}
			if !ok {
				t.Errorf("%s: no %s", recs[i].EventID, c.Name)
				continue
			}
			switch c.Kind {
			case event.KindTimestamp:
				s, _ := got.(string)
				ts, err := time.Parse("2006-01-02 15:04:05.000000", s)
				if want := v.(time.Time).UTC().Truncate(time.Microsecond); err != nil || !ts.Equal(want) {
					t.Errorf("%s: %s is %q (%v), want %s", recs[i].EventID, c.Name, s, err, want)
				}
			case event.KindObject:
				if _, ok := got.(map[string]any); !ok {
					t.Errorf("%s: %s is %T, want a JSON object", recs[i].EventID, c.Name, got)
				}
				props++
			}
		}
	}
	if props == 0 {
		t.Error("no record has properties: the JSON column is not checked")
	}
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
