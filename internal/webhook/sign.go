package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, keyed with the
	// registration's secret, of HeaderTimestamp's value, a '.', and the
	// body: hex(HMAC(secret, timestamp + "." + body)).
	HeaderSignature = "X-Skyjoin-Signature"
	// HeaderTimestamp is the Unix time in seconds at which the attempt was
	// signed. Receivers refuse old timestamps to stop replays.
	HeaderTimestamp = "X-Skyjoin-Timestamp"
	// HeaderWebhookID names the registration.
	HeaderWebhookID = "X-Skyjoin-Webhook-Id"
	// HeaderDelivery is the batch's id, the same on every attempt and
	// replay of the batch: receivers use it to drop duplicates.
	HeaderDelivery = "X-Skyjoin-Delivery"
)

// DefaultTolerance is the age of a timestamp Verify accepts by default.
const DefaultTolerance = 5 * time.Minute

// Sign returns the HeaderSignature value of body signed at ts.
func Sign(secret string, ts time.Time, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(secret, strconv.FormatInt(ts.Unix(), 10), body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verification errors.
var (
	ErrNoSignature  = errors.New("missing signature or timestamp header")
	ErrBadSignature = errors.New("signature does not match")
	ErrStale        = errors.New("timestamp outside the tolerance")
)

// Verify checks a delivery's signature as a receiver would: the timestamp
// must be within tolerance of now (DefaultTolerance if zero) and the
// signature must match body. It compares in constant time.
func Verify(secret string, h http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	sig, ts := h.Get(HeaderSignature), h.Get(HeaderTimestamp)
	if sig == "" || ts == "" {
		return ErrNoSignature
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", ErrNoSignature, HeaderTimestamp, ts)
	}
	if d := now.Sub(time.Unix(secs, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s is %s away from now", ErrStale, HeaderTimestamp, d.Round(time.Second))
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	if !ok {
		return fmt.Errorf("%w: want sha256=<hex>", ErrBadSignature)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return fmt.Errorf("%w: not hex", ErrBadSignature)
	}
	if !hmac.Equal(got, mac(secret, ts, body)) {
		return ErrBadSignature
	}
	return nil
}
