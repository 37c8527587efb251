package app

import (
	"bytes"
	"context"
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
)

// The dead-letter commands talk to the admin API of a running skyjoin (the
// process that owns the broker), so they work the same against `skyjoin up`
// and against a separate `skyjoin broker` + stages.

func runDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deadletters", stderr)
	api := fs.String("api", "http://127.0.0.1:8080", "base URL of the running skyjoin API")
	stage := fs.String("stage", "", "only dead letters of this stage (decode, validate, store, enrich)")
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
	var lr deadletter.ListResponse
	if err := callAPI(ctx, "GET", strings.TrimRight(*api, "/")+"/v1/deadletters?"+q.Encode(), nil, &lr); err != nil {
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
	api := fs.String("api", "http://127.0.0.1:8080", "base URL of the running skyjoin API")
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
	body, _ := json.Marshal(req)
	var rr deadletter.ReplayResponse
	if err := callAPI(ctx, "POST", strings.TrimRight(*api, "/")+"/v1/deadletters/replay", body, &rr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replayed %d dead letters\n", rr.Replayed)
	return nil
}

// callAPI calls the skyjoin API and decodes a 2xx answer into out; an error
// answer becomes an error carrying its message.
func callAPI(ctx context.Context, method, u string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
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
