package event

import (
	"encoding/json"
	"fmt"
)

// BigQueryField is one column of a BigQuery table schema, in the JSON form
// the REST API, `bq mk --schema` and Terraform's google_bigquery_table use.
type BigQueryField struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Mode        string `json:"mode"`
	Description string `json:"description,omitempty"`
}

// BigQueryType is the BigQuery (GoogleSQL) type of a column kind.
//
// KindJSON (attributes) is a STRING holding a JSON object, not a JSON
// column: every client reads a STRING (Looker Studio fields and calculated
// fields, the Go client, CSV exports), BigQuery's JSON functions
// (JSON_VALUE(attributes, '$.source')) accept it as it is, and the store
// reads it back byte for byte. A JSON column would buy field access without
// parsing (attributes.source) at the price of clients that do not handle the
// type; attributes are small (at most 64 short strings), so parsing is cheap.
//
// KindObject (properties) is a JSON column: properties are typed and nested,
// queried by path (properties.amount, JSON_VALUE, LAX_FLOAT64), and a STRING
// would lose their types to every reader.
func BigQueryType(k Kind) string {
	switch k {
	case KindObject:
		return "JSON"
	case KindString, KindJSON:
		return "STRING"
	case KindFloat:
		return "FLOAT64"
	case KindInt:
		return "INT64"
	case KindTimestamp:
		return "TIMESTAMP"
	}
	panic("event: unknown kind " + string(k))
}

// BigQueryFields returns the BigQuery columns of a Record, in the order of
// Columns and Values: REQUIRED where the column is NOT NULL, NULLABLE
// otherwise. There are no ingest-only columns: processed_at (the latest copy
// of an event wins in the deduplicating view) and event_id (the cursor's tie
// breaker) are already record fields.
func BigQueryFields() []BigQueryField {
	cols := Columns()
	out := make([]BigQueryField, len(cols))
	for i, c := range cols {
		mode := "NULLABLE"
		if c.Required {
			mode = "REQUIRED"
		}
		out[i] = BigQueryField{Name: c.Name, Type: BigQueryType(c.Kind), Mode: mode, Description: c.Description}
	}
	return out
}

// BigQuerySchema returns the BigQuery table schema of a Record as indented
// JSON: the content of deploy/bigquery/events.schema.json, which `skyjoin
// migrate` and Terraform both use.
func BigQuerySchema() []byte {
	b, err := json.MarshalIndent(BigQueryFields(), "", "  ")
	if err != nil {
		panic(fmt.Sprintf("event: BigQuery schema: %v", err))
	}
	return b
}
