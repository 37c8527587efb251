package app

import (
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/platform/iam"
)

func TestCloudGrants(t *testing.T) {
	env := map[string]string{
		"SKYJOIN_BROKER":    "pubsub://p",
		"SKYJOIN_STORE":     "bigquery://p/skyjoin",
		"SKYJOIN_REGISTRY":  "firestore://p",
		"SKYJOIN_TELEMETRY": "gcp",
		"SKYJOIN_PII_KEY":   "sm://projects/p/secrets/skyjoin-pii-key/versions/latest",
	}
	g := func(role, on string) iam.Grant { return iam.Grant{Role: role, On: on} }
	common := []iam.Grant{
		g("roles/datastore.user", "project"),
		g("roles/telemetry.metricsWriter", "project"),
		g("roles/telemetry.tracesWriter", "project"),
	}
	for _, tc := range []struct {
		name string
		args []string
		want []iam.Grant
	}{
		{"ingest", []string{"ingest"}, []iam.Grant{g("roles/pubsub.publisher", "topic/events"),
			g("roles/pubsub.subscriber", "subscription/deadletter-browse")}},
		{"collect", []string{"collect"}, []iam.Grant{g("roles/pubsub.publisher", "topic/events")}},
		{"enrich push", []string{"enrich", "--serve=false", "--enrich-pull=false"}, []iam.Grant{
			g("roles/pubsub.publisher", "topic/records"), g("roles/pubsub.publisher", "topic/deadletter"),
			g("roles/bigquery.dataEditor", "dataset"),
			g("roles/secretmanager.secretAccessor", "secret/skyjoin-pii-key"),
		}},
		{"enrich pull", []string{"enrich", "--serve=false"}, []iam.Grant{
			g("roles/pubsub.publisher", "topic/records"), g("roles/pubsub.publisher", "topic/deadletter"),
			g("roles/pubsub.subscriber", "subscription/events-enrich"),
			g("roles/bigquery.dataEditor", "dataset"),
			g("roles/secretmanager.secretAccessor", "secret/skyjoin-pii-key"),
		}},
		{"serve", []string{"serve"}, []iam.Grant{
			g("roles/pubsub.subscriber", "topic/records"), g("custom/skyjoinEphemeralSubscriptions", "project"),
			g("roles/pubsub.subscriber", "subscription/deadletter-browse"),
			g("roles/bigquery.dataViewer", "dataset"), g("roles/bigquery.dataEditor", "dataset"),
			g("roles/bigquery.jobUser", "project"),
			g("roles/secretmanager.secretAccessor", "secret/skyjoin-pii-key"),
		}},
		{"deliver", []string{"deliver", "--webhook-secret-key=sm://projects/p/secrets/hooks"}, []iam.Grant{
			g("roles/pubsub.subscriber", "subscription/records-deliver"),
			g("roles/secretmanager.secretAccessor", "secret/hooks"),
		}},
		{"create=true", []string{"collect", "--broker=pubsub://p?create=true"}, []iam.Grant{g("roles/pubsub.editor", "project")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CloudGrants(tc.args, env)
			if err != nil {
				t.Fatal(err)
			}
			if d := iam.Diff(append(tc.want, common...), got); d != "" {
				t.Errorf("CloudGrants(%q):%s", tc.args, d)
			}
		})
	}
	// Locally (no Google backend, no export) a stage needs nothing.
	if got, err := CloudGrants([]string{"up"}, nil); err != nil || len(got) != 0 {
		t.Errorf("CloudGrants(up) = %v, %v; want none", got, err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "no command"},
		{[]string{"keys"}, nil, `"keys" is not a stage command`},
		{[]string{"ingest", "--store=x"}, nil, "flag provided but not defined: -store"},
		{[]string{"ingest"}, map[string]string{"SKYJOIN_TELEMETRY": "carrier-pigeon"}, "telemetry must be"},
		{[]string{"serve"}, map[string]string{"SKYJOIN_PII_KEY": "ftp://x"}, "SKYJOIN_PII_KEY"},
	} {
		_, err := CloudGrants(tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CloudGrants(%q, %v) = %v, want an error with %q", tc.args, tc.env, err, tc.want)
		}
	}
}
