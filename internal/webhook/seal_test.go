package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	secretref "github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/registry"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestKeyring(t *testing.T) {
	k := testKeyring(t, key(1), nil, nil)
	a, b := k.seal("wh_1", secret), k.seal("wh_1", secret)
	if a == b {
		t.Fatal("two seals of one secret are equal: the nonce is not random")
	}
	if strings.Contains(a, secret) || !strings.HasPrefix(a, "v1."+KeyID(key(1))+".") {
		t.Fatalf("sealed %q", a)
	}
	got, kid, err := k.open("wh_1", a)
	if err != nil || got != secret || kid != KeyID(key(1)) {
		t.Fatalf("open = %q %q %v", got, kid, err)
	}
	if _, _, err := k.open("wh_2", a); err == nil {
		t.Fatal("a secret sealed for wh_1 opened as wh_2's")
	}
	tampered := a[:len(a)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(a, "AA")]
	if _, _, err := k.open("wh_1", tampered); err == nil {
		t.Fatal("a tampered secret opened")
	}
	other := testKeyring(t, key(2), nil, nil)
	if _, kid, err := other.open("wh_1", a); !errors.Is(err, errUnknownKey) || kid != KeyID(key(1)) {
		t.Fatalf("open with another key: %q %v", kid, err)
	}
	// Retiring and next keys open; only retiring ones are to be re-sealed.
	ring := testKeyring(t, key(2), [][]byte{key(1)}, [][]byte{key(3)})
	if _, _, err := ring.open("wh_1", a); err != nil || !ring.retires(KeyID(key(1))) {
		t.Fatalf("retiring key: %v", err)
	}
	next := testKeyring(t, key(3), nil, nil).seal("wh_1", secret)
	if _, _, err := ring.open("wh_1", next); err != nil || ring.retires(KeyID(key(3))) {
		t.Fatalf("next key: %v", err)
	}
	if ring.retires(ring.Primary()) {
		t.Fatal("the primary key retires")
	}
}

func TestParseKey(t *testing.T) {
	raw := key(7)
	for _, s := range []string{
		base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw),
		hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw) + "\n",
	} {
		if k, err := ParseKey(s); err != nil || !bytes.Equal(k, raw) {
			t.Errorf("ParseKey(%q) = %x, %v", s, k, err)
		}
	}
	for _, s := range []string{"", "too-short", base64.StdEncoding.EncodeToString(raw[:16]), "not base64 at all, a passphrase"} {
		k, err := ParseKey(s)
		if err == nil {
			t.Errorf("ParseKey(%q) = %x, want an error", s, k)
		} else if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("the error shows the key: %v", err)
		}
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", KeyFileName)
	if _, err := LoadKeyFile(path, false); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no key file, not created: %v", err)
	}
	k1, err := LoadKeyFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode(), err)
	}
	k2, err := LoadKeyFile(path, true)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %v (same key: %v)", err, bytes.Equal(k1, k2))
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path, true); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key file others may read: %v", err)
	}
	os.Chmod(path, 0o600)
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("files left in the data dir: %v", entries)
	}

	// Without --webhook-secret-key, a Dispatcher seals with the key file;
	// with one, the key file's secrets still open and are sealed again.
	cfg := Config{KeyFile: path}
	e := newEnv(t, cfg)
	rcv := newReceiver(t, secret)
	w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	if kid := sealedKeyID(t, e, w.ID); kid != KeyID(k1) {
		t.Fatalf("sealed with %s, want the key file's %s", kid, KeyID(k1))
	}
	t.Setenv("SKYJOIN_TEST_WEBHOOK_KEY", base64.StdEncoding.EncodeToString(key(9)))
	if err := e.cfg.SecretKey.Set("env://SKYJOIN_TEST_WEBHOOK_KEY"); err != nil {
		t.Fatal(err)
	}
	resolve(t, e.cfg)
	e.reopen()
	eventually(t, "the secret sealed again with the new key", func() bool { return sealedKeyID(t, e, w.ID) == KeyID(key(9)) })
	e.d.Deliver([]event.Record{rec("kf", "Spain", 20)}, nil)
	eventually(t, "a delivery signed with the secret", func() bool { return len(rcv.received()) == 1 })
	if _, bad, _ := rcv.snapshot(); bad != 0 {
		t.Fatalf("%d bad signatures", bad)
	}
}

