// Package registry is the state every skyjoin process shares: small JSON
// documents in named collections (webhook registrations and their failure
// lists; API keys later), visible to every process and instance that opens
// the same registry, with a watch that brings each change to every process
// within a second or two.
//
// It is not the store: the DuckDB file can be opened by one process only,
// so what several processes must see lives here. Backends, chosen by URL:
//
//	nats://embedded                  a key-value bucket on this process's JetStream broker (Options.JetStream)
//	nats://HOST:PORT[?bucket=NAME]   a key-value bucket on an external NATS server with JetStream
//	firestore://PROJECT[/DATABASE][?prefix=P]   Google Cloud Firestore (or the emulator at FIRESTORE_EMULATOR_HOST)
//
// Every backend passes the conformance suite in package registrytest.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/retry"
)

// Registry is a shared store of JSON documents in named collections. It is
// safe for concurrent use. Collections need no creation: a collection is
// the set of documents stored under its name.
type Registry interface {
	// Create stores doc as coll/id if no document has that id; otherwise
	// it stores nothing and returns an error matching ErrExists.
	Create(ctx context.Context, coll, id string, doc []byte) error
	// Put stores doc as coll/id, replacing any document of that id.
	Put(ctx context.Context, coll, id string, doc []byte) error
	// Get returns coll/id, or an error matching ErrNotFound.
	Get(ctx context.Context, coll, id string) (Doc, error)
	// Delete removes coll/id. Deleting a document that is not there is not
	// an error.
	Delete(ctx context.Context, coll, id string) error
	// List returns the documents of coll whose id starts with prefix ("":
	// all), ordered by id.
	List(ctx context.Context, coll, prefix string) ([]Doc, error)
	// IDs is List without the documents: their ids, ordered.
	IDs(ctx context.Context, coll, prefix string) ([]string, error)
	// Watch returns the documents of coll now, ordered by id, and a
	// channel that receives every later change of coll, made by any
	// client, in the order they were made. The channel is closed once ctx
	// is done; should the watch break before that, its last Change carries
	// the error (Change.Err), and the caller watches again (the documents
	// returned then make it whole).
	Watch(ctx context.Context, coll string) ([]Doc, <-chan Change, error)
	// Close releases the client; a connection the registry was handed
	// (Options.JetStream) stays open.
	Close() error
}

// Doc is a stored document.
type Doc struct {
	ID        string
	Data      []byte    // the JSON document
	UpdatedAt time.Time // when it was last written, by the backend's clock
}

// Change is one change of a watched collection.
type Change struct {
	Doc          // the document as written; Data is nil when Deleted
	Deleted bool // the document was deleted
	// Err, set on the last Change only, is why the watch broke.
	Err error
}

// Errors of the registry; backends wrap them with the operation.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrTooLarge = errors.New("document too large")
	ErrInvalid  = errors.New("invalid argument")
)

// MaxDocSize bounds a document: Firestore's limit on a document is 1 MiB
// (its name and fields included) and a JetStream key-value value must fit
// the server's max payload (1 MiB by default); 16 KiB are left for names,
// the updated_at field and headers.
const MaxDocSize = 1<<20 - 16<<10

// Limits of names.
const (
	MaxCollectionLength = 64
	MaxIDLength         = 128
)

