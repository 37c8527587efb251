// Package firestore is the Google Cloud Firestore backend of package
// registry (Firestore in native mode). A collection is a top-level Firestore
// collection named PREFIX+collection; a document coll/id is the Firestore
// document of that id, with two fields: doc, the JSON document as a string,
// and updated_at, the server's time of the last write. Create is
// Firestore's Create, which refuses an id that exists; Watch is a
// snapshot listener on the collection.
//
// URL (registry.Open):
//
//	firestore://PROJECT[/DATABASE][?prefix=P]
//
// DATABASE defaults to "(default)"; prefix, "skyjoin_", keeps skyjoin's
// collections apart in a shared database. With FIRESTORE_EMULATOR_HOST set,
// the client talks to the emulator at that address, without credentials;
// otherwise it uses Application Default Credentials (the service account
// needs roles/datastore.user).
package firestore

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	gfs "cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skyjoin/skyjoin/internal/platform/iam"
	"github.com/skyjoin/skyjoin/internal/registry"
)

// DefaultPrefix is put before every collection name unless the URL names
// another prefix.
const DefaultPrefix = "skyjoin_"

func init() {
	registry.Register("firestore", func(ctx context.Context, u *url.URL, _ registry.Options) (registry.Registry, error) {
		cfg, err := parseURL(u)
		if err != nil {
			return nil, err
		}
		return Open(ctx, cfg)
	})
}

// Config names a Firestore database and the prefix of the collections.
type Config struct {
	Project  string
	Database string // "" means "(default)"
	Prefix   string
}

var (
	projectRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9.:-]{0,99}$`) // domain-scoped ids have . and :
	databaseRE = regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)
	prefixRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{0,64}$`)
)

// parseURL parses firestore://PROJECT[/DATABASE][?prefix=P].
func parseURL(u *url.URL) (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return Config{}, fmt.Errorf("registry URL %q: %s (want firestore://PROJECT[/DATABASE][?prefix=P])", u.String(), fmt.Sprintf(format, a...))
	}
	cfg := Config{Project: u.Host, Prefix: DefaultPrefix}
	if u.User != nil || u.Port() != "" || u.Fragment != "" {
		return bad("no user, port or fragment")
	}
	if !projectRE.MatchString(cfg.Project) {
		return bad("project %q is not a project id", cfg.Project)
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if db != "(default)" && !databaseRE.MatchString(db) {
			return bad("database %q is not a database id", db)
		}
		cfg.Database = db
	}
	for k, v := range u.Query() {
		switch k {
		case "prefix":
			if !prefixRE.MatchString(v[0]) {
				return bad("prefix %q: want up to 64 of [A-Za-z0-9_-]", v[0])
			}
			cfg.Prefix = v[0]
		default:
			return bad("unknown parameter %q (known: prefix)", k)
		}
	}
	return cfg, nil
}

var _ registry.Registry = (*Registry)(nil)

// Registry is a registry.Registry on Firestore. It is safe for concurrent
// use.
type Registry struct {
	c      *gfs.Client
	prefix string

	closeOnce sync.Once
	closeErr  error
}

// Open connects to the database of cfg; opts are for tests.
// Grants are the IAM grants of a process with a Firestore registry: it
// reads, writes, and listens to documents (roles/datastore.user; Firestore
// grants it on the project, not per database).
var Grants = []iam.Grant{{Role: "roles/datastore.user", On: iam.Project}}

func Open(ctx context.Context, cfg Config, opts ...option.ClientOption) (*Registry, error) {
	if !prefixRE.MatchString(cfg.Prefix) {
		return nil, fmt.Errorf("registry: firestore: %w: prefix %q: want up to 64 of [A-Za-z0-9_-]", registry.ErrInvalid, cfg.Prefix)
	}
	db := cfg.Database
	if db == "" {
		db = gfs.DefaultDatabaseID
	}
	c, err := gfs.NewClientWithDatabase(ctx, cfg.Project, db, opts...)
	if err != nil {
		return nil, fmt.Errorf("registry: firestore: connect to project %s, database %s: %w", cfg.Project, db, err)
	}
	return &Registry{c: c, prefix: cfg.Prefix}, nil
}

// stored is the Firestore document of a registry document.
type stored struct {
	Doc       string    `firestore:"doc"`
	UpdatedAt time.Time `firestore:"updated_at,serverTimestamp"`
}

func (r *Registry) coll(coll string) *gfs.CollectionRef { return r.c.Collection(r.prefix + coll) }

// fail wraps err with the operation, as registry errors where they apply;
// a nil err stays nil.
func fail(op, coll, id string, err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		err = fmt.Errorf("%w (%w)", registry.ErrNotFound, err)
	case codes.AlreadyExists:
		err = fmt.Errorf("%w (%w)", registry.ErrExists, err)
	}
	return registry.Fail("firestore", op, coll, id, err)
}

// Create implements registry.Registry.
func (r *Registry) Create(ctx context.Context, coll, id string, doc []byte) error {
	return fail("create", coll, id, registry.CheckWrite(coll, id, doc, func() error {
		_, err := r.coll(coll).Doc(id).Create(ctx, stored{Doc: string(doc)})
		return err
	}))
}

// Put implements registry.Registry.
func (r *Registry) Put(ctx context.Context, coll, id string, doc []byte) error {
	return fail("put", coll, id, registry.CheckWrite(coll, id, doc, func() error {
		_, err := r.coll(coll).Doc(id).Set(ctx, stored{Doc: string(doc)})
		return err
	}))
}

