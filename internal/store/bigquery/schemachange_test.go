package bigquery

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	bq "cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"cloud.google.com/go/bigquery/storage/managedwriter/adapt"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store/bigquery/bqtest"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// storageSchema is this build's table schema without the named columns, as
// the Storage Write API reports it.
func storageSchema(t *testing.T, without ...string) *storagepb.TableSchema {
	t.Helper()
	schema, err := tableSchema()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := adapt.BQSchemaToStorageTableSchema(schema)
	if err != nil {
		t.Fatal(err)
	}
	ts.Fields = slices.DeleteFunc(ts.Fields, func(f *storagepb.TableFieldSchema) bool { return slices.Contains(without, f.GetName()) })
	return ts
}

// TestWriterPicksUpAddedColumn: a writer opened on a table without the
// properties column (a table of the previous schema) keeps writing records
// without properties; a record with properties is not written without
// them (Write fails, nothing is stored, the caller redelivers); once
// migrate adds the column the same writer writes them, with their
// properties, by refetching the table's schema, or by the updated_schema
// BigQuery reports in a response. No record is lost.
func TestWriterPicksUpAddedColumn(t *testing.T) {
	for _, how := range []string{"refetch", "updated_schema"} {
		t.Run(how, func(t *testing.T) {
			fw := &bqtest.Write{}
			fw.SetTable(storageSchema(t, "properties"))
			s := openFake(t, fw, nil, nil)
			s.Writer.schemaRefresh = 0

			plain := storetest.Records(40, 5)
			for i := range plain {
				plain[i].Properties = nil
			}
			if err := s.Write(t.Context(), plain); err != nil {
				t.Fatalf("write records without properties to the old table: %v", err)
			}
			typed := storetest.Records(41, 3)
			for i := range typed {
				typed[i].Properties = json.RawMessage(`{"amount":12.5,"items":["a","b"],"n":{"x":true}}`)
			}
			err := s.Write(t.Context(), typed)
			if err == nil || !strings.Contains(err.Error(), "no column properties") || !strings.Contains(err.Error(), "migrate") {
				t.Fatalf("write records with properties before migrate: %v, want an error naming the column", err)
			}
			if n := len(fw.Rows()); n != len(plain) {
				t.Fatalf("%d rows stored, want %d: a failed Write stored something", n, len(plain))
			}

			// migrate adds the column.
			fw.SetTable(storageSchema(t))
			if how == "updated_schema" {
				// The writer does not look again on its own for records
				// without properties; the response of this append reports
				// the new schema.
				s.Writer.schemaRefresh = 1 << 62
				more := storetest.Records(42, 2)
				for i := range more {
					more[i].Properties = nil
				}
				if err := s.Write(t.Context(), more); err != nil {
					t.Fatal(err)
				}
				plain = append(plain, more...)
				if enc := s.Writer.encoder(); len(enc.missing) != 0 {
					t.Fatalf("after a response with updated_schema the writer still lacks %v", enc.missing)
				}
			}
			if err := s.Write(t.Context(), typed); err != nil {
				t.Fatalf("write records with properties after migrate: %v", err)
			}
			rows := fw.Rows()
			if len(rows) != len(plain)+len(typed) {
				t.Fatalf("%d rows stored, want %d", len(rows), len(plain)+len(typed))
			}
			byID := map[string]map[string]any{}
			for _, r := range rows {
				byID[r["event_id"].(string)] = r
			}
			for _, r := range typed {
				row, ok := byID[r.EventID]
				if !ok {
					t.Fatalf("%s lost", r.EventID)
				}
				got, _ := row["properties"].(string)
				if string(storetest.CanonicalJSON([]byte(got))) != string(storetest.CanonicalJSON(r.Properties)) {
					t.Errorf("%s: properties %q, want %s", r.EventID, got, r.Properties)
				}
			}
			for _, r := range plain {
				if _, ok := byID[r.EventID]; !ok {
					t.Errorf("%s lost", r.EventID)
				}
			}
		})
	}
}

// TestViewHasProperties: the deduplicating view (what readers, analysts
// and Looker Studio query) selects the properties column.
func TestViewHasProperties(t *testing.T) {
	sql := ViewSQL(Config{Project: "p", Dataset: "d"})
	if !strings.Contains(sql, "properties") {
		t.Errorf("view SQL lacks properties:\n%s", sql)
	}
	var found bool
	for _, f := range event.BigQueryFields() {
		if f.Name == "properties" {
			found = f.Type == "JSON" && f.Mode == "NULLABLE"
		}
	}
	if !found {
		t.Error("the BigQuery schema has no NULLABLE JSON column properties")
	}
}

// TestMigrateAddsProperties: migrate on a table of the previous schema
// adds the properties column, NULLABLE JSON, and nothing else.
func TestMigrateAddsProperties(t *testing.T) {
	want, err := tableSchema()
	if err != nil {
		t.Fatal(err)
	}
	old := slices.DeleteFunc(slices.Clone(want), func(f *bq.FieldSchema) bool { return f.Name == "properties" })
	got, changes, err := mergeSchema(old, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0] != "added column properties JSON" {
		t.Errorf("changes %q, want the properties column added", changes)
	}
	last := got[len(got)-1]
	if last.Name != "properties" || last.Type != bq.JSONFieldType || last.Required {
		t.Errorf("added %+v", last)
	}
}
