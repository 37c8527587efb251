package app

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/audit"
	"github.com/skyjoin/skyjoin/internal/auth"
)

// TestAdminListenerAudited: each request to the admin listener (metrics,
// debug) is an audit entry naming the caller and the result, as a public
// route's is; a refused one too.
func TestAdminListenerAudited(t *testing.T) {
	dir := t.TempDir()
	admin := keysCmd(t, "create", "--scope", "admin", "--data-dir", dir)
	logs := &syncBuf{}
	// Only errors and the audit trail, which is written whatever the level.
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelError}))
	base, stopUp := startInProcess(t, upHooks{log: log}, "--data-dir", dir, "--auth=on")
	stop := sync.OnceFunc(stopUp)
	defer stop()
	adminBase := adminURL(t, base)
	for _, path := range []string{"/metrics", "/debug/pipeline", "/debug/pprof/cmdline"} {
		if status, _, body := call(t, http.MethodGet, adminBase+path, cred{name: "admin", bearer: admin.Token}); status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, body)
		}
	}
	if status, _, _ := call(t, http.MethodGet, adminBase+"/metrics", cred{name: "none"}); status != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without a key: %d, want 401", status)
	}
	stop() // every entry written
	type seen struct{ route, principal string }
	got := map[seen]float64{}
	for _, e := range logEntries(logs, "audit") {
		if e["audit"] == true {
			got[seen{e["route"].(string), e["principal"].(string)}] = e["status"].(float64)
		}
	}
	for _, want := range []struct {
		route, principal string
		status           float64
	}{
		{"GET /metrics", admin.ID, 200},
		{"GET /debug/pipeline", admin.ID, 200},
		{"GET /debug/pprof/cmdline", admin.ID, 200},
		{"GET /metrics", audit.Anonymous, 401},
	} {
		if status, ok := got[seen{want.route, want.principal}]; !ok || status != want.status {
			t.Errorf("no audit entry of %s by %s with status %v; entries: %v", want.route, want.principal, want.status, got)
		}
	}
}

// TestKeysCLIAudited: `skyjoin keys` run on the registry itself writes an
// audit entry for each action, with the local user and host as the
// principal, the key id and the result, failures included.
func TestKeysCLIAudited(t *testing.T) {
	dir := t.TempDir()
	var stderrs strings.Builder // every run's
	run := func(args ...string) (keyOut, []map[string]any, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(append([]string{"keys"}, args...), "--data-dir", dir, "--json", "--log-format", "json")
		err := Main(context.Background(), args, &out, &errOut)
		stderrs.Write(errOut.Bytes())
		var k keyOut
		if err == nil {
			json.Unmarshal(out.Bytes(), &k)
		}
		var entries []map[string]any
		for line := range strings.Lines(errOut.String()) {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil && e["message"] == "audit" && e["audit"] == true {
				entries = append(entries, e)
			}
		}
		if len(entries) != 1 {
			t.Fatalf("keys %v: %d audit entries, want 1; stderr:\n%s", args, len(entries), errOut.String())
		}
		return k, entries, err
	}
	me := audit.LocalPrincipal()
	if !strings.HasPrefix(me.ID, "cli:") || !strings.Contains(me.ID, "@") || me.Kind != audit.KindCLI {
		t.Fatalf("local principal %+v, want cli:USER@HOST", me)
	}
	check := func(e map[string]any, action, id, result string) {
		t.Helper()
		params, _ := e["params"].(map[string]any)
		if e["principal"] != me.ID || e["principal_kind"] != audit.KindCLI || e["action"] != action || e["result"] != result ||
			(id != "" && params["id"] != id) || e["start"] == nil {
			t.Errorf("audit entry %v, want %s of %q by %s: %s", e, action, id, me.ID, result)
		}
	}
	k, es, err := run("create", "--scope", "read,stream", "--name", "wall")
	if err != nil || k.ID == "" {
		t.Fatalf("create: %v %+v", err, k)
	}
	check(es[0], "keys.create", k.ID, audit.ResultOK)
	if params, _ := es[0]["params"].(map[string]any); params["scopes"] != "read,stream" {
		t.Errorf("create entry's scopes: %v", es[0]["params"])
	}
	rotated, es, err := run("rotate", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	check(es[0], "keys.rotate", k.ID, audit.ResultOK)
	_, es, err = run("list")
	if err != nil {
		t.Fatal(err)
	}
	check(es[0], "keys.list", "", audit.ResultOK)
	_, es, err = run("revoke", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	check(es[0], "keys.revoke", k.ID, audit.ResultOK)
	_, es, err = run("revoke", "key_doesnotexist00")
	if err == nil {
		t.Fatal("revoke of no key succeeded")
	}
	check(es[0], "keys.revoke", "key_doesnotexist00", audit.ResultError)
	if es[0]["error"] == nil {
		t.Errorf("a failed action's entry has no error: %v", es[0])
	}
	// No secret in an entry.
	for _, tok := range []string{k.Token, rotated.Token} {
		if _, secret, _ := auth.ParseToken(tok); secret == "" || strings.Contains(stderrs.String(), secret) {
			t.Errorf("a key's secret is on stderr, or the token has none")
		}
	}
}
