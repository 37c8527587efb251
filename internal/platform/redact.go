package platform

import (
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Redaction of credentials in text that skyjoin copies into logs, error
// answers, records and failure lists: URLs with user information or
// credential parameters (DSNs of brokers and stores, webhook targets,
// provider requests), and secrets a remote server echoes back.

// Redacted replaces a credential in text.
const Redacted = "REDACTED"

var (
	// userinfo of a URL: scheme://user:password@ or scheme://token@.
	userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s"'<>]+@`)
	// query or form parameters whose name suggests a credential.
	credParamRE = regexp.MustCompile(`(?i)((?:^|[?&;\s"'])[A-Za-z0-9_.-]*(?:key|token|secret|passw|pwd|sig|auth|appid|credential|session)[A-Za-z0-9_.-]*=)[^&#\s"'<>]*`)
)

// RedactText returns s with the credentials of the URLs in it hidden: user
// information (scheme://user:password@host, scheme://token@host) becomes
// scheme://REDACTED@host, and the value of a query parameter whose name
// suggests a credential (apikey, appid, token, access_token, secret,
// password, sig, auth...) becomes REDACTED.
func RedactText(s string) string {
	s = userinfoRE.ReplaceAllString(s, "${1}"+Redacted+"@")
	return credParamRE.ReplaceAllString(s, "${1}"+Redacted)
}

// RedactURL is RedactText for one URL, such as a broker, store or registry
// URL in an error or a log line.
func RedactURL(raw string) string { return RedactText(raw) }

// Scrub returns s with every occurrence of each secret, as given and as
// encoded in a URL query, replaced by REDACTED. Secrets shorter than 4
// bytes are left alone: hiding them would garble the text and hide
// nothing.
func Scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) < 4 {
			continue
		}
		for _, form := range []string{sec, url.QueryEscape(sec), url.PathEscape(sec)} {
			s = strings.ReplaceAll(s, form, Redacted)
		}
	}
	return s
}

// RedactError returns err with the secrets (Scrub) and the credentials of
// URLs (RedactText) removed from its text; errors.Is and errors.As still
// see what it wraps.
func RedactError(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := RedactText(Scrub(err.Error(), secrets...))
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Snippet returns the start of a remote answer for an error message: at
// most max bytes of valid UTF-8 on one line (control characters become
// spaces), "..." marking a cut, and "" for an empty answer.
func Snippet(b []byte, max int) string {
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "?"))
	s = strings.TrimSpace(s)
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for !utf8.ValidString(s) { // a rune split at the cut
		s = s[:len(s)-1]
	}
	return s + "..."
}
