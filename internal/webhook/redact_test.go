package webhook

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/event"
)

// TestNoCredentialInFailures: a target URL may carry the receiver's own
// credential (?token=...). Neither the failure list, nor a replay's answer,
// nor the logs show it, nor the webhook's signing secret: not from a
// network error (whose text names the URL), nor from a target that echoes
// its request in its error answer.
func TestNoCredentialInFailures(t *testing.T) {
	const echoToken, deadToken = "tok-echo-0123456789abcdef", "tok-dead-0123456789abcdef"
	var logs lockedBuffer
	e := newEnv(t, Config{MaxAttempts: 2, RetryDelay: 1, MaxRetryDelay: 2})
	e.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.reopen()

	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad request to "+r.URL.String()+" token="+r.URL.Query().Get("token")+" with "+r.Header.Get(HeaderSignature), http.StatusBadRequest)
	}))
	defer echo.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	we := e.register(map[string]any{"url": echo.URL + "/hook?token=" + echoToken, "max_wait_ms": 0})
	wd := e.register(map[string]any{"url": deadURL + "/hook?access_token=" + deadToken, "max_wait_ms": 0})
	e.d.Deliver([]event.Record{rec("c1", "Spain", 20)}, nil)
	eventually(t, "both failures", func() bool { return len(e.failures(we.ID)) == 1 && len(e.failures(wd.ID)) == 1 })

	var answers []string
	for _, id := range []string{we.ID, wd.ID} {
		_, body := e.do("GET", "/v1/webhooks/"+id+"/failures", nil)
		answers = append(answers, string(body))
		_, body = e.do("POST", "/v1/webhooks/"+id+"/failures/replay", nil)
		answers = append(answers, string(body))
	}
	all := strings.Join(answers, "\n")
	if !strings.Contains(all, "400") || !strings.Contains(all, "refused") {
		t.Fatalf("the failures do not say what failed: %s", all)
	}
	for where, text := range map[string]string{"API answers": all, "logs": logs.String()} {
		for _, cred := range []string{echoToken, deadToken, secret} {
			if strings.Contains(text, cred) {
				t.Errorf("the %s hold %q:\n%s", where, cred, text)
			}
		}
	}
	if !strings.Contains(all, "token=REDACTED") {
		t.Errorf("the echoed URL is not in the failure, redacted: %s", all)
	}
}