// Get implements registry.Registry.
func (r *Registry) Get(ctx context.Context, coll, id string) (registry.Doc, error) {
	if err := registry.CheckKey(coll, id); err != nil {
		return registry.Doc{}, fail("get", coll, id, err)
	}
	snap, err := r.coll(coll).Doc(id).Get(ctx)
	if err != nil {
		return registry.Doc{}, fail("get", coll, id, err)
	}
	d, err := toDoc(snap)
	if err != nil {
		return registry.Doc{}, fail("get", coll, id, err)
	}
	return d, nil
}

func toDoc(snap *gfs.DocumentSnapshot) (registry.Doc, error) {
	var s stored
	if err := snap.DataTo(&s); err != nil {
		return registry.Doc{}, fmt.Errorf("decode document %s: %w", snap.Ref.ID, err)
	}
	if s.Doc == "" {
		return registry.Doc{}, fmt.Errorf("document %s has no doc field: not written by skyjoin", snap.Ref.ID)
	}
	return registry.Doc{ID: snap.Ref.ID, Data: []byte(s.Doc), UpdatedAt: snap.UpdateTime}, nil
}

// Delete implements registry.Registry.
func (r *Registry) Delete(ctx context.Context, coll, id string) error {
	if err := registry.CheckKey(coll, id); err != nil {
		return fail("delete", coll, id, err)
	}
	if _, err := r.coll(coll).Doc(id).Delete(ctx); err != nil {
		return fail("delete", coll, id, err)
	}
	return nil
}

// query is the documents of coll whose id starts with prefix, by id.
func (r *Registry) query(coll, prefix string) (gfs.Query, error) {
	if err := registry.CheckList(coll, prefix); err != nil {
		return gfs.Query{}, err
	}
	q := r.coll(coll).OrderBy(gfs.DocumentID, gfs.Asc)
	if prefix != "" {
		// Ids are ASCII: the first string after every id that starts with
		// prefix has its last byte counted up.
		end := prefix[:len(prefix)-1] + string(prefix[len(prefix)-1]+1)
		q = q.StartAt(prefix).EndBefore(end)
	}
	return q, nil
}

// List implements registry.Registry.
func (r *Registry) List(ctx context.Context, coll, prefix string) ([]registry.Doc, error) {
	q, err := r.query(coll, prefix)
	if err != nil {
		return nil, fail("list", coll, "", err)
	}
	snaps, err := q.Documents(ctx).GetAll()
	if err != nil {
		return nil, fail("list", coll, "", err)
	}
	docs := make([]registry.Doc, 0, len(snaps))
	for _, s := range snaps {
		d, err := toDoc(s)
		if err != nil {
			return nil, fail("list", coll, "", err)
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// IDs implements registry.Registry: a query that selects no field.
func (r *Registry) IDs(ctx context.Context, coll, prefix string) ([]string, error) {
	q, err := r.query(coll, prefix)
	if err != nil {
		return nil, fail("list ids of", coll, "", err)
	}
	snaps, err := q.Select().Documents(ctx).GetAll()
	if err != nil {
		return nil, fail("list ids of", coll, "", err)
	}
	ids := make([]string, len(snaps))
	for i, s := range snaps {
		ids[i] = s.Ref.ID
	}
	return ids, nil
}

// Watch implements registry.Registry with a snapshot listener: its first
// snapshot is the current documents, each later one the changes since.
func (r *Registry) Watch(ctx context.Context, coll string) ([]registry.Doc, <-chan registry.Change, error) {
	q, err := r.query(coll, "")
	if err != nil {
		return nil, nil, fail("watch", coll, "", err)
	}
	it := q.Snapshots(ctx)
	snap, err := it.Next()
	if err != nil {
		it.Stop()
		return nil, nil, fail("watch", coll, "", err)
	}
	snaps, err := snap.Documents.GetAll()
	if err != nil {
		it.Stop()
		return nil, nil, fail("watch", coll, "", err)
	}
	docs := make([]registry.Doc, 0, len(snaps))
	for _, s := range snaps {
		d, err := toDoc(s)
		if err != nil {
			it.Stop()
			return nil, nil, fail("watch", coll, "", err)
		}
		docs = append(docs, d)
	}
	out := make(chan registry.Change)
	go func() {
		defer close(out)
		defer it.Stop() // after Next has returned: Stop must not run beside it
		send := func(c registry.Change) bool {
			select {
			case out <- c:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			snap, err := it.Next()
			if err != nil {
				if ctx.Err() == nil { // iterator.Done too: the stream ended
					send(registry.Change{Err: fail("watch", coll, "", err)})
				}
				return
			}
			for _, ch := range snap.Changes {
				c := registry.Change{Doc: registry.Doc{ID: ch.Doc.Ref.ID, UpdatedAt: ch.Doc.UpdateTime}}
				if ch.Kind == gfs.DocumentRemoved {
					c.Deleted = true
					c.UpdatedAt = snap.ReadTime
				} else if c.Doc, err = toDoc(ch.Doc); err != nil {
					send(registry.Change{Err: fail("watch", coll, "", err)})
					return
				}
				if !send(c) {
					return
				}
			}
		}
	}()
	return docs, out, nil
}

// Close closes the client; it is idempotent.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		if err := r.c.Close(); err != nil {
			r.closeErr = fmt.Errorf("registry: firestore: close: %w", err)
		}
	})
	return r.closeErr
}
