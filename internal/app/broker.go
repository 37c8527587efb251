package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/skyjoin/skyjoin/internal/broker/jetstream"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/budget"
	"github.com/skyjoin/skyjoin/internal/platform/readyfile"
)

// brokerConfig is the configuration of `skyjoin broker`.
type brokerConfig struct {
	listen, dataDir, readyFile string
	log                        platform.LogConfig
	mem                        budget.Config
}

// brokerFlagSet is the flag set of `skyjoin broker` over a new config: the
// broker's own flags, logging and the memory budget, none of the stages'.
func brokerFlagSet(stderr io.Writer) (*flag.FlagSet, *brokerConfig) {
	fs := newFlagSet("broker", stderr)
	bc := &brokerConfig{}
	fs.StringVar(&bc.listen, "listen", "127.0.0.1:4222", "host:port the broker listens on (no authentication: keep it on loopback or a private network)")
	fs.StringVar(&bc.dataDir, "data-dir", "data", "directory for the broker's files (DATA_DIR/jetstream)")
	fs.StringVar(&bc.readyFile, "ready-file", "", "once ready, write a JSON file here with the broker's URL; removed on exit")
	bc.log.RegisterFlags(fs)
	bc.mem.RegisterFlags(fs)
	return fs, bc
}

// runBroker runs the embedded NATS JetStream broker alone, listening on TCP,
// so that the stages can run as separate processes that share it:
//
//	skyjoin broker --listen 127.0.0.1:4222 --data-dir data
//	skyjoin up --broker nats://127.0.0.1:4222 ...   (or ingest / enrich)
func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, bc := brokerFlagSet(stderr)
	if err := parseCommandFlags("broker", fs, args); err != nil {
		return err
	}
	if err := bc.mem.Validate(); err != nil {
		return err
	}
	log, err := platform.NewLogger(stderr, bc.log)
	if err != nil {
		return err
	}
	// The broker's memory is the Go heap: NATS's block caches and buffers.
	if err := budget.Apply(bc.mem, 0, log); err != nil {
		return err
	}
	dir, err := filepath.Abs(bc.dataDir)
	if err != nil {
		return err
	}
	b, err := jetstream.Open(ctx, jetstream.Config{URL: "nats://embedded", DataDir: dir, Listen: bc.listen}, log)
	if err != nil {
		return err
	}
	if err := readyfile.Write(bc.readyFile, map[string]any{"pid": os.Getpid(), "command": "broker",
		"broker": "nats://" + bc.listen, "data_dir": dir}); err != nil {
		b.Close()
		return err
	}
	defer readyfile.Remove(bc.readyFile)
	fmt.Fprintf(stdout, "skyjoin broker is up\n  broker     nats://%s\n  data dir   %s\nPress Ctrl-C to stop.\n", bc.listen, dir)
	log.Info("broker is up", "listen", bc.listen, "data_dir", dir)
	<-ctx.Done()
	log.Info("broker shutting down")
	return b.Close()
}
