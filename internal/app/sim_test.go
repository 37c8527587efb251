package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestSimFaults runs `skyjoin sim` with injected faults and checks the
// answers of both simulated APIs through HTTP.
func TestSimFaults(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		weather     int // status of GET forecast
		users       int // status of GET users
		retryAfter  string
		malformed   bool
		faultBanner string
	}{
		{"none", nil, 200, 200, "", false, "weather: none; users: none"},
		{"weather 503", []string{"--weather-fault", "503"}, 503, 200, "", false, "weather: 503 Service Unavailable on 100% of requests"},
		{"weather 429", []string{"--weather-fault", "429"}, 429, 200, "60", false, "weather: 429 Too Many Requests on 100% of requests"},
		{"weather malformed", []string{"--weather-fault", "malformed"}, 200, 200, "", true, "weather: malformed on 100% of requests"},
		{"weather rate 0", []string{"--weather-fault", "500", "--weather-fault-rate", "0"}, 200, 200, "", false, "weather: none"},
		{"users 500", []string{"--users-fault", "500"}, 200, 500, "", false, "users: 500 Internal Server Error on 100% of requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var stdout, stderr syncBuf
			done := make(chan error, 1)
			go func() {
				done <- runSim(ctx, append([]string{"--log-level", "warn"}, tc.args...), &stdout, &stderr)
			}()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("sim: %v", err)
				}
			}()
			var wx, users string
			for deadline := time.Now().Add(10 * time.Second); wx == "" || users == ""; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no banner: %q %q", stdout.String(), stderr.String())
				}
				if m := regexp.MustCompile(`(?m)^  weather +(\S+)\n  users +(\S+)`).FindStringSubmatch(stdout.String()); m != nil {
					wx, users = m[1], m[2]
				}
			}
			if !strings.Contains(stdout.String(), tc.faultBanner) {
				t.Errorf("banner without %q:\n%s", tc.faultBanner, stdout.String())
			}
			resp, err := http.Get(wx + "/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.weather || resp.Header.Get("Retry-After") != tc.retryAfter {
				t.Errorf("weather: %d Retry-After %q, want %d %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), tc.weather, tc.retryAfter, body)
			}
			if resp.StatusCode == 200 && tc.malformed == (bytes.Contains(body, []byte(`"temperature_2m":`)) && bytes.HasSuffix(bytes.TrimSpace(body), []byte("}"))) {
				t.Errorf("weather body (malformed %v): %s", tc.malformed, body)
			}
			resp, err = http.Get(users + "/api/?results=2")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.users {
				t.Errorf("users: %d, want %d", resp.StatusCode, tc.users)
			}
		})
	}
}

func TestSimFlagsValidated(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runSim(context.Background(), []string{"--weather-fault", "slowly", "--users-fault-rate", "1.5", "--users", "0"}, &stdout, &stderr)
	if err == nil {
		t.Fatal("bad flags accepted")
	}
	for _, want := range []string{"weather-fault must be", "users-fault-rate must be", "users must be at least 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if errors.Is(err, errUsage) {
		t.Errorf("a bad value is not a usage error: %v", err)
	}
}
