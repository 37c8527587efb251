package firestore

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/registry"
	"github.com/skyjoin/skyjoin/internal/registry/registrytest"
)

// The conformance suite runs against Google's Firestore emulator
// (scripts/emulators starts it; scripts/test does so when java and the
// emulator are installed), and is skipped without one.
func emulator(t *testing.T) {
	t.Helper()
	if os.Getenv("FIRESTORE_EMULATOR_HOST") == "" {
		t.Skip("FIRESTORE_EMULATOR_HOST is not set: start the emulator with eval \"$(scripts/emulators start)\"")
	}
}

// reg is a registry and its config, to open other clients on its state.
type reg struct {
	*Registry
	cfg Config
}

func open(t *testing.T, cfg Config) reg {
	t.Helper()
	r, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return reg{r, cfg}
}

func TestConformance(t *testing.T) {
	emulator(t)
	registrytest.Run(t, registrytest.Harness{
		// A fresh prefix keeps each test's collections apart in the
		// emulator, which is shared by every test and run.
		New: func(t *testing.T) registry.Registry {
			b := make([]byte, 6)
			rand.Read(b)
			return open(t, Config{Project: "demo-skyjoin", Prefix: "t" + hex.EncodeToString(b) + "_"})
		},
		Another: func(t *testing.T, r registry.Registry) registry.Registry { return open(t, r.(reg).cfg) },
		Reopen: func(t *testing.T, r registry.Registry) registry.Registry {
			if err := r.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return open(t, r.(reg).cfg)
		},
	})
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		want    Config
		wantErr string
	}{
		{"firestore://my-project", Config{Project: "my-project", Prefix: DefaultPrefix}, ""},
		{"firestore://my-project/", Config{Project: "my-project", Prefix: DefaultPrefix}, ""},
		{"firestore://my-project/registry-db?prefix=dev_", Config{Project: "my-project", Database: "registry-db", Prefix: "dev_"}, ""},
		{"firestore://my-project/(default)?prefix=", Config{Project: "my-project", Database: "(default)"}, ""},
		{"firestore://", Config{}, "not a project id"},
		{"firestore://My_Project", Config{}, "not a project id"},
		{"firestore://p/a/b", Config{}, "not a database id"},
		{"firestore://p?prefix=a/b", Config{}, "prefix"},
		{"firestore://p?ttl=1", Config{}, `unknown parameter "ttl"`},
		{"firestore://p:443", Config{}, "no user, port"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseURL(u)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseURL = %+v, %v; want an error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseURL = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestOpenURL opens the emulator through registry.Open.
func TestOpenURL(t *testing.T) {
	emulator(t)
	r, err := registry.Open(t.Context(), "firestore://demo-skyjoin?prefix=openurl_", registry.Options{})
	if err != nil {
		t.Fatalf("registry.Open: %v", err)
	}
	defer r.Close()
	if err := r.Put(t.Context(), "things", "a", []byte(`{"a":1}`)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if _, err := registry.Open(t.Context(), "firestore://demo-skyjoin?prefx=x", registry.Options{}); err == nil {
		t.Fatal("registry.Open with an unknown parameter: no error")
	}
}
