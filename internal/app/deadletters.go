package app

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/deadletter"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
)

// The dead-letter commands talk to the admin API of a running skyjoin (the
// process that owns the broker), so they work the same against `skyjoin up`
// and against a separate `skyjoin broker` + stages.

// apiFlags are the flags of a command that calls a running skyjoin's API:
// its URL and, where auth is on, an API key.
type apiFlags struct {
	base string
	key  secret.Value
}

func (a *apiFlags) register(fs interface {
	StringVar(p *string, name, value, usage string)
	Var(v flag.Value, name, usage string)
}, scope string) {
	fs.StringVar(&a.base, "api", "http://127.0.0.1:8080", "base URL of the running skyjoin API")
	fs.Var(&a.key, "key", "where auth is on: an API key of scope "+scope+", as a `SECRET`: env://VAR, sm://..., or the key itself (prefer SKYJOIN_KEY; a flag shows in ps)")
}

// caller resolves the key and checks that it goes over https or to
// loopback only.
func (a *apiFlags) caller(ctx context.Context) (apiCaller, error) {
	if err := resolveSecrets(ctx, a.key); err != nil {
		return apiCaller{}, err
	}
	base := strings.TrimRight(a.base, "/")
	if err := keyTarget("--api", base, a.key.Reveal()); err != nil {
		return apiCaller{}, err
	}
	return apiCaller{base: base, key: a.key.Reveal()}, nil
}

func runDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deadletters", stderr)
	var api apiFlags
	api.register(fs, "read")
	stage := fs.String("stage", "", "only dead letters of this stage (decode, validate, store, enrich, segment)")
	reason := fs.String("reason", "", "only dead letters whose reason contains this text")
	since := fs.String("since", "", "only dead letters that failed at or after this RFC 3339 time")
	limit := fs.Int("limit", 100, "at most this many")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"stage": *stage, "reason": *reason, "since": *since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("limit", fmt.Sprint(*limit))
	c, err := api.caller(ctx)
	if err != nil {
		return err
	}
	var lr deadletter.ListResponse
	if err := c.call(ctx, "GET", "/v1/deadletters?"+q.Encode(), nil, &lr); err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.MarshalIndent(lr, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	if lr.Count == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tFAILED AT\tSTAGE\tATTEMPTS\tREASON\tDATA")
	for _, e := range lr.DeadLetters {
		data := string(e.Data)
		if data == "" {
			data = e.Text
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.FailedAt.Format(time.RFC3339), e.Stage, e.Attempts, trunc(e.Reason, 60), trunc(data, 60))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d dead letters; replay with: skyjoin replay [--id ID ...] [--stage S] [--reason TEXT] [--all]\n", lr.Count)
	return nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay", stderr)
	var api apiFlags
	api.register(fs, "admin")
	var ids stringList
	fs.Var(&ids, "id", "replay this dead letter (repeatable)")
	stage := fs.String("stage", "", "replay the dead letters of this stage")
	reason := fs.String("reason", "", "replay the dead letters whose reason contains this text")
	since := fs.String("since", "", "replay the dead letters that failed at or after this RFC 3339 time")
	all := fs.Bool("all", false, "replay every dead letter")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	req := deadletter.ReplayRequest{IDs: ids, Stage: *stage, Reason: *reason, Since: *since}
	if !*all && len(ids) == 0 && *stage == "" && *reason == "" && *since == "" {
		return fmt.Errorf("%w: say what to replay: --id, --stage, --reason, --since, or --all", errUsage)
	}
	c, err := api.caller(ctx)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(req)
	var rr deadletter.ReplayResponse
	if err := c.call(ctx, "POST", "/v1/deadletters/replay", body, &rr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replayed %d dead letters\n", rr.Replayed)
	if rr.Kept > 0 {
		fmt.Fprintf(stdout, "kept %d that cannot be replayed (Segment messages that could not be mapped: fix the sender and resend them; discard them with DELETE /v1/deadletters/ID)\n", rr.Kept)
	}
	return nil
}

// apiCaller calls a running skyjoin's API, with an API key if it has one.
type apiCaller struct{ base, key string }

// call calls path and decodes a 2xx answer into out; an error answer
// becomes an error carrying its message.
func (c apiCaller) call(ctx context.Context, method, path string, body []byte, out any) error {
	u := c.base + path
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is skyjoin running? set --api)", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var eb platform.ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
			return fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, eb.Error.Message)
		}
		return fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, u, err)
		}
	}
	return nil
}
