// Command skyjoin runs the skyjoin pipeline: `skyjoin up` runs every stage
// in one process; the other subcommands run or operate single stages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/skyjoin/skyjoin/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "skyjoin:", err)
		os.Exit(app.ExitCode(err))
	}
}
