package bqtest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"testing"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Query loads rows (as Write.Rows returns them: the table's columns, the
// TIMESTAMP ones as int64 microseconds) into a table named rows of an
// in-memory DuckDB database, with every column of the records' schema, and
// runs query(`rows`) there. DuckDB reads the SQL of the store's view
// (bigquery.DedupSQL: QUALIFY, ROW_NUMBER() OVER ...), so that a test can
// check what BigQuery's readers would see of the rows a writer sent, with
// the view's own query rather than a second implementation of it. It
// returns the result's rows as maps of column name to value.
func Query(t testing.TB, rows []map[string]any, query func(table string) string) []map[string]any {
	t.Helper()
	ctx := context.Background()
	connector, err := duckdb.NewConnector("", nil)
	if err != nil {
		t.Fatalf("bqtest: duckdb: %v", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	cols := event.Columns()
	defs := make([]string, len(cols))
	for i, c := range cols {
		typ := "VARCHAR"
		switch c.Kind {
		case event.KindFloat:
			typ = "DOUBLE"
		case event.KindInt, event.KindTimestamp:
			typ = "BIGINT" // TIMESTAMP as the Storage Write API sends it: microseconds
		}
		defs[i] = fmt.Sprintf("%q %s", c.Name, typ)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE rows ("+strings.Join(defs, ", ")+")"); err != nil {
		t.Fatalf("bqtest: create table: %v", err)
	}
	conn, err := connector.Connect(ctx)
	if err != nil {
		t.Fatalf("bqtest: duckdb: %v", err)
	}
	app, err := duckdb.NewAppenderFromConn(conn, "", "rows")
	if err != nil {
		t.Fatalf("bqtest: appender: %v", err)
	}
	vals := make([]any, len(cols))
	for _, r := range rows {
		for i, c := range cols {
			vals[i] = r[c.Name] // nil: NULL
		}
		if err := app.AppendRow(toDriver(vals)...); err != nil {
			t.Fatalf("bqtest: append %v: %v", r["event_id"], err)
		}
	}
	if err := app.Close(); err != nil {
		t.Fatalf("bqtest: appender: %v", err)
	}
	conn.Close()
	res, err := db.QueryContext(ctx, query("rows"))
	if err != nil {
		t.Fatalf("bqtest: query: %v\n%s", err, query("rows"))
	}
	defer res.Close()
	names, err := res.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for res.Next() {
		vs := make([]any, len(names))
		ptrs := make([]any, len(names))
		for i := range vs {
			ptrs[i] = &vs[i]
		}
		if err := res.Scan(ptrs...); err != nil {
			t.Fatalf("bqtest: scan: %v", err)
		}
		m := make(map[string]any, len(names))
		for i, n := range names {
			m[n] = vs[i]
		}
		out = append(out, m)
	}
	if err := res.Err(); err != nil {
		t.Fatalf("bqtest: query: %v", err)
	}
	return out
}

func toDriver(vals []any) []driver.Value {
	out := make([]driver.Value, len(vals))
	for i, v := range vals {
		out[i] = v
	}
	return out
}
