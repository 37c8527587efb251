package app

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/auth/authtest"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
)

// TestPushRoute: `up` with --enrich-pull=false takes an events message as
// a Pub/Sub push request on POST /v1/push/events, with auth on: an ID token
// of the push service account (default ID token scopes: ingest, push) is
// answered 204 once the event is stored; no token is a 401; an API key of
// the ingest scope a 403.
func TestPushRoute(t *testing.T) {
	dir := t.TempDir()
	ingestKey := keysCmd(t, "create", "--scope", "ingest", "--data-dir", dir).Token
	readKey := keysCmd(t, "create", "--scope", "read", "--data-dir", dir).Token
	const aud, email = "https://skyjoin-enrich.test", "pubsub-push@p.iam.gserviceaccount.com"
	issuer := authtest.NewIssuer(t)
	base, stop := startInProcess(t, upHooks{}, "--data-dir", dir, "--auth=on", "--enrich-pull=false",
		"--auth-idtoken-audience", aud, "--auth-idtoken-jwks-url", issuer.URL, "--auth-idtoken-emails", email)
	defer stop()

	now := time.Now().UTC()
	body := `{"event_id":"push-1","event_type":"t","occurred_at":"` + now.Format(time.RFC3339) + `","user":{"id":"u"},"location":{"latitude":52.5,"longitude":13.4}}`
	m := envelope.NewEvents([]byte(body), event.ContentTypeJSON, 1, now, "test")
	req, _ := json.Marshal(map[string]any{
		"message":         map[string]any{"data": base64.StdEncoding.EncodeToString(m.Data), "attributes": m.Attributes, "messageId": "17", "publishTime": now},
		"subscription":    "projects/p/subscriptions/skyjoin-events-push",
		"deliveryAttempt": 1,
	})
	send := func(bearer string) int {
		r, _ := http.NewRequest(http.MethodPost, base+"/v1/push/events", strings.NewReader(string(req)))
		r.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := send(""); s != http.StatusUnauthorized {
		t.Errorf("no credential: %d", s)
	}
	if s := send(ingestKey); s != http.StatusForbidden {
		t.Errorf("an ingest key: %d, want 403", s)
	}
	stored := func() int {
		status, _, _ := call(t, http.MethodGet, base+"/v1/events/push-1", cred{name: "read", bearer: readKey})
		return status
	}
	if s := stored(); s != http.StatusNotFound {
		t.Fatalf("GET /v1/events/push-1 before the push: %d, want 404", s)
	}
	if s := send(issuer.Sign(t, authtest.Claims(aud, email, time.Now()))); s != http.StatusNoContent {
		t.Fatalf("push with the push account's ID token: %d, want 204", s)
	}
	// 204 means stored: no waiting.
	if s := stored(); s != http.StatusOK {
		t.Fatalf("GET /v1/events/push-1 right after the 204: %d, want 200", s)
	}
}