// resolve resolves the secret references of cfg from the environment.
func resolve(t *testing.T, cfg Config) {
	t.Helper()
	for _, v := range cfg.Secrets() {
		if err := v.Resolve(t.Context(), &secretref.Resolver{}); err != nil {
			t.Fatal(err)
		}
	}
}

// sealedKeyID is the key id of the webhook's sealed secret in the
// registry; it fails the test if the document holds the secret in clear.
func sealedKeyID(t *testing.T, e *env, id string) string {
	t.Helper()
	d, err := e.reg.Get(t.Context(), collWebhooks, id)
	if err != nil {
		t.Fatal(err)
	}
	var doc webhookDoc
	decode(t, d.Data, &doc)
	if doc.Secret != "" || bytes.Contains(d.Data, []byte(secret)) {
		return "plaintext"
	}
	parts := strings.Split(doc.SealedSecret, ".")
	if len(parts) != 3 {
		t.Fatalf("sealed secret %q", doc.SealedSecret)
	}
	return parts[1]
}

// TestSecretsSealedAtRest: neither the registry's documents nor the files
// of the broker under them hold a webhook's secret, and the secret still
// signs deliveries after a restart. Positive control: the same files hold
// the webhook's URL.
func TestSecretsSealedAtRest(t *testing.T) {
	e := newEnv(t, Config{})
	rcv := newReceiver(t, secret)
	w := e.register(map[string]any{"url": rcv.srv.URL + "/at-rest", "max_wait_ms": 0})
	docs, err := e.reg.List(t.Context(), collWebhooks, "")
	if err != nil || len(docs) != 1 {
		t.Fatalf("list: %d %v", len(docs), err)
	}
	if bytes.Contains(docs[0].Data, []byte(secret)) || !bytes.Contains(docs[0].Data, []byte(`"secret_sealed":"v1.`)) {
		t.Fatalf("the registry document: %s", docs[0].Data)
	}
	e.reopen() // the broker's files are written out
	grepDir := func(s string) []string {
		var found []string
		filepath.WalkDir(e.srv.Dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(s)) {
					found = append(found, path)
				}
			}
			return nil
		})
		return found
	}
	if found := grepDir(secret); len(found) > 0 {
		t.Fatalf("the secret in clear in %v", found)
	}
	if found := grepDir(rcv.srv.URL + "/at-rest"); len(found) == 0 {
		t.Fatal("positive control: the webhook's URL is in none of the broker's files; the grep sees nothing")
	}
	e.d.Deliver([]event.Record{rec("ar", "Spain", 20)}, nil)
	eventually(t, "a delivery after the restart", func() bool { return len(rcv.received()) == 1 })
	if _, bad, _ := rcv.snapshot(); bad != 0 {
		t.Fatalf("%d bad signatures after the restart", bad)
	}
	_ = w
}

