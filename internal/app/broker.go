package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/skyjoin/skyjoin/internal/broker/jetstream"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/budget"
	"github.com/skyjoin/skyjoin/internal/platform/readyfile"
)

// runBroker runs the embedded NATS JetStream broker alone, listening on TCP,
// so that the stages can run as separate processes that share it:
//
//	skyjoin broker --listen 127.0.0.1:4222 --data-dir data
//	skyjoin up --broker nats://127.0.0.1:4222 ...   (or ingest / enrich)
func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("broker", stderr)
	listen := fs.String("listen", "127.0.0.1:4222", "host:port the broker listens on (no authentication: keep it on loopback or a private network)")
	dataDir := fs.String("data-dir", "data", "directory for the broker's files (DATA_DIR/jetstream)")
	readyFile := fs.String("ready-file", "", "once ready, write a JSON file here with the broker's URL; removed on exit")
	var logCfg platform.LogConfig
	logCfg.RegisterFlags(fs)
	var mem budget.Config
	mem.RegisterFlags(fs)
	if err := platform.ParseFlags(fs, args); err != nil {
		return err
	}
	if err := mem.Validate(); err != nil {
		return err
	}
	log, err := platform.NewLogger(stderr, logCfg)
	if err != nil {
		return err
	}
	// The broker's memory is the Go heap: NATS's block caches and buffers.
	if err := budget.Apply(mem, 0, log); err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	b, err := jetstream.Open(ctx, jetstream.Config{URL: "nats://embedded", DataDir: dir, Listen: *listen}, log)
	if err != nil {
		return err
	}
	if err := readyfile.Write(*readyFile, map[string]any{"pid": os.Getpid(), "command": "broker",
		"broker": "nats://" + *listen, "data_dir": dir}); err != nil {
		b.Close()
		return err
	}
	defer readyfile.Remove(*readyFile)
	fmt.Fprintf(stdout, "skyjoin broker is up\n  broker     nats://%s\n  data dir   %s\nPress Ctrl-C to stop.\n", *listen, dir)
	log.Info("broker is up", "listen", *listen, "data_dir", dir)
	<-ctx.Done()
	log.Info("broker shutting down")
	return b.Close()
}
