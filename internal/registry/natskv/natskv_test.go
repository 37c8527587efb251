package natskv_test

import (
	"context"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/registry/natskv/natskvtest"
	"github.com/skyjoin/skyjoin/internal/registry/registrytest"
)

// reg is a registry and the server it lives on.
type reg struct {
	registry.Registry
	srv *natskvtest.Server
}

func TestConformance(t *testing.T) {
	registrytest.Run(t, registrytest.Harness{
		// The bucket on the embedded broker's in-process connection.
		New: func(t *testing.T) registry.Registry {
			s := natskvtest.Start(t, t.TempDir())
			return reg{s.Registry(t), s}
		},
		// Another client over TCP, opened by URL.
		Another: func(t *testing.T, r registry.Registry) registry.Registry {
			url := r.(reg).srv.URL()
			o, err := registry.Open(t.Context(), url, registry.Options{})
			if err != nil {
				t.Fatalf("registry.Open %s: %v", url, err)
			}
			t.Cleanup(func() { o.Close() })
			return o
		},
		// A restart: the broker closes and opens on its data dir again.
		Reopen: func(t *testing.T, r registry.Registry) registry.Registry {
			r.Close()
			s := r.(reg).srv.Restart(t)
			return reg{s.Registry(t), s}
		},
	})
}

func TestOpenURL(t *testing.T) {
	s := natskvtest.Start(t, t.TempDir())
	js := registry.Options{JetStream: s.Broker.JetStream()}
	tests := []struct {
		url     string
		opts    registry.Options
		wantErr string
	}{
		{"nats://embedded", js, ""},
		{"nats://embedded?bucket=other_bucket", js, ""},
		{s.URL(), registry.Options{}, ""},
		{s.URL() + "?bucket=b2", registry.Options{}, ""},
		{"nats://embedded", registry.Options{}, "runs no JetStream broker"},
		{"nats://embedded?bucket=a.b", js, "bucket"},
		{"nats://embedded?history=5", js, `unknown parameter "history"`},
		{"nats://embedded/path", js, "without a path"},
		{"nats://127.0.0.1:1", registry.Options{}, "connect"},
		{"kafka://x", registry.Options{}, `unknown scheme "kafka"`},
		{"embedded", registry.Options{}, "want SCHEME://"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r, err := registry.Open(ctx, tt.url, tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if err := r.Put(ctx, "things", "a", []byte(`{}`)); err != nil {
					t.Fatalf("Put: %v", err)
				}
				if err := r.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open: %v, want an error saying %q", err, tt.wantErr)
			}
		})
	}
	// Closing a registry on the broker's connection leaves it open.
	if _, err := s.Broker.JetStream().AccountInfo(t.Context()); err != nil {
		t.Fatalf("the broker's connection after the registry closed: %v", err)
	}
}
