package event

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestBigQuerySchemaIsCommitted(t *testing.T) {
	// deploy/bigquery/events.schema.json is generated; skyjoin migrate and
	// Terraform read it. Keep it in step with the Go types.
	// Regenerate with: go test ./internal/event -run TestBigQuerySchemaIsCommitted -update
	path := "../../deploy/bigquery/events.schema.json"
	if *update {
		writeFile(t, path, BigQuerySchema())
	}
	if got := readFile(t, path); !bytes.Equal(bytes.TrimSpace(got), BigQuerySchema()) {
		t.Errorf("%s is out of date: run go test ./internal/event -run TestBigQuerySchemaIsCommitted -update", path)
	}
}

func TestBigQuerySchema(t *testing.T) {
	var fields []BigQueryField
	if err := json.Unmarshal(BigQuerySchema(), &fields); err != nil {
		t.Fatal(err)
	}
	cols := Columns()
	if len(fields) != len(cols) {
		t.Fatalf("%d fields for %d columns", len(fields), len(cols))
	}
	want := map[string][2]string{ // a sample of name -> type, mode
		"event_id":              {"STRING", "REQUIRED"},
		"occurred_at":           {"TIMESTAMP", "REQUIRED"},
		"user_id":               {"STRING", "REQUIRED"},
		"location_latitude":     {"FLOAT64", "NULLABLE"},
		"location_country":      {"STRING", "REQUIRED"},
		"attributes":            {"STRING", "NULLABLE"},
		"properties":            {"JSON", "NULLABLE"},
		"weather_observed_at":   {"TIMESTAMP", "NULLABLE"},
		"weather_temperature_c": {"FLOAT64", "NULLABLE"},
		"weather_code":          {"INT64", "NULLABLE"},
		"enrichment_status":     {"STRING", "REQUIRED"},
		"processed_at":          {"TIMESTAMP", "REQUIRED"},
	}
	for i, f := range fields {
		if f.Name != cols[i].Name {
			t.Errorf("field %d is %s, column %s", i, f.Name, cols[i].Name)
		}
		if f.Description == "" {
			t.Errorf("field %s has no description", f.Name)
		}
		if w, ok := want[f.Name]; ok {
			if f.Type != w[0] || f.Mode != w[1] {
				t.Errorf("%s is %s %s, want %s %s", f.Name, f.Type, f.Mode, w[0], w[1])
			}
			delete(want, f.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("fields missing: %v", want)
	}
}
