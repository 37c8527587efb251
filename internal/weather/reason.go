package weather

import (
	"net/http"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// MaxReasonLength bounds the part of a provider's error answer kept in an
// APIError's Reason, which records copy into enrichment.error.
const MaxReasonLength = 200

// Reason is the Reason of an APIError: the provider's own message
// (structured, from its JSON error body) or else the start of its answer,
// on one line, at most MaxReasonLength bytes, without the API key (as
// sent, or URL-encoded) should the provider echo it, nor any other
// credential in a URL; the status text for an empty answer.
func Reason(structured string, body []byte, status int, apiKey string) string {
	s := structured
	if s == "" {
		s = string(body)
	}
	s = platform.Snippet([]byte(platform.RedactText(platform.Scrub(s, apiKey))), MaxReasonLength)
	if s == "" {
		s = http.StatusText(status)
	}
	return s
}
