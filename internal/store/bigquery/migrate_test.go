package bigquery

import (
	"slices"
	"strings"
	"testing"
	"time"

	bq "google.golang.org/api/bigquery/v2"
)

func TestMigrate(t *testing.T) {
	fq := &fakeQuery{answer: func(*bq.QueryRequest) [][]any { return nil }}
	cfg := Config{Project: testProject, Dataset: testDataset, Location: "EU", Retention: 400 * 24 * time.Hour,
		QueryOptions: startFakeQuery(t, fq)}

	if _, err := Migrate(t.Context(), cfg, MigrateOptions{}); err == nil || !strings.Contains(err.Error(), "--create-dataset") {
		t.Fatalf("Migrate without the dataset: %v, want a hint to create it", err)
	}
	changes, err := Migrate(t.Context(), cfg, MigrateOptions{CreateDataset: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 3 {
		t.Errorf("changes = %q, want dataset, table and view", changes)
	}
	if ds := fq.datasets[testDataset]; ds == nil || ds.Location != "EU" {
		t.Fatalf("dataset = %+v", ds)
	}
	tb := fq.tables[testDataset+".events"]
	if tb == nil {
		t.Fatal("no table")
	}
	if tp := tb.TimePartitioning; tp == nil || tp.Field != "occurred_at" || tp.Type != "DAY" || tp.ExpirationMs != 400*24*3600*1000 {
		t.Errorf("partitioning = %+v", tb.TimePartitioning)
	}
	if tb.Clustering == nil || !slices.Equal(tb.Clustering.Fields, []string{"location_country", "user_id"}) {
		t.Errorf("clustering = %+v", tb.Clustering)
	}
	if len(tb.Schema.Fields) != len(restSchema().Fields) || tb.Schema.Fields[0].Name != "event_id" || tb.Schema.Fields[0].Mode != "REQUIRED" {
		t.Errorf("schema = %d fields, first %+v", len(tb.Schema.Fields), tb.Schema.Fields[0])
	}
	view := fq.tables[testDataset+".events_latest"]
	if view == nil || view.View == nil {
		t.Fatal("no view")
	}
	for _, frag := range []string{
		"FROM `skyjoin-test.skyjoin_ds.events`",
		"QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id, occurred_at, location_country, user_id ORDER BY processed_at DESC) = 1",
	} {
		if !strings.Contains(view.View.Query, frag) {
			t.Errorf("view query lacks %q:\n%s", frag, view.View.Query)
		}
	}
	if view.View.UseLegacySql {
		t.Error("view in legacy SQL")
	}

	// A second run changes nothing.
	if changes, err := Migrate(t.Context(), cfg, MigrateOptions{CreateDataset: true}); err != nil || len(changes) != 0 || fq.patches != 0 {
		t.Fatalf("second Migrate: %q, %v, %d patches; want no changes", changes, err, fq.patches)
	}

	// An older table: a nullable column missing, another retention, a
	// stale view.
	tb.Schema.Fields = slices.DeleteFunc(tb.Schema.Fields, func(f *bq.TableFieldSchema) bool { return f.Name == "weather_provider" })
	view.View.Query = "SELECT 1"
	cfg.Retention = 30 * 24 * time.Hour
	changes, err = Migrate(t.Context(), cfg, MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"added column weather_provider", "partition expiration 400d -> 30d", "updated the query of view"}
	for _, w := range want {
		if !slices.ContainsFunc(changes, func(c string) bool { return strings.Contains(c, w) }) {
			t.Errorf("changes %q lack %q", changes, w)
		}
	}
	if !slices.ContainsFunc(tb.Schema.Fields, func(f *bq.TableFieldSchema) bool { return f.Name == "weather_provider" }) ||
		tb.TimePartitioning.ExpirationMs != 30*24*3600*1000 || view.View.Query != ViewSQL(cfg) {
		t.Errorf("table not updated: %+v %+v", tb.TimePartitioning, view.View)
	}

	// What cannot be done in place is refused.
	tb.Schema.Fields = slices.DeleteFunc(tb.Schema.Fields, func(f *bq.TableFieldSchema) bool { return f.Name == "user_id" })
	for _, f := range tb.Schema.Fields {
		if f.Name == "weather_code" {
			f.Type = "STRING"
		}
	}
	_, err = Migrate(t.Context(), cfg, MigrateOptions{})
	if err == nil || !strings.Contains(err.Error(), "user_id is REQUIRED") || !strings.Contains(err.Error(), "weather_code is STRING") {
		t.Errorf("Migrate of an incompatible table: %v", err)
	}
}
