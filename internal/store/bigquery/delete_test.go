package bigquery

import (
	"slices"
	"strings"
	"testing"

	bq "google.golang.org/api/bigquery/v2"

	"github.com/skyjoin/skyjoin/internal/event"

	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestDeleteUsers: erasure is one DML statement on the table (every copy,
// not the view), its ids an ARRAY<STRING> parameter, and the count is
// BigQuery's number of deleted rows. The fake plays the table: it deletes
// the rows of the ids the statement names, copies included.
func TestDeleteUsers(t *testing.T) {
	recs := storetest.Records(5, 40)
	table := append(slices.Clone(recs), recs[3], recs[3]) // the at-least-once writer's copies
	fq := &fakeQuery{answer: func(*bq.QueryRequest) [][]any { return nil }}
	fq.dml = func(q *bq.QueryRequest) int64 {
		var ids []string
		for _, p := range q.QueryParameters {
			if p.Name == "user_ids" {
				if p.ParameterType.Type != "ARRAY" || p.ParameterType.ArrayType.Type != "STRING" {
					t.Errorf("user_ids is %+v, want ARRAY<STRING>", p.ParameterType)
				}
				for _, v := range p.ParameterValue.ArrayValues {
					ids = append(ids, v.Value)
				}
			}
		}
		n := len(table)
		table = slices.DeleteFunc(table, func(r event.Record) bool { return slices.Contains(ids, r.User.ID) })
		return int64(n - len(table))
	}
	r := openReader(t, fq)
	victim := recs[3].User.ID
	want := 0
	for _, rec := range append(slices.Clone(recs), recs[3], recs[3]) {
		if rec.User.ID == victim {
			want++
		}
	}
	n, err := r.DeleteUsers(t.Context(), []string{victim, "h1:0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(want) || want < 3 {
		t.Errorf("deleted %d rows, want %d (the record and its two copies, and the user's others)", n, want)
	}
	for _, rec := range table {
		if rec.User.ID == victim {
			t.Fatalf("a record of %s is left", victim)
		}
	}
	q := fq.queries[0]
	if want := "DELETE FROM `skyjoin-test.skyjoin_ds.events` WHERE user_id IN UNNEST(@user_ids)"; q.Query != want {
		t.Errorf("SQL %s, want %s", q.Query, want)
	}
	if q.Location != "EU" {
		t.Errorf("location %q", q.Location)
	}
	// Nothing to delete: no statement.
	if n, err := r.DeleteUsers(t.Context(), nil); n != 0 || err != nil || len(fq.queries) != 1 {
		t.Errorf("no ids: %d %v, %d statements", n, err, len(fq.queries))
	}
	if strings.Contains(q.Query, victim) {
		t.Error("the id is in the SQL text")
	}
}
