// Package natskvtest runs the registry on a real embedded JetStream server
// for tests: the server `skyjoin up` runs, in a temporary data dir, also
// listening on a free loopback port so that other clients can connect as
// other processes would.
package natskvtest

import (
	"log/slog"
	"net"
	"testing"

	"github.com/skyjoin/skyjoin/internal/broker/jetstream"
	"github.com/skyjoin/skyjoin/internal/registry/natskv"
)

// Server is an embedded JetStream broker.
type Server struct {
	Dir    string
	Broker *jetstream.Broker
	addr   string
}

// Start opens the embedded broker on dir; the test closes it at its end.
func Start(t testing.TB, dir string) *Server {
	t.Helper()
	// The server takes port 0 for its default port, 4222: find a free one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	b, err := jetstream.Open(t.Context(), jetstream.Config{URL: jetstream.EmbeddedURL, DataDir: dir, Listen: addr},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open the embedded broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return &Server{Dir: dir, Broker: b, addr: addr}
}

// URL is the server's nats:// URL for clients over TCP.
func (s *Server) URL() string { return "nats://" + s.addr }

// Registry opens the registry's bucket on the broker's own (in-process)
// connection, as `skyjoin up` does; the test closes it at its end.
func (s *Server) Registry(t testing.TB) *natskv.KV {
	t.Helper()
	kv, err := natskv.New(t.Context(), s.Broker.JetStream(), natskv.DefaultBucket)
	if err != nil {
		t.Fatalf("natskv.New: %v", err)
	}
	t.Cleanup(func() { kv.Close() })
	return kv
}

// Dial opens the registry over a connection of its own, as another
// process would; the test closes it at its end.
func (s *Server) Dial(t testing.TB) *natskv.KV {
	t.Helper()
	kv, err := natskv.Dial(t.Context(), s.URL(), natskv.DefaultBucket)
	if err != nil {
		t.Fatalf("natskv.Dial %s: %v", s.URL(), err)
	}
	t.Cleanup(func() { kv.Close() })
	return kv
}

// Restart closes the broker and opens it again on the same data dir, as
// after a restart of the process. Registries on it must be closed first.
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	if err := s.Broker.Close(); err != nil {
		t.Fatalf("close the broker: %v", err)
	}
	return Start(t, s.Dir)
}
