package pubsub

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings; nil means valid
	}{
		{"minimal", Config{Project: "my-project"}, nil},
		{"domain scoped", Config{Project: "example.com:my-project"}, nil},
		{"everything", Config{
			Project: "my-project", Prefix: "sj", Create: true,
			PublishDelay: time.Millisecond, PublishCount: 1000, PublishBytes: 10_000_000, PublishTimeout: time.Minute,
			MaxOutstandingMessages: 5, MaxOutstandingBytes: 1 << 20, NumGoroutines: 4, MaxExtension: time.Hour,
			ExactlyOnce: true, MinBackoff: time.Second, MaxBackoff: time.Minute, MaxDeliveryAttempts: 5,
			DeadLetterRetention: time.Hour, BrowseLimit: 10,
		}, nil},
		{"min backoff only", Config{Project: "p1", MinBackoff: 10 * time.Second}, nil},
		{"no project", Config{}, []string{"project is required"}},
		{"bad project", Config{Project: "My_Project"}, []string{"not a valid project id"}},
		{"bad prefix", Config{Project: "p1", Prefix: "1abc"}, []string{"prefix"}},
		{"goog prefix", Config{Project: "p1", Prefix: "google"}, []string{`must not start with "goog"`}},
		{"publish count", Config{Project: "p1", PublishCount: 1001}, []string{"publish count"}},
		{"publish bytes", Config{Project: "p1", PublishBytes: 10_000_001}, []string{"publish bytes"}},
		{"goroutines", Config{Project: "p1", NumGoroutines: 101}, []string{"goroutines"}},
		{"max extension", Config{Project: "p1", MaxExtension: time.Second}, []string{"max extension"}},
		{"backoff order", Config{Project: "p1", MinBackoff: time.Minute, MaxBackoff: time.Second}, []string{"must not exceed max backoff"}},
		{"backoff limit", Config{Project: "p1", MaxBackoff: time.Hour}, []string{"at most 10m0s"}},
		{"delivery attempts", Config{Project: "p1", MaxDeliveryAttempts: 3}, []string{"max delivery attempts 3"}},
		{"retention", Config{Project: "p1", DeadLetterRetention: 8 * 24 * time.Hour}, []string{"dead-letter retention"}},
		{"every problem", Config{
			Prefix: "-", PublishDelay: -1, PublishTimeout: -1, MaxOutstandingMessages: -1, MaxOutstandingBytes: -1,
			MinBackoff: -1, BrowseLimit: -1,
		}, []string{"project is required", "prefix", "publish delay", "publish timeout", "max outstanding messages",
			"max outstanding bytes", "min backoff", "browse limit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want errors %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		want    Config
		wantErr []string
	}{
		{url: "pubsub://my-project", want: Config{Project: "my-project"}},
		{url: "pubsub://my-project/", want: Config{Project: "my-project"}},
		{url: "pubsub://my-project?create=true&prefix=skyjoin", want: Config{Project: "my-project", Create: true, Prefix: "skyjoin"}},
		{
			url: "pubsub://p1?publish_delay=5ms&publish_count=50&publish_bytes=500000&publish_timeout=30s" +
				"&max_outstanding_messages=2000&max_outstanding_bytes=1048576&goroutines=4&max_extension=10m" +
				"&exactly_once=true&min_backoff=1s&max_backoff=1m&max_delivery_attempts=20" +
				"&deadletter_retention=72h&browse_limit=500",
			want: Config{
				Project: "p1", PublishDelay: 5 * time.Millisecond, PublishCount: 50, PublishBytes: 500000,
				PublishTimeout: 30 * time.Second, MaxOutstandingMessages: 2000, MaxOutstandingBytes: 1 << 20,
				NumGoroutines: 4, MaxExtension: 10 * time.Minute, ExactlyOnce: true, MinBackoff: time.Second,
				MaxBackoff: time.Minute, MaxDeliveryAttempts: 20, DeadLetterRetention: 72 * time.Hour, BrowseLimit: 500,
			},
		},
		{url: "nats://p1", wantErr: []string{`scheme "nats"`}},
		{url: "pubsub://", wantErr: []string{"no project"}},
		{url: "pubsub://p1/topic", wantErr: []string{"path"}},
		{url: "pubsub://user:secret@p1", wantErr: []string{"user info"}},
		{url: "pubsub://p1?topic=x", wantErr: []string{`unknown parameter "topic"`}},
		{url: "pubsub://p1?create=yes", wantErr: []string{"create"}},
		{url: "pubsub://p1?create=true&create=false", wantErr: []string{"given 2 times"}},
		{url: "pubsub://p1?prefix=", wantErr: []string{"prefix is empty"}},
		{
			url:     "pubsub://p1?publish_delay=soon&goroutines=many&bogus=1",
			wantErr: []string{"publish_delay", "goroutines", `unknown parameter "bogus"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got, err := ParseURL(tc.url)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseURL: nil error, want %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("ParseURL: %v\nwant it to contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error leaks the URL's password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURL: %v", err)
			}
			if got != tc.want {
				t.Errorf("ParseURL:\n got %+v\nwant %+v", got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate of the parsed config: %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := Config{Project: "p1"}.withDefaults()
	if c.Prefix != DefaultPrefix || c.MaxOutstandingMessages != DefaultMaxOutstandingMessages ||
		c.NumGoroutines != DefaultNumGoroutines || c.PublishCount != DefaultPublishCount {
		t.Errorf("withDefaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}
