package webhook

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Webhook signing secrets are kept in the registry sealed: AES-256-GCM with
// a key given by reference (--webhook-secret-key env://VAR or sm://...),
// or, for a process whose registry is its own, a key generated in its data
// dir. A sealed secret is
//
//	v1.KEYID.BASE64URL(nonce || ciphertext)
//
// where KEYID names the key (the first 12 hex digits of a SHA-256 of it,
// the same in every process), and the webhook's id is the additional data,
// so a sealed secret copied into another registration does not open.
// Older keys (--webhook-secret-old-keys) still open what they sealed; a
// process re-seals such secrets, and plaintext ones of earlier versions,
// with its current key when it loads them.

// KeySize is the size of a key: AES-256.
const KeySize = 32

const sealVersion = "v1"

// Keyring seals webhook secrets with its primary key and opens them with
// any of its keys. Secrets sealed with a retiring key are sealed again
// with the primary key when a Dispatcher loads them; a next key only opens
// (see docs/webhooks.md, "Rotating the key").
type Keyring struct {
	primary  string // key id
	keys     map[string]cipher.AEAD
	retiring map[string]bool
}

// ParseKey decodes a key given as text: 32 bytes in standard or URL-safe
// base64 (padded or not) or in hex. Errors never show the text.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("webhook secret key: %d bytes, want %d (e.g. openssl rand -base64 32)", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("webhook secret key: want %d bytes in base64 or hex (e.g. openssl rand -base64 32)", KeySize)
}

// KeyID is the id of a key, stored with what it seals.
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("skyjoin webhook secret key id\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// NewKeyring returns a keyring that seals with primary and opens with
// primary, retiring and next.
func NewKeyring(primary []byte, retiring, next [][]byte) (*Keyring, error) {
	k := &Keyring{keys: map[string]cipher.AEAD{}, retiring: map[string]bool{}}
	add := func(key []byte) (string, error) {
		if len(key) != KeySize {
			return "", fmt.Errorf("webhook secret key: %d bytes, want %d", len(key), KeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return "", fmt.Errorf("webhook secret key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return "", fmt.Errorf("webhook secret key: %w", err)
		}
		id := KeyID(key)
		k.keys[id] = aead
		return id, nil
	}
	var err error
	if k.primary, err = add(primary); err != nil {
		return nil, err
	}
	for _, key := range next {
		if _, err := add(key); err != nil {
			return nil, err
		}
	}
	for _, key := range retiring {
		id, err := add(key)
		if err != nil {
			return nil, err
		}
		if id != k.primary {
			k.retiring[id] = true
		}
	}
	return k, nil
}

// retires reports whether secrets sealed with the key id are to be sealed
// again with the primary key.
func (k *Keyring) retires(keyID string) bool { return k != nil && k.retiring[keyID] }

// Primary is the id of the key that seals; "" for a nil Keyring, which
// seals nothing and opens nothing.
func (k *Keyring) Primary() string {
	if k == nil {
		return ""
	}
	return k.primary
}

func sealAD(webhookID string) []byte { return []byte("skyjoin webhook secret\x00" + webhookID) }

// seal seals the secret of the webhook id with the primary key.
func (k *Keyring) seal(id, secret string) string {
	aead := k.keys[k.primary]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(secret)+aead.Overhead())
	rand.Read(nonce) // never fails
	out := aead.Seal(nonce, nonce, []byte(secret), sealAD(id))
	return sealVersion + "." + k.primary + "." + base64.RawURLEncoding.EncodeToString(out)
}

// Errors of a secret that does not open here.
var (
	errUnknownKey = errors.New("sealed with a key this process does not have")
	errNoKey      = errors.New("sealed, and this process has no --webhook-secret-key")
)

// open returns the secret sealed for the webhook id, and the id of the key
// that sealed it.
func (k *Keyring) open(id, sealed string) (secret, keyID string, err error) {
	v, rest, ok1 := strings.Cut(sealed, ".")
	keyID, data, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || v != sealVersion {
		return "", "", errors.New("sealed secret: unknown format")
	}
	if k == nil {
		return "", keyID, fmt.Errorf("sealed secret: key id %s: %w", keyID, errNoKey)
	}
	aead, ok := k.keys[keyID]
	if !ok {
		return "", keyID, fmt.Errorf("sealed secret: key id %s: %w (give every process the same --webhook-secret-key, and older keys in --webhook-secret-old-keys)", keyID, errUnknownKey)
	}
	raw, err := base64.RawURLEncoding.DecodeString(data)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return "", keyID, errors.New("sealed secret: corrupt")
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, raw[:n], raw[n:], sealAD(id))
	if err != nil {
		return "", keyID, fmt.Errorf("sealed secret: key id %s: does not open (tampered, or moved from another webhook)", keyID)
	}
	return string(plain), keyID, nil
}

// KeyFileName is the file, in the data dir, of the key generated for a
// process whose registry is its own.
const KeyFileName = "webhook-secret.key"

// LoadKeyFile reads the key kept at path; create makes one (0600) if there
// is none. A key file that others than its owner may read is refused.
func LoadKeyFile(path string, create bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createKeyFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("webhook secret key file: %w", err)
	}
	if err := checkKeyFileMode(path); err != nil {
		return nil, err
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

func checkKeyFileMode(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("webhook secret key file: %w", err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("webhook secret key file %s: mode %04o lets others read it: chmod 600 it", path, m)
	}
	return nil
}

// createKeyFile makes a key file at path: written whole to a temporary
// file, then linked into place, so that a crash never leaves a partial key
// and two processes never make two keys.
func createKeyFile(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("webhook secret key file: %w", err)
	}
	key := make([]byte, KeySize)
	rand.Read(key)                                    // never fails
	f, err := os.CreateTemp(dir, KeyFileName+".tmp*") // 0600
	if err != nil {
		return nil, fmt.Errorf("webhook secret key file: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(f.Name(), path)
	}
	if errors.Is(err, fs.ErrExist) { // made meanwhile
		return LoadKeyFile(path, false)
	}
	if err != nil {
		return nil, fmt.Errorf("webhook secret key file: %w", err)
	}
	return key, nil
}
