package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/jetstream"
	"github.com/skyjoin/skyjoin/internal/broker/pubsub"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/registry"
	_ "github.com/skyjoin/skyjoin/internal/registry/firestore" // firestore:// registries
	_ "github.com/skyjoin/skyjoin/internal/registry/natskv"    // nats:// registries
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
)

// openBroker opens the broker named by a URL:
//
//	nats://embedded                      in-process NATS JetStream under dataDir/jetstream
//	nats://embedded?listen=127.0.0.1:4222  the same, also reachable by other processes
//	                                     (records_max_age, records_max_bytes and
//	                                     deadletter_max_age: see jetstream.ParseURL)
//	nats://HOST:PORT                     an external NATS server with JetStream
//	pubsub://PROJECT[?create=true&prefix=skyjoin&...]  Google Cloud Pub/Sub (or the
//	                                     emulator at PUBSUB_EMULATOR_HOST); parameters
//	                                     in pubsub.ParseURL and docs/gcp.md
func openBroker(ctx context.Context, raw, dataDir string, log *slog.Logger) (broker.Broker, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text quotes the URL, password included
		}
		return nil, fmt.Errorf("broker URL %q: %w", platform.RedactURL(raw), err)
	}
	switch u.Scheme {
	case "nats":
		cfg, err := jetstream.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		cfg.DataDir = dataDir
		b, err := jetstream.Open(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		return b, nil
	case "pubsub":
		cfg, err := pubsub.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		b, err := pubsub.Open(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("broker URL %q: unknown scheme %q (known: nats, pubsub)", platform.RedactURL(raw), u.Scheme)
}

// openRegistry opens the shared registry named by a URL (see package
// registry); "" means the key-value bucket on the broker b if it is
// JetStream, and nil, nil otherwise.
func openRegistry(ctx context.Context, raw string, b broker.Broker) (registry.Registry, error) {
	var opts registry.Options
	if jb, ok := b.(*jetstream.Broker); ok {
		opts.JetStream = jb.JetStream()
	}
	if raw == "" {
		if opts.JetStream == nil {
			return nil, nil
		}
		raw = "nats://embedded" // the broker's own connection, embedded or not
	}
	return registry.Open(ctx, raw, opts)
}

// storeBackend is what app needs of a store.
type storeBackend interface {
	store.Store
}

// openStore opens the store named by a URL:
//
//	duckdb://PATH   a DuckDB file; a relative PATH is relative to the working
//	                directory (duckdb://data/skyjoin.duckdb), duckdb:///abs/path
//	                is absolute; "" means DATA_DIR/skyjoin.duckdb
//	bigquery://PROJECT/DATASET[?table=events&location=EU&retention=400d]
//	                BigQuery (Storage Write API + queries); the table and its
//	                view must exist: run skyjoin migrate first
func openStore(ctx context.Context, raw, dataDir string, dcfg duckdb.Config, log *slog.Logger) (storeBackend, string, error) {
	if raw == "" {
		raw = "duckdb://" + filepath.Join(dataDir, "skyjoin.duckdb")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, "", fmt.Errorf("store URL %q: want SCHEME://..., e.g. duckdb://data/skyjoin.duckdb", platform.RedactURL(raw))
	}
	switch scheme {
	case "duckdb":
		if strings.ContainsAny(rest, "?#") {
			return nil, "", fmt.Errorf("store URL %q: duckdb takes no parameters", raw)
		}
		if rest == "" {
			return nil, "", fmt.Errorf("store URL %q: no file path", raw)
		}
		dcfg.Path = rest
		s, err := openDuckDB(ctx, dcfg, log)
		if err != nil {
			return nil, "", err
		}
		return s, raw, nil
	case "bigquery":
		cfg, err := bigquery.ParseURL(raw)
		if err != nil {
			return nil, "", err
		}
		s, err := bigquery.Open(ctx, cfg, log)
		if err != nil {
			return nil, "", err
		}
		return s, raw, nil
	}
	return nil, "", fmt.Errorf("store URL %q: unknown scheme %q (known: duckdb, bigquery)", platform.RedactURL(raw), scheme)
}
