// Package natskv is the NATS JetStream backend of package registry: one
// key-value bucket (file storage, history 1) on the JetStream server the
// pipeline already uses. A document coll/id is the key "coll.id"; a watch
// is a KV watch on "coll.*", so a change reaches every process as soon as
// the server has stored it.
//
// URLs (registry.Open):
//
//	nats://embedded[?bucket=NAME]        the bucket on this process's broker connection (Options.JetStream)
//	nats://[USER:PASS@]HOST:PORT[?bucket=NAME]   the bucket on an external server, over its own connection
//
// The bucket, skyjoin_registry by default, is created on first use; a
// bucket that exists already (created by another process, or by an
// operator with more replicas) is used as it is.
package natskv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/registry"
)

// DefaultBucket is the bucket of the registry unless the URL names another.
const DefaultBucket = "skyjoin_registry"

// apiTimeout bounds each JetStream call made without a deadline.
const apiTimeout = 10 * time.Second

func init() { registry.Register("nats", open) }

var bucketRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

var _ registry.Registry = (*KV)(nil)

// KV is a registry.Registry on a JetStream key-value bucket. It is safe for
// concurrent use.
type KV struct {
	kv jetstream.KeyValue
	nc *nats.Conn // dialled by Dial and closed by Close; nil when handed a JetStream

	closeOnce sync.Once
}

// open is the registry.OpenFunc of the nats scheme.
func open(ctx context.Context, u *url.URL, o registry.Options) (registry.Registry, error) {
	bucket := DefaultBucket
	for k, v := range u.Query() {
		switch k {
		case "bucket":
			bucket = v[0]
		default:
			return nil, fmt.Errorf("registry URL %s: unknown parameter %q (known: bucket)", platform.RedactURL(u.String()), k)
		}
	}
	if u.Path != "" && u.Path != "/" || u.Fragment != "" {
		return nil, fmt.Errorf("registry URL %s: want nats://HOST:PORT[?bucket=NAME] without a path", platform.RedactURL(u.String()))
	}
	if u.Host == "embedded" {
		if o.JetStream == nil {
			return nil, fmt.Errorf("registry URL %s: this process runs no JetStream broker; name a server (nats://HOST:PORT) or another backend", platform.RedactURL(u.String()))
		}
		return New(ctx, o.JetStream, bucket)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("registry URL %s: no host", platform.RedactURL(u.String()))
	}
	v := *u
	v.RawQuery = ""
	r, err := Dial(ctx, v.String(), bucket)
	if err != nil {
		return nil, fmt.Errorf("registry URL %s: %w", platform.RedactURL(u.String()), err)
	}
	return r, nil
}

