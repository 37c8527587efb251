// Command skyjoin-dataflow is skyjoin's streaming job on Dataflow: it reads
// the events subscription, enriches the events with the Go worker's core
// and writes the records to BigQuery, the dead letters to the dead-letter
// topic. It takes Beam's flags (--runner, --project, --region,
// --staging_location, --max_num_workers, --update, --dry_run, ...) and
// skyjoin's own (pipeline.Config). See docs/dataflow.md.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/skyjoin/skyjoin/dataflow/pipeline"
)

func main() {
	var cfg pipeline.Config
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
	beam.Init()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := pipeline.Run(ctx, cfg); err != nil {
		slog.Error("skyjoin-dataflow", "error", err.Error())
		stop()
		os.Exit(1)
	}
}
