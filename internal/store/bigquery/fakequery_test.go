package bigquery

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	bq "google.golang.org/api/bigquery/v2"
	"google.golang.org/api/option"

	"github.com/skyjoin/skyjoin/internal/event"
)

// fakeQuery is an httptest fake of the BigQuery REST API as the Go client
// uses it: jobs.query (POST /projects/P/queries) and getQueryResults (GET
// /projects/P/queries/JOB) for reads; datasets and tables get, insert and
// patch for Migrate. It does not run SQL: answer decides what a query
// returns. Every query is checked to carry its values as parameters only.
type fakeQuery struct {
	t        *testing.T
	pageSize int // rows per page; 0: all in the first
	answer   func(q *bq.QueryRequest) [][]any
	schema   *bq.TableSchema // of every result; default restSchema()
	// dml, if set, is the number of rows a DML statement (a query that does
	// not start with SELECT) changed, reported by jobs.get.
	dml func(q *bq.QueryRequest) int64
	// failReason, if set, fails every query with a 400 of that reason, as
	// BigQuery fails a job (bytesBilledLimitExceeded, ...).
	failReason string

	mu       sync.Mutex
	queries  []*bq.QueryRequest
	jobs     map[string][][]any // job id -> result rows
	affected map[string]int64   // job id -> rows changed by a DML statement
	fetches  int                // getQueryResults calls
	datasets map[string]*bq.Dataset
	tables   map[string]*bq.Table // "dataset.table"
	patches  int
}

func startFakeQuery(t *testing.T, f *fakeQuery) []option.ClientOption {
	f.t = t
	f.jobs = map[string][][]any{}
	f.affected = map[string]int64{}
	f.datasets = map[string]*bq.Dataset{}
	if f.tables == nil {
		f.tables = map[string]*bq.Table{}
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return []option.ClientOption{option.WithEndpoint(srv.URL), option.WithoutAuthentication()}
}

func (f *fakeQuery) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, path, _ := strings.Cut(r.URL.Path, "/projects/")
	parts := strings.Split(path, "/") // P, queries|datasets, ...
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	fail := func(code int, msg string) {
		w.WriteHeader(code)
		reply(map[string]any{"error": map[string]any{"code": code, "message": msg}})
	}
	decode := func(v any) bool {
		if err := json.NewDecoder(r.Body).Decode(v); err != nil {
			fail(400, err.Error())
			return false
		}
		return true
	}
	switch {
	case len(parts) == 2 && parts[1] == "queries" && r.Method == "POST":
		var q bq.QueryRequest
		if !decode(&q) {
			return
		}
		f.checkParameters(&q)
		f.queries = append(f.queries, &q)
		if f.failReason != "" {
			w.WriteHeader(400)
			reply(map[string]any{"error": map[string]any{"code": 400, "message": "Query exceeded limit for bytes billed",
				"errors": []map[string]any{{"reason": f.failReason, "message": "Query exceeded limit for bytes billed"}}}})
			return
		}
		rows := f.answer(&q)
		job := fmt.Sprintf("job-%d", len(f.queries))
		f.jobs[job] = rows
		if f.dml != nil && !strings.HasPrefix(q.Query, "SELECT") {
			f.affected[job] = f.dml(&q)
		}
		page, token := f.page(job, 0)
		reply(&bq.QueryResponse{JobComplete: true, Schema: f.resultSchema(), Rows: page, PageToken: token, TotalRows: uint64(len(rows)),
			JobReference: &bq.JobReference{ProjectId: parts[0], JobId: job, Location: "EU"}})
	case len(parts) == 3 && parts[1] == "queries" && r.Method == "GET":
		job := parts[2]
		f.fetches++
		if _, ok := f.jobs[job]; !ok {
			fail(404, "Not found: Job")
			return
		}
		start := 0
		if tok := r.URL.Query().Get("pageToken"); tok != "" {
			j, off, _ := strings.Cut(tok, ":")
			n, err := strconv.Atoi(off)
			if j != job || err != nil {
				fail(400, "fake: bad page token "+tok)
				return
			}
			start = n
		} else if si := r.URL.Query().Get("startIndex"); si != "" {
			start, _ = strconv.Atoi(si)
		}
		page, token := f.page(job, start)
		reply(&bq.GetQueryResultsResponse{JobComplete: true, Schema: f.resultSchema(), Rows: page, PageToken: token,
			TotalRows: uint64(len(f.jobs[job]))})
	case len(parts) == 3 && parts[1] == "jobs" && r.Method == "GET":
		job := parts[2]
		if _, ok := f.jobs[job]; !ok {
			fail(404, "Not found: Job")
			return
		}
		stats := &bq.JobStatistics2{StatementType: "SELECT", TotalBytesProcessed: 0}
		if n, ok := f.affected[job]; ok {
			stats = &bq.JobStatistics2{StatementType: "DELETE", NumDmlAffectedRows: n}
		}
		reply(&bq.Job{JobReference: &bq.JobReference{ProjectId: parts[0], JobId: job, Location: "EU"},
			Status: &bq.JobStatus{State: "DONE"}, Statistics: &bq.JobStatistics{Query: stats}})
	case len(parts) == 3 && parts[1] == "datasets" && r.Method == "GET":
		if ds, ok := f.datasets[parts[2]]; ok {
			reply(ds)
			return
		}
		fail(404, "Not found: Dataset")
	case len(parts) == 2 && parts[1] == "datasets" && r.Method == "POST":
		var ds bq.Dataset
		if !decode(&ds) {
			return
		}
		f.datasets[ds.DatasetReference.DatasetId] = &ds
		reply(&ds)
	case len(parts) == 5 && parts[3] == "tables" && (r.Method == "GET" || r.Method == "PATCH"):
		tb, ok := f.tables[parts[2]+"."+parts[4]]
		if !ok {
			fail(404, "Not found: Table")
			return
		}
		if r.Method == "PATCH" {
			var p bq.Table
			if !decode(&p) {
				return
			}
			f.patches++
			if p.Schema != nil {
				tb.Schema = p.Schema
			}
			if p.TimePartitioning != nil {
				tb.TimePartitioning = p.TimePartitioning
			}
			if p.Clustering != nil {
				tb.Clustering = p.Clustering
			}
			if p.View != nil {
				tb.View = p.View
			}
		}
		reply(tb)
	case len(parts) == 4 && parts[3] == "tables" && r.Method == "POST":
		var tb bq.Table
		if !decode(&tb) {
			return
		}
		tb.Type = "TABLE"
		if tb.View != nil {
			tb.Type = "VIEW"
		}
		tb.Etag = "etag"
		f.tables[parts[2]+"."+tb.TableReference.TableId] = &tb
		reply(&tb)
	default:
		f.t.Errorf("fake BigQuery: unexpected %s %s", r.Method, r.URL.Path)
		fail(404, "fake: not implemented")
	}
}