// TestPlaintextRegistrationSealed: a registration stored by a version
// before sealing (its secret in clear) loads, signs with its secret, and
// is stored again sealed.
func TestPlaintextRegistrationSealed(t *testing.T) {
	e := newEnv(t, Config{})
	rcv := newReceiver(t, secret)
	id := newID("wh_")
	old := fmt.Sprintf(`{"id":%q,"url":%q,"filter":"","secret":%q,"batch_size":10,"max_wait_ms":0,"created_at":"2026-01-01T00:00:00Z"}`, id, rcv.srv.URL, secret)
	if err := e.reg.Put(t.Context(), collWebhooks, id, []byte(old)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the registration sealed", func() bool { return sealedKeyID(t, e, id) == KeyID(testKey) })
	// Registered without allow_private (earlier versions had no such field)
	// and loopback: the process-wide opt-out lets it deliver here.
	e.close()
	e.cfg.AllowPrivate = true
	e.open(e.srv.Registry(t))
	e.d.Deliver([]event.Record{rec("pt", "Spain", 20)}, nil)
	eventually(t, "a delivery", func() bool { return len(rcv.received()) == 1 })
	if _, bad, _ := rcv.snapshot(); bad != 0 {
		t.Fatalf("%d bad signatures", bad)
	}
	if w := e.get(id); w.URL != rcv.srv.URL || !w.CreatedAt.Equal(mustTime(t, "2026-01-01T00:00:00Z")) {
		t.Fatalf("registration %+v", w)
	}
}

// TestKeyRotation: the key is rotated as docs/webhooks.md says. A next key
// opens and is left alone; once primary, the secrets of the old key, now
// retiring, are sealed again; then the old key can go. A registration
// sealed with a key the process lacks is inactive, and says so.
func TestKeyRotation(t *testing.T) {
	var logs lockedBuffer
	e := newEnv(t, Config{keys: testKeyring(t, key(1), nil, nil)})
	e.log = slog.New(slog.NewJSONHandler(&logs, nil))
	e.reopen()
	rcv := newReceiver(t, secret)
	delivered := 0
	deliver := func(what string) {
		t.Helper()
		id := fmt.Sprintf("rot-%d", delivered)
		e.d.Deliver([]event.Record{rec(id, "Spain", 20)}, nil)
		delivered++
		eventually(t, what, func() bool { return len(rcv.received()) == delivered })
		if _, bad, _ := rcv.snapshot(); bad != 0 {
			t.Fatalf("%s: %d bad signatures", what, bad)
		}
	}
	w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	if kid := sealedKeyID(t, e, w.ID); kid != KeyID(key(1)) {
		t.Fatalf("sealed with %s", kid)
	}

	// 1. Every process gets the new key as next key; one that has it
	// already as primary seals with it (a registration made there).
	e.cfg.keys = testKeyring(t, key(1), nil, [][]byte{key(2)})
	e.reopen()
	w2doc := testKeyring(t, key(2), nil, nil)
	id2 := newID("wh_")
	doc := fmt.Sprintf(`{"id":%q,"url":%q,"filter":"false","secret_sealed":%q,"allow_private":true,"batch_size":1,"max_wait_ms":0,"created_at":"2026-01-01T00:00:00Z"}`,
		id2, rcv.srv.URL, w2doc.seal(id2, secret))
	if err := e.reg.Put(t.Context(), collWebhooks, id2, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the registration sealed with the next key live", func() bool { return e.live(id2) })
	deliver("delivery with key 1 primary and key 2 next")
	if kid := sealedKeyID(t, e, id2); kid != KeyID(key(2)) {
		t.Fatalf("a next key's secret was sealed again, with %s", kid)
	}

	// 2. The new key becomes primary, the old one retiring: what it
	// sealed is sealed again.
	e.cfg.keys = testKeyring(t, key(2), [][]byte{key(1)}, nil)
	e.reopen()
	eventually(t, "the old key's secret sealed again", func() bool { return sealedKeyID(t, e, w.ID) == KeyID(key(2)) })
	deliver("delivery after the rotation")

	// 3. The old key goes.
	e.cfg.keys = testKeyring(t, key(2), nil, nil)
	e.reopen()
	deliver("delivery without the old key")

	// A process with another key cannot open them: it sends nothing,
	// keeps their batches in the failure list and says so; a process with
	// the key replays them.
	e.cfg.keys = testKeyring(t, key(3), nil, nil)
	e.reopen()
	e.d.Deliver([]event.Record{rec("rot-lacking", "Spain", 20)}, nil)
	eventually(t, "the batch in the failure list", func() bool { return len(e.failures(w.ID)) == 1 })
	f := e.failures(w.ID)[0]
	if f.Attempts != 0 || !strings.Contains(f.Reason, "not sent") || !strings.Contains(f.Reason, KeyID(key(2))) {
		t.Fatalf("failure %+v: want no attempt and the key id", f)
	}
	if code, body := e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", nil); code != 503 || !strings.Contains(string(body), "process that has the key") {
		t.Fatalf("replay through the process without the key: %d %s", code, body)
	}
	if !strings.Contains(logs.String(), "sealed with a key this process does not have") {
		t.Fatalf("no log of the registration whose key is lacking: %s", logs.String())
	}
	if n, _, _ := rcv.snapshot(); n != delivered {
		t.Fatalf("the receiver got %d requests, want %d", n, delivered)
	}
	e.cfg.keys = testKeyring(t, key(2), nil, nil)
	e.reopen()
	if code, body := e.do("POST", "/v1/webhooks/"+w.ID+"/failures/replay", nil); code != 200 || !strings.Contains(string(body), `"delivered":1`) {
		t.Fatalf("replay through a process with the key: %d %s", code, body)
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatal("the logs hold the secret")
	}
}

// TestNoKey: a Dispatcher without a key (a shared registry and no
// --webhook-secret-key) registers nothing, and keeps the batches of sealed
// registrations in the failure list; plaintext ones of earlier versions
// still deliver.
func TestNoKey(t *testing.T) {
	e := newEnv(t, Config{})
	rcv := newReceiver(t, secret)
	w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	e.cfg.keys = nil
	e.cfg.AllowPrivate = true // for the plaintext registration below
	e.reopen()
	code, body := e.do("POST", "/v1/webhooks", map[string]any{"url": rcv.srv.URL, "secret": secret, "allow_private": true})
	if code != 503 || !strings.Contains(string(body), "webhook-secret-key") {
		t.Fatalf("register without a key: %d %s", code, body)
	}
	id := newID("wh_")
	old := fmt.Sprintf(`{"id":%q,"url":%q,"filter":"","secret":%q,"batch_size":10,"max_wait_ms":0,"created_at":"2026-01-01T00:00:00Z"}`, id, rcv.srv.URL+"/plain", secret)
	if err := e.reg.Put(t.Context(), collWebhooks, id, []byte(old)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the plaintext registration live", func() bool { return e.live(id) })
	e.d.Deliver([]event.Record{rec("nk", "Spain", 20)}, nil)
	eventually(t, "the sealed one's batch in the failure list", func() bool { return len(e.failures(w.ID)) == 1 })
	eventually(t, "the plaintext one's delivery", func() bool { return len(rcv.received()) == 1 })
	if d, _ := e.reg.Get(t.Context(), collWebhooks, id); !bytes.Equal(d.Data, []byte(old)) {
		t.Fatalf("the plaintext registration was rewritten without a key: %s", d.Data)
	}
}

// TestRevivedRegistrationDeletedAgain: a deletion that falls between a
// re-seal's read and its write is made again when the watch brings the
// write back.
func TestRevivedRegistrationDeletedAgain(t *testing.T) {
	e := newEnv(t, Config{})
	rcv := newReceiver(t, secret)
	w := e.register(map[string]any{"url": rcv.srv.URL, "max_wait_ms": 0})
	d, err := e.reg.Get(t.Context(), collWebhooks, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	resealed := bytes.Replace(d.Data, []byte(`"filter":""`), []byte(`"filter":"true"`), 1) // any other bytes
	e.d.mu.Lock()
	e.d.resealing[w.ID] = &resealing{doc: resealed}
	e.d.mu.Unlock()
	// Another process deletes it, then the re-seal's write lands.
	if err := e.reg.Delete(t.Context(), collWebhooks, w.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deletion seen", func() bool { return !e.live(w.ID) })
	if err := e.reg.Put(t.Context(), collWebhooks, w.ID, resealed); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revived registration deleted again", func() bool {
		_, err := e.reg.Get(t.Context(), collWebhooks, w.ID)
		return errors.Is(err, registry.ErrNotFound)
	})
	if e.live(w.ID) {
		t.Fatal("the revived registration is live")
	}
}

// lockedBuffer is a bytes.Buffer for a logger used by several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
