package secret

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// fakeSM is an in-process Secret Manager: AccessSecretVersion over gRPC.
type fakeSM struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer
	mu       sync.Mutex
	versions map[string][]byte // version resource name -> payload
	badSum   map[string]bool   // answer a wrong checksum
	calls    []string
}

func (f *fakeSM) AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req.GetName())
	data, ok := f.versions[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", req.GetName())
	}
	sum := int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	if f.badSum[req.GetName()] {
		sum++
	}
	return &secretmanagerpb.AccessSecretVersionResponse{Name: req.GetName(),
		Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: &sum}}, nil
}

func startFakeSM(t *testing.T, f *fakeSM) []option.ClientOption {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	secretmanagerpb.RegisterSecretManagerServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return []option.ClientOption{
		option.WithEndpoint(lis.Addr().String()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

func TestResolve(t *testing.T) {
	fake := &fakeSM{
		versions: map[string][]byte{
			"projects/p1/secrets/weather-key/versions/3":      []byte("from-sm-v3"),
			"projects/p1/secrets/weather-key/versions/latest": []byte("from-sm-latest\n"),
			"projects/p1/secrets/corrupt/versions/1":          []byte("x"),
		},
		badSum: map[string]bool{"projects/p1/secrets/corrupt/versions/1": true},
	}
	r := &Resolver{
		ClientOptions: startFakeSM(t, fake),
		LookupEnv: func(k string) (string, bool) {
			v, ok := map[string]string{"WEATHER_KEY": "from-env", "EMPTY": ""}[k]
			return v, ok
		},
	}
	defer r.Close()
	for _, tc := range []struct {
		ref, want, err string
	}{
		{ref: "", want: ""},
		{ref: "plain-literal-key", want: "plain-literal-key"},
		{ref: "env://WEATHER_KEY", want: "from-env"},
		{ref: "env://EMPTY", want: ""},
		{ref: "env://MISSING", err: "env://MISSING: the environment variable is not set"},
		{ref: "sm://projects/p1/secrets/weather-key/versions/3", want: "from-sm-v3"},
		{ref: "sm://projects/p1/secrets/weather-key/versions/latest", want: "from-sm-latest"},
		{ref: "sm://projects/p1/secrets/weather-key", want: "from-sm-latest"},
		{ref: "sm://projects/p1/secrets/nope/versions/1", err: "NotFound"},
		{ref: "sm://projects/p1/secrets/corrupt/versions/1", err: "checksum mismatch"},
		{ref: "sm://p1/weather-key", err: "want sm://projects/PROJECT/secrets/SECRET/versions/VERSION"},
		{ref: "sm://projects//secrets/s/versions/1", err: `bad project ""`},
		{ref: "sm://projects/p/secrets/s/versions/", err: `bad version ""`},
		{ref: "sm://projects/p/secrets/s/versions/1/extra", err: "want sm://"},
		{ref: "env://", err: "want env://VAR"},
		{ref: "env://NOT-A-NAME", err: "want env://VAR"},
		{ref: "vault://kv/key", err: `unknown scheme "vault://"`},
	} {
		got, err := r.Resolve(context.Background(), tc.ref)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Resolve(%q) = %q, %v; want error with %q", tc.ref, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if len(fake.calls) == 0 {
		t.Fatal("the fake Secret Manager was never called")
	}
}

func TestValueFlagNeverPrintsTheSecret(t *testing.T) {
	const key = "s3cr3t-literal"
	var v Value
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.Var(&v, "weather-api-key", "API key: a literal, env://VAR or sm://...")
	if err := fs.Parse([]string{"--weather-api-key", key}); err != nil {
		t.Fatal(err)
	}
	fs.PrintDefaults()
	if !v.IsSet() || !v.Resolved() || v.Reveal() != key {
		t.Fatalf("IsSet %v Resolved %v Reveal %q", v.IsSet(), v.Resolved(), v.Reveal())
	}
	if v.String() != "(set)" || v.Ref().String() != "literal" {
		t.Errorf("String %q Ref %q", v.String(), v.Ref())
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("config", "key", v, "ptr", &v)
	type config struct {
		Key    Value
		hidden Value
	}
	cfg := config{Key: v, hidden: v}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dumps := map[string]string{
		"usage": usage.String(),
		"log":   logs.String(),
		"json":  string(js),
		"%v":    fmt.Sprintf("%v", cfg),
		"%+v":   fmt.Sprintf("%+v", cfg),
		"%#v":   fmt.Sprintf("%#v", cfg),
		"%s":    fmt.Sprintf("%s", v),
		"flag":  fs.Lookup("weather-api-key").Value.String(),
	}
	for name, out := range dumps {
		if strings.Contains(out, key) {
			t.Errorf("%s shows the secret: %s", name, out)
		}
	}
	if !strings.Contains(logs.String(), `"key":"[REDACTED]"`) || !strings.Contains(logs.String(), `"ptr":"[REDACTED]"`) {
		t.Errorf("log not redacted: %s", logs.String())
	}
	if !strings.Contains(string(js), `"Key":"[REDACTED]"`) {
		t.Errorf("json: %s", js)
	}

	// Unset: nothing shown, not even a default.
	var empty Value
	if empty.String() != "" || empty.IsSet() || empty.Reveal() != "" || empty.LogValue().String() != "" {
		t.Errorf("empty value: %q", empty.String())
	}
	if strings.Contains(usage.String(), "default") {
		t.Errorf("usage shows a default: %s", usage.String())
	}
}

func TestValueResolvesReferences(t *testing.T) {
	fake := &fakeSM{versions: map[string][]byte{"projects/p/secrets/hook/versions/latest": []byte("sm-secret")}}
	r := &Resolver{ClientOptions: startFakeSM(t, fake), LookupEnv: func(k string) (string, bool) { return "env-secret", k == "KEY" }}
	defer r.Close()

	for _, tc := range []struct{ ref, desc, want string }{
		{"sm://projects/p/secrets/hook", "sm://projects/p/secrets/hook/versions/latest", "sm-secret"},
		{"env://KEY", "env://KEY", "env-secret"},
	} {
		ref, want := tc.ref, tc.want
		v, err := NewValue(ref)
		if err != nil {
			t.Fatal(err)
		}
		if v.Resolved() || v.Reveal() != "" {
			t.Fatalf("%s: resolved before Resolve", ref)
		}
		if v.Ref().String() != tc.desc {
			t.Errorf("Ref %q, want %q", v.Ref(), tc.desc)
		}
		cp := v // copies share the state
		if err := cp.Resolve(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if v.Reveal() != want || v.String() != "(set)" {
			t.Errorf("%s: Reveal %q String %q", ref, v.Reveal(), v.String())
		}
	}
	v, _ := NewValue("env://UNSET")
	if err := v.Resolve(context.Background(), r); err == nil || !strings.Contains(err.Error(), "env://UNSET") {
		t.Errorf("unset variable: %v", err)
	}
	var bad Value
	if err := bad.Set("sm://projects/p"); err == nil {
		t.Error("bad reference accepted by Set")
	}
	if err := bad.Set("ftp://host/s3cr3t"); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("unknown scheme: %v", err)
	}
}
