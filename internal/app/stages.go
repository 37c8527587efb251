package app

import (
	"context"
	"io"
)

// The stage commands run one stage each, as separate processes sharing one
// broker, so that each can be scaled, restarted or killed alone:
//
//	skyjoin broker  --listen 127.0.0.1:4222 --data-dir data/broker
//	skyjoin ingest  --broker nats://127.0.0.1:4222 --addr 127.0.0.1:8080
//	skyjoin enrich  --broker nats://127.0.0.1:4222 --addr 127.0.0.1:8081 --data-dir data/enrich
//	skyjoin collect --broker nats://127.0.0.1:4222 --addr 127.0.0.1:8082 --collect-url https://randomuser.me
//
// DuckDB lets one process open its file, so the process that writes it
// (enrich) also serves the reads; `skyjoin serve` alone is for stores that
// many processes can read (BigQuery).

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStages(ctx, "ingest", stages{ingest: true}, args, stdout, stderr)
}

func runEnrich(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStages(ctx, "enrich", stages{enrich: true, serve: true}, args, stdout, stderr)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStages(ctx, "serve", stages{serve: true}, args, stdout, stderr)
}

func runCollect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStages(ctx, "collect", stages{collect: true}, args, stdout, stderr)
}
