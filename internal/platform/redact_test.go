package platform

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRedactText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://user:s3cret@broker:4222", "nats://REDACTED@broker:4222"},
		{"nats://mytoken@broker:4222", "nats://REDACTED@broker:4222"},
		{`broker URL "nats://u:p@h:1?records_max_age=1h": bad`, `broker URL "nats://REDACTED@h:1?records_max_age=1h": bad`},
		{"GET https://api.example.test/v1/forecast?latitude=1&apikey=K123&longitude=2", "GET https://api.example.test/v1/forecast?latitude=1&apikey=REDACTED&longitude=2"},
		{"/data/2.5/weather?lat=1&appid=abc&units=metric", "/data/2.5/weather?lat=1&appid=REDACTED&units=metric"},
		{"https://h/hook?access_token=t0k#x", "https://h/hook?access_token=REDACTED#x"},
		{"https://h/hook?X-Goog-Signature=abc&sig=d", "https://h/hook?X-Goog-Signature=REDACTED&sig=REDACTED"},
		{"reason: token=abc rest", "reason: token=REDACTED rest"},
		{"https://h/path?page=2&q=weather", "https://h/path?page=2&q=weather"},
		{"no url here", "no url here"},
		{"mailto:someone@example.test", "mailto:someone@example.test"},
	}
	for _, tt := range tests {
		if got := RedactText(tt.in); got != tt.want {
			t.Errorf("RedactText(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactError(t *testing.T) {
	inner := context.DeadlineExceeded
	err := RedactError(fmt.Errorf("dial nats://u:pw@h:1 with key k3y-0123: %w", inner), "k3y-0123")
	if got := err.Error(); got != "dial nats://REDACTED@h:1 with key REDACTED: context deadline exceeded" || !errors.Is(err, inner) {
		t.Fatalf("RedactError = %q (wraps the deadline: %v)", got, errors.Is(err, inner))
	}
	if plain := errors.New("nothing to hide"); RedactError(plain) != plain || RedactError(nil) != nil {
		t.Fatal("RedactError changed an error with nothing to hide")
	}
}

func TestScrubAndSnippet(t *testing.T) {
	key := "k3y/with+chars"
	s := Scrub("invalid key k3y/with+chars (sent as k3y%2Fwith%2Bchars)", key, "ab")
	if strings.Contains(s, "k3y") || strings.Count(s, Redacted) != 2 {
		t.Fatalf("Scrub: %q", s)
	}
	if got := Snippet([]byte("  line1\nline2\x00 "), 100); got != "line1 line2" {
		t.Fatalf("Snippet: %q", got)
	}
	if got := Snippet([]byte(strings.Repeat("é", 10)), 5); got != "éé..." {
		t.Fatalf("Snippet cut: %q", got)
	}
	if got := Snippet([]byte("a\xff\xfeb"), 10); got != "a?b" {
		t.Fatalf("Snippet invalid UTF-8: %q", got)
	}
}
