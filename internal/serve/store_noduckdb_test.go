//go:build noduckdb

package serve_test

import (
	"testing"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// openStore skips the test: this build has no DuckDB store (-tags
// noduckdb, the image's), and the tests that read through one need it.
func openStore(tb testing.TB, _ []event.Record) (store.Reader, []event.Record) {
	tb.Skip("the DuckDB store is not in this build (-tags noduckdb)")
	return nil, nil
}
