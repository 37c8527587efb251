package bigquery

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated files under deploy/bigquery")

// The Terraform (deploy/terraform/modules/bigquery) makes the table and the
// view that Migrate makes: it reads the schema (deploy/bigquery/
// events.schema.json, internal/event), and these two files, generated from
// this package: the table's partitioning and clustering, and the view's
// query as a template of project, dataset and table.
func TestDeployFilesAreCommitted(t *testing.T) {
	layout, err := json.MarshalIndent(map[string]any{
		"partitioning": map[string]string{"type": "DAY", "field": partitionColumn},
		"clustering":   clusterBy,
		"view_suffix":  ViewSuffix,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	view := ViewSQL(Config{Project: "${project}", Dataset: "${dataset}", Table: "${table}"})
	for path, want := range map[string][]byte{
		"../../../deploy/bigquery/events.layout.json":      append(layout, '\n'),
		"../../../deploy/bigquery/events_latest.sql.tftpl": []byte(view + "\n"),
	} {
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is out of date: run go test ./internal/store/bigquery -run TestDeployFilesAreCommitted -update", path)
		}
	}
}
