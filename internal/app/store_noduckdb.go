//go:build noduckdb

package app

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/skyjoin/skyjoin/internal/bench"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
)

// A build with -tags noduckdb (the static, cgo-free binary of the container
// image: docs/image.md) has no DuckDB store; every command that would open
// one fails with errNoDuckDB.

// errNoDuckDB is the error of every duckdb:// store URL in this build.
var errNoDuckDB = errors.New("this build of skyjoin has no DuckDB (built with -tags noduckdb): use --store bigquery://PROJECT/DATASET")

func openDuckDB(context.Context, duckdb.Config, *slog.Logger) (storeBackend, error) {
	return nil, errNoDuckDB
}

func migrateDuckDB(context.Context, string, *slog.Logger) (int, error) { return 0, errNoDuckDB }

func compactDuckDB(context.Context, string) (before, after int64, err error) {
	return 0, 0, errNoDuckDB
}

func fillDuckDB(context.Context, string, *bench.Filler, int64, io.Writer) error { return errNoDuckDB }