func (f *fakeQuery) resultSchema() *bq.TableSchema {
	if f.schema != nil {
		return f.schema
	}
	return restSchema()
}

// page returns the rows of a job from start, and the token of the next page.
func (f *fakeQuery) page(job string, start int) ([]*bq.TableRow, string) {
	rows := f.jobs[job]
	start = min(start, len(rows))
	end := len(rows)
	if f.pageSize > 0 {
		end = min(end, start+f.pageSize)
	}
	token := ""
	if end < len(rows) {
		token = fmt.Sprintf("%s:%d", job, end)
	}
	return tableRows(rows[start:end]), token
}

// checkParameters fails the test if a query's SQL text holds a value
// instead of a parameter.
func (f *fakeQuery) checkParameters(q *bq.QueryRequest) {
	if q.UseLegacySql == nil || *q.UseLegacySql || q.ParameterMode != "" && q.ParameterMode != "NAMED" {
		f.t.Errorf("query is not GoogleSQL with named parameters: %+v", q)
	}
	if strings.ContainsAny(strings.ReplaceAll(q.Query, "''", ""), "'\"") { // '' holds no value
		f.t.Errorf("query has a string literal: %s", q.Query)
	}
	for _, p := range q.QueryParameters {
		if !strings.Contains(q.Query, "@"+p.Name) {
			f.t.Errorf("parameter %s is not used in %s", p.Name, q.Query)
		}
		if v := p.ParameterValue.Value; len(v) > 3 && strings.Contains(q.Query, v) {
			f.t.Errorf("the value %q of parameter %s is in the SQL text: %s", v, p.Name, q.Query)
		}
	}
}

// param returns a query's parameter value, or "" and false.
func param(q *bq.QueryRequest, name string) (string, bool) {
	for _, p := range q.QueryParameters {
		if p.Name == name {
			return p.ParameterValue.Value, true
		}
	}
	return "", false
}

// restSchema is the schema of a SELECT of selectColumns, as jobs.query
// returns it (legacy type names).
func restSchema() *bq.TableSchema {
	s := &bq.TableSchema{}
	for _, f := range event.BigQueryFields() {
		typ := map[string]string{"FLOAT64": "FLOAT", "INT64": "INTEGER"}[f.Type]
		if typ == "" {
			typ = f.Type
		}
		s.Fields = append(s.Fields, &bq.TableFieldSchema{Name: f.Name, Type: typ, Mode: f.Mode})
	}
	return s
}

// tableRows encodes rows of Go values (string, float64, int64 and int64 µs
// for TIMESTAMP, nil) as the REST API does: every value a string.
func tableRows(rows [][]any) []*bq.TableRow {
	out := make([]*bq.TableRow, len(rows))
	for i, row := range rows {
		tr := &bq.TableRow{}
		for _, v := range row {
			var cell any
			switch x := v.(type) {
			case nil:
			case string:
				cell = x
			case float64:
				cell = strconv.FormatFloat(x, 'g', -1, 64)
			case int64:
				cell = strconv.FormatInt(x, 10)
			default:
				panic(fmt.Sprintf("tableRows: %T", v))
			}
			tr.F = append(tr.F, &bq.TableCell{V: cell})
		}
		out[i] = tr
	}
	return out
}

// rowValues orders a row the fake write server decoded by column.
func rowValues(m map[string]any) []any {
	cols := event.Columns()
	out := make([]any, len(cols))
	for i, c := range cols {
		out[i] = m[c.Name]
	}
	return out
}