// Dial connects to the NATS server at url (nats://[user:pass@]host:port)
// and opens the bucket there. Close closes the connection.
func Dial(ctx context.Context, url, bucket string) (*KV, error) {
	nc, err := nats.Connect(url, nats.Name("skyjoin-registry"), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	if err != nil {
		return nil, fmt.Errorf("registry: natskv: connect: %w", err) // url may hold a password
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(apiTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("registry: natskv: jetstream: %w", err)
	}
	r, err := New(ctx, js, bucket)
	if err != nil {
		nc.Close()
		return nil, err
	}
	r.nc = nc
	return r, nil
}

// New opens the bucket on js, creating it if need be. Close leaves js's
// connection open.
func New(ctx context.Context, js jetstream.JetStream, bucket string) (*KV, error) {
	if !bucketRE.MatchString(bucket) {
		return nil, fmt.Errorf("registry: natskv: %w: bucket %q: want 1 to 64 of [A-Za-z0-9_-]", registry.ErrInvalid, bucket)
	}
	// A value and its subject must fit one message.
	if mp := js.Conn().MaxPayload(); mp < registry.MaxDocSize+1024 {
		return nil, fmt.Errorf("registry: natskv: the server's max_payload is %d bytes, below the registry's document limit of %d bytes: raise max_payload to 1MB or more", mp, registry.MaxDocSize)
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       bucket,
		Description:  "skyjoin registry: webhooks and other state every process shares",
		History:      1,
		Storage:      jetstream.FileStorage,
		MaxValueSize: registry.MaxDocSize,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: natskv: open bucket %s: %w", bucket, err)
	}
	return &KV{kv: kv}, nil
}

// key is the bucket key of coll/id.
func key(coll, id string) string { return coll + "." + id }

// fail wraps err with the operation, as registry errors where they apply;
// a nil err stays nil.
func fail(op, coll, id string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		err = fmt.Errorf("%w (%w)", registry.ErrNotFound, err)
	case errors.Is(err, jetstream.ErrKeyExists):
		err = fmt.Errorf("%w (%w)", registry.ErrExists, err)
	}
	return registry.Fail("natskv", op, coll, id, err)
}

// Create implements registry.Registry.
func (r *KV) Create(ctx context.Context, coll, id string, doc []byte) error {
	return fail("create", coll, id, registry.CheckWrite(coll, id, doc, func() error {
		_, err := r.kv.Create(ctx, key(coll, id), doc)
		return err
	}))
}

// Put implements registry.Registry.
func (r *KV) Put(ctx context.Context, coll, id string, doc []byte) error {
	return fail("put", coll, id, registry.CheckWrite(coll, id, doc, func() error {
		_, err := r.kv.Put(ctx, key(coll, id), doc)
		return err
	}))
}

// Get implements registry.Registry.
func (r *KV) Get(ctx context.Context, coll, id string) (registry.Doc, error) {
	if err := registry.CheckKey(coll, id); err != nil {
		return registry.Doc{}, fail("get", coll, id, err)
	}
	e, err := r.kv.Get(ctx, key(coll, id))
	if err != nil {
		return registry.Doc{}, fail("get", coll, id, err)
	}
	return registry.Doc{ID: id, Data: e.Value(), UpdatedAt: e.Created()}, nil
}

// Delete implements registry.Registry. It leaves a delete marker, which
// is how watchers learn of it.
func (r *KV) Delete(ctx context.Context, coll, id string) error {
	if err := registry.CheckKey(coll, id); err != nil {
		return fail("delete", coll, id, err)
	}
	if err := r.kv.Delete(ctx, key(coll, id)); err != nil {
		return fail("delete", coll, id, err)
	}
	return nil
}

// List implements registry.Registry.
func (r *KV) List(ctx context.Context, coll, prefix string) ([]registry.Doc, error) {
	docs, err := r.scan(ctx, coll, prefix, false)
	if err != nil {
		return nil, fail("list", coll, "", err)
	}
	return docs, nil
}

// IDs implements registry.Registry.
func (r *KV) IDs(ctx context.Context, coll, prefix string) ([]string, error) {
	docs, err := r.scan(ctx, coll, prefix, true)
	if err != nil {
		return nil, fail("list ids of", coll, "", err)
	}
	ids := make([]string, len(docs))
	for i, d := range docs {
		ids[i] = d.ID
	}
	return ids, nil
}

// scan reads the current documents of coll whose id starts with prefix,
// ordered by id: a watch of the last value of each key, stopped once it
// has sent them.
func (r *KV) scan(ctx context.Context, coll, prefix string, idsOnly bool) ([]registry.Doc, error) {
	if err := registry.CheckList(coll, prefix); err != nil {
		return nil, err
	}
	opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
	if idsOnly {
		opts = append(opts, jetstream.MetaOnly())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := r.kv.Watch(ctx, coll+".*", opts...)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	docs, err := initial(ctx, w, coll)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(docs, func(d registry.Doc) bool { return !strings.HasPrefix(d.ID, prefix) }), nil
}

// initial reads a new watcher's initial values up to the marker (a nil
// entry), ordered by id; delete markers are not documents.
func initial(ctx context.Context, w jetstream.KeyWatcher, coll string) ([]registry.Doc, error) {
	docs := []registry.Doc{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watch closed before its initial values")
			}
			if e == nil {
				slices.SortFunc(docs, func(a, b registry.Doc) int { return strings.Compare(a.ID, b.ID) })
				return docs, nil
			}
			if e.Operation() == jetstream.KeyValuePut {
				docs = append(docs, toDoc(e, coll))
			}
		}
	}
}

func toDoc(e jetstream.KeyValueEntry, coll string) registry.Doc {
	return registry.Doc{ID: strings.TrimPrefix(e.Key(), coll+"."), Data: e.Value(), UpdatedAt: e.Created()}
}

// Watch implements registry.Registry.
func (r *KV) Watch(ctx context.Context, coll string) ([]registry.Doc, <-chan registry.Change, error) {
	if err := registry.CheckCollection(coll); err != nil {
		return nil, nil, fail("watch", coll, "", err)
	}
	w, err := r.kv.Watch(ctx, coll+".*")
	if err != nil {
		return nil, nil, fail("watch", coll, "", err)
	}
	docs, err := initial(ctx, w, coll)
	if err != nil {
		w.Stop()
		return nil, nil, fail("watch", coll, "", err)
	}
	out := make(chan registry.Change)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
				return
			case e, ok = <-w.Updates():
			}
			c := registry.Change{}
			switch {
			case !ok:
				c.Err = fail("watch", coll, "", errors.New("the watch's subscription closed"))
			case e == nil:
				continue
			default:
				c.Doc = toDoc(e, coll)
				if c.Deleted = e.Operation() != jetstream.KeyValuePut; c.Deleted {
					c.Data = nil
				}
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
			if c.Err != nil {
				return
			}
		}
	}()
	return docs, out, nil
}

// Close closes the connection Dial made; it is idempotent.
func (r *KV) Close() error {
	r.closeOnce.Do(func() {
		if r.nc != nil {
			r.nc.Close()
		}
	})
	return nil
}
