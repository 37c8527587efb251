package app

import (
	"context"
	"fmt"
	"io"

	"github.com/skyjoin/skyjoin/internal/event"
)

func runSchema(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("schema", stderr)
	ddl := fs.Bool("ddl", false, "print the store's column definitions (DuckDB) instead of the JSON Schema")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *ddl {
		fmt.Fprintf(stdout, "CREATE TABLE events (\n%s\n);\n", event.DuckDBColumns())
		return nil
	}
	fmt.Fprintf(stdout, "%s\n", event.JSONSchema())
	return nil
}
