// Package iam names the Identity and Access Management grants skyjoin's
// Google Cloud backends need. Each backend declares, next to the code that
// calls Google, the roles its calls need (pubsub.Needs.Grants,
// bigquery.WriterGrants, ...); internal/app adds up what each stage uses,
// and the Terraform under deploy/terraform grants each Cloud Run service
// exactly that (checked by go test ./deploy/terraform).
package iam

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Grant is a role on a resource.
type Grant struct {
	// Role is a predefined role ("roles/pubsub.publisher") or a custom
	// role of the project, CustomPrefix + its id.
	Role string
	// On is what the role is granted on, named the same way in Go and in
	// the Terraform: "project", "dataset" (the store's BigQuery dataset),
	// "topic/TOPIC" and "subscription/TOPIC-NAME" (Pub/Sub ids without the
	// deployment's prefix), "secret/SECRET_ID" (Secret Manager).
	On string
}

// CustomPrefix starts the Role of a custom role of the project:
// "custom/ROLE_ID" is projects/PROJECT/roles/ROLE_ID.
const CustomPrefix = "custom/"

// Resources.
const (
	Project = "project"
	Dataset = "dataset"
)

// Topic is the resource of a Pub/Sub topic, by its id without the prefix.
func Topic(id string) string { return "topic/" + id }

// Subscription is the resource of a Pub/Sub subscription, by its id
// without the prefix.
func Subscription(id string) string { return "subscription/" + id }

// Secret is the resource of a Secret Manager secret, by its id.
func Secret(id string) string { return "secret/" + id }

func (g Grant) String() string { return g.Role + " on " + g.On }

// Compare orders grants by resource, then role.
func Compare(a, b Grant) int {
	return cmp.Or(strings.Compare(a.On, b.On), strings.Compare(a.Role, b.Role))
}

// Union returns the grants of every list, each once, sorted.
func Union(lists ...[]Grant) []Grant {
	var all []Grant
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.SortFunc(all, Compare)
	return slices.Compact(all)
}

// Diff describes how got differs from want ("" when they hold the same
// grants): what is missing and what is more than needed.
func Diff(want, got []Grant) string {
	want, got = Union(want), Union(got)
	var b strings.Builder
	for _, g := range want {
		if !slices.Contains(got, g) {
			fmt.Fprintf(&b, "\n  missing: %s", g)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "\n  not needed: %s", g)
		}
	}
	return b.String()
}