var (
	collRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	idRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`) // also an id prefix
)

// CheckCollection reports a collection name other than 1 to 64 of
// [a-z0-9_], starting with a letter.
func CheckCollection(coll string) error {
	if len(coll) == 0 || len(coll) > MaxCollectionLength || !collRE.MatchString(coll) {
		return fmt.Errorf("%w: collection %q: want 1 to %d of [a-z0-9_], starting with a letter", ErrInvalid, coll, MaxCollectionLength)
	}
	return nil
}

// CheckID reports an id other than 1 to 128 of [A-Za-z0-9_-], starting with
// a letter or digit (a key on NATS, a document id on Firestore).
func CheckID(id string) error {
	if len(id) == 0 || len(id) > MaxIDLength || !idRE.MatchString(id) {
		return fmt.Errorf("%w: id %q: want 1 to %d of [A-Za-z0-9_-], starting with a letter or digit", ErrInvalid, id, MaxIDLength)
	}
	return nil
}

// CheckPrefix reports an id prefix that no id can start with.
func CheckPrefix(prefix string) error {
	if prefix != "" && (len(prefix) > MaxIDLength || !idRE.MatchString(prefix)) {
		return fmt.Errorf("%w: id prefix %q: want up to %d of [A-Za-z0-9_-], starting with a letter or digit", ErrInvalid, prefix, MaxIDLength)
	}
	return nil
}

// CheckDoc reports a document that is empty, larger than MaxDocSize or not
// valid UTF-8 JSON.
func CheckDoc(doc []byte) error {
	switch {
	case len(doc) > MaxDocSize:
		return fmt.Errorf("%w: %d bytes, the limit is %d bytes (Firestore's 1 MiB document limit less room for names)", ErrTooLarge, len(doc), MaxDocSize)
	case len(doc) == 0:
		return fmt.Errorf("%w: empty document", ErrInvalid)
	case !utf8.Valid(doc) || !json.Valid(doc):
		return fmt.Errorf("%w: document is not valid UTF-8 JSON", ErrInvalid)
	}
	return nil
}

// CheckWrite checks the arguments of a Create or Put and, if they are
// valid, calls write, which makes it.
func CheckWrite(coll, id string, doc []byte, write func() error) error {
	if err := CheckKey(coll, id); err != nil {
		return err
	}
	if err := CheckDoc(doc); err != nil {
		return err
	}
	return write()
}

// CheckList checks the arguments of List and IDs.
func CheckList(coll, prefix string) error {
	if err := CheckCollection(coll); err != nil {
		return err
	}
	return CheckPrefix(prefix)
}

// CheckKey checks the arguments of Get and Delete.
func CheckKey(coll, id string) error {
	if err := CheckCollection(coll); err != nil {
		return err
	}
	return CheckID(id)
}

// Fail wraps err, of a backend's operation on coll (and id, if not ""),
// as "registry: BACKEND: OP COLL/ID: ERR"; a nil err stays nil.
func Fail(backend, op, coll, id string, err error) error {
	if err == nil {
		return nil
	}
	if id != "" {
		coll += "/" + id
	}
	return fmt.Errorf("registry: %s: %s %s: %w", backend, op, coll, err)
}

// Options are what a backend may need besides its URL.
type Options struct {
	// JetStream is the JetStream connection of this process's broker
	// (internal/broker/jetstream.Broker.JetStream); nats://embedded keeps
	// its bucket there.
	JetStream jetstream.JetStream
}

// OpenFunc opens a backend for a parsed URL.
type OpenFunc func(ctx context.Context, u *url.URL, o Options) (Registry, error)

var (
	backendsMu sync.Mutex
	backends   = map[string]OpenFunc{}
)

// Register makes a backend available to Open under a URL scheme. Backends
// call it from init, so a program links the backends it imports, e.g.
// `import _ "github.com/skyjoin/skyjoin/internal/registry/natskv"`.
func Register(scheme string, open OpenFunc) {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	if _, dup := backends[scheme]; dup {
		panic("registry: backend registered twice for scheme " + scheme)
	}
	backends[scheme] = open
}

// Open opens the registry named by rawURL (see the package documentation).
// An unknown scheme or parameter is an error.
func Open(ctx context.Context, rawURL string, o Options) (Registry, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return nil, fmt.Errorf("registry URL %q: want SCHEME://..., e.g. nats://embedded or firestore://PROJECT", platform.RedactURL(rawURL))
	}
	backendsMu.Lock()
	open, ok := backends[u.Scheme]
	known := make([]string, 0, len(backends))
	for s := range backends {
		known = append(known, s)
	}
	backendsMu.Unlock()
	if !ok {
		slices.Sort(known)
		return nil, fmt.Errorf("registry URL %q: unknown scheme %q (known: %s)", platform.RedactURL(rawURL), u.Scheme, strings.Join(known, ", "))
	}
	return open(ctx, u, o)
}

// Follow applies each change of changes (a channel Watch returned for coll)
// with apply, until ctx is done. Should the watch break, it reports why
// with onErr, waits delay(attempt) (attempt counts the failures since the
// last change, from 1), watches again, and hands the documents it then
// finds to sync, which makes the caller's view whole again.
func Follow(ctx context.Context, reg Registry, coll string, changes <-chan Change,
	delay func(attempt int) time.Duration, apply func(Change), sync func([]Doc), onErr func(error)) {
	for attempt := 1; ; {
		for c := range changes {
			if c.Err != nil {
				onErr(fmt.Errorf("the watch of %s broke; watching again: %w", coll, c.Err))
				break
			}
			attempt = 1
			apply(c)
		}
		for {
			if retry.Sleep(ctx, delay(attempt)) != nil {
				return
			}
			attempt++
			docs, ch, err := reg.Watch(ctx, coll)
			if err != nil {
				if ctx.Err() == nil {
					onErr(fmt.Errorf("watch %s: %w", coll, err))
				}
				continue
			}
			sync(docs)
			changes = ch
			break
		}
	}
}
