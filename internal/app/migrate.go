package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/skyjoin/skyjoin/internal/store/bigquery"
)

// runMigrate creates or updates the store's tables: for BigQuery the
// dataset (with --create-dataset), the partitioned and clustered table and
// the deduplicating view. DuckDB migrates itself when it opens; migrate
// opens it to do so (the file must not be open in another process).
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	storeURL := fs.String("store", "", "store URL: bigquery://PROJECT/DATASET[?table=events&location=EU&retention=400d] or duckdb://PATH")
	createDataset := fs.Bool("create-dataset", false, "create the dataset (in the URL's location) if it does not exist")
	retention := fs.String("retention", "", "partition expiration, e.g. 400d (0: keep forever); overrides the URL's retention")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: migrate takes no arguments, got %q", errUsage, fs.Args())
	}
	switch {
	case *storeURL == "":
		return fmt.Errorf("%w: migrate needs --store: bigquery://PROJECT/DATASET, or duckdb://PATH (a local store: data/skyjoin.duckdb for up's default --data-dir; run while up is stopped)", errUsage)
	case strings.HasPrefix(*storeURL, "duckdb://"):
		// Opening the file migrates it (schema version 1 -> 2 adds the
		// properties column); the process that owns it does the same.
		path := strings.TrimPrefix(*storeURL, "duckdb://")
		if path == "" || strings.ContainsAny(path, "?#") {
			return fmt.Errorf("%w: migrate: store URL %q: want duckdb://PATH, no parameters", errUsage, *storeURL)
		}
		// Its progress (a row store filled, user runs cut) goes to stderr.
		version, err := migrateDuckDB(ctx, path, slog.New(slog.NewTextHandler(stderr, nil)))
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		fmt.Fprintf(stdout, "%s is at schema version %d\n", path, version)
		return nil
	case !strings.HasPrefix(*storeURL, "bigquery://"):
		return fmt.Errorf("%w: migrate: store URL %q: unknown scheme (known: bigquery, duckdb)", errUsage, *storeURL)
	}
	cfg, err := bigquery.ParseURL(*storeURL)
	if err != nil {
		return fmt.Errorf("%w: migrate: %v", errUsage, err)
	}
	if *retention != "" {
		if cfg.Retention, err = bigquery.ParseRetention(*retention); err != nil {
			return fmt.Errorf("%w: migrate: --retention: %v", errUsage, err)
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%w: migrate: %v", errUsage, err)
		}
	}
	changes, err := bigquery.Migrate(ctx, cfg, bigquery.MigrateOptions{CreateDataset: *createDataset})
	for _, c := range changes {
		fmt.Fprintln(stdout, c)
	}
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		fmt.Fprintf(stdout, "%s.%s is up to date\n", cfg.Project, cfg.Dataset)
	}
	return nil
}
