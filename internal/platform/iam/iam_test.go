package iam

import "testing"

func TestUnionAndDiff(t *testing.T) {
	pub := Grant{Role: "roles/pubsub.publisher", On: Topic("events")}
	sub := Grant{Role: "roles/pubsub.subscriber", On: Subscription("events-enrich")}
	job := Grant{Role: "roles/bigquery.jobUser", On: Project}
	got := Union([]Grant{sub, pub}, []Grant{pub, job})
	want := []Grant{job, sub, pub} // by resource: project, subscription/, topic/
	if len(got) != len(want) {
		t.Fatalf("Union = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Union = %v, want %v", got, want)
		}
	}
	if d := Diff(want, []Grant{pub, job, sub, job}); d != "" {
		t.Errorf("Diff of the same grants = %q", d)
	}
	d := Diff([]Grant{pub, job}, []Grant{pub, sub})
	if d != "\n  missing: roles/bigquery.jobUser on project\n  not needed: roles/pubsub.subscriber on subscription/events-enrich" {
		t.Errorf("Diff = %q", d)
	}
}
