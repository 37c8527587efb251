// Package api holds skyjoin's one route table: every HTTP route of every
// stage, with the stage that serves it. internal/app mounts exactly these
// routes (and refuses to start if a stage mounts another or misses one),
// prints the running process's routes in its banner from it, and
// internal/serve builds /openapi.json from it; the authorization policy
// hangs on it too.
package api

import "strings"

// Stages that serve routes. Probes and the key routes belong to every
// process (Any); metrics and debug routes too, but on its admin listener
// (AdminListener), bound to loopback, never on the public port.
const (
	Any           = ""
	AdminListener = "admin-listener"
	Ingest        = "ingest"
	Enrich        = "enrich"
	Serve         = "serve"
	Deliver       = "deliver"
)

// Scopes a credential may hold; a route needs one of them (Route.Scope).
// Admin implies every other scope.
const (
	ScopePublic   = "public"   // no credential: the health probes
	ScopeIngest   = "ingest"   // send events
	ScopeRead     = "read"     // read records, stats, the schema and the API description
	ScopeStream   = "stream"   // the live stream (and the dashboard, which reads it)
	ScopeWebhooks = "webhooks" // manage webhooks and their failures
	ScopePush     = "push"     // hand the worker broker messages (a Pub/Sub push subscription's service account)
	ScopeAdmin    = "admin"    // keys, dead letters, erasure, metrics, debug
)

// Scopes are the scopes a key can be given, in order.
var Scopes = []string{ScopeIngest, ScopeRead, ScopeStream, ScopeWebhooks, ScopePush, ScopeAdmin}

// Route is one route: a Go ServeMux pattern ("METHOD /path") and what it is.
type Route struct {
	Stage   string // the stage that serves it; Any: every process
	Pattern string // as given to http.ServeMux: "GET /v1/events/{event_id...}"
	Summary string
	// Doc marks a route of the public API, described in /openapi.json.
	// Debug routes and the dashboard's files are not.
	Doc bool
	// Banner marks a route the start-up banner lists.
	Banner bool
	// Scope is what a caller must hold (ScopePublic: nothing). It is the
	// authorization policy: one table for every route.
	Scope string
}

// Method and Path split the pattern.
func (r Route) Method() string { m, _, _ := strings.Cut(r.Pattern, " "); return m }

// Path is the pattern's path, with "{name...}" wildcards as "{name}", as
// OpenAPI writes them.
func (r Route) Path() string {
	_, p, _ := strings.Cut(r.Pattern, " ")
	return strings.ReplaceAll(p, "...}", "}")
}

// Routes is the route table.
var Routes = []Route{
	{Ingest, "POST /v1/events", "accept events (a JSON object, array or NDJSON); 202 once the broker has them", true, true, ScopeIngest},
	{Ingest, "POST /v1/batch", "Segment-compatible: a batch of track, identify, page, screen, group and alias messages; 200 once the broker has them", true, true, ScopeIngest},
	{Ingest, "POST /v1/track", "Segment-compatible: one track message", true, false, ScopeIngest},
	{Ingest, "POST /v1/identify", "Segment-compatible: one identify message", true, false, ScopeIngest},
	{Ingest, "POST /v1/page", "Segment-compatible: one page message", true, false, ScopeIngest},
	{Ingest, "POST /v1/screen", "Segment-compatible: one screen message", true, false, ScopeIngest},
	{Ingest, "POST /v1/group", "Segment-compatible: one group message", true, false, ScopeIngest},
	{Ingest, "POST /v1/alias", "Segment-compatible: one alias message", true, false, ScopeIngest},
	{Ingest, "GET /v1/schema", "the JSON Schema of an event", true, false, ScopeRead},
	{Ingest, "GET /v1/deadletters", "list the events the worker could not process", true, false, ScopeAdmin},
	{Ingest, "POST /v1/deadletters/replay", "publish dead letters to the pipeline again", true, false, ScopeAdmin},
	{Ingest, "DELETE /v1/deadletters/{id}", "discard a dead letter", true, false, ScopeAdmin},

	{Enrich, "POST /v1/push/events", "Pub/Sub push of the events subscription: one message, processed by the worker; 204 once stored, 503 to be delivered again", true, false, ScopePush},

	{Serve, "GET /v1/events", "list stored records (filters, order, cursor)", true, true, ScopeRead},
	{Serve, "GET /v1/events/{event_id...}", "one stored record by event id", true, true, ScopeRead},
	{Serve, "GET /v1/users/{id}/latest", "a user's latest record", true, true, ScopeRead},
	{Serve, "DELETE /v1/users/{id}", "erase a user: their records, dead letters and webhook failures", true, false, ScopeAdmin},
	{Serve, "GET /v1/stats", "aggregates by country, city or time bucket", true, true, ScopeRead},
	{Serve, "GET /v1/stream", "Server-Sent Events of records as they are stored", true, true, ScopeStream},
	{Serve, "GET /openapi.json", "this API in OpenAPI 3.1", true, false, ScopeRead},
	{Serve, "POST /v1/session", "a browser session (an HttpOnly cookie, read and stream at most) for the API key in Authorization", true, false, ScopeRead},
	{Serve, "GET /{$}", "the dashboard", false, false, ScopePublic},
	{Serve, "GET /assets/", "the dashboard's files", false, false, ScopePublic},

	{Deliver, "POST /v1/webhooks", "register a webhook", true, true, ScopeWebhooks},
	{Deliver, "GET /v1/webhooks", "list webhooks", true, false, ScopeWebhooks},
	{Deliver, "GET /v1/webhooks/{id}", "one webhook and its counters", true, false, ScopeWebhooks},
	{Deliver, "DELETE /v1/webhooks/{id}", "remove a webhook and its failures", true, false, ScopeWebhooks},
	{Deliver, "GET /v1/webhooks/{id}/failures", "batches that could not be delivered", true, false, ScopeWebhooks},
	{Deliver, "POST /v1/webhooks/{id}/failures/replay", "deliver failed batches again", true, false, ScopeWebhooks},

	{Any, "GET /healthz", "liveness", true, false, ScopePublic},
	{Any, "GET /readyz", "readiness: the process's checks; 503 while draining", true, true, ScopePublic},
	{Any, "POST /v1/keys", "create an API key; its token is in this answer only", true, false, ScopeAdmin},
	{Any, "GET /v1/keys", "list the API keys (never a secret)", true, false, ScopeAdmin},
	{Any, "POST /v1/keys/{id}/rotate", "give an API key a new secret, the old one kept for an optional grace", true, false, ScopeAdmin},
	{Any, "DELETE /v1/keys/{id}", "revoke an API key: every process refuses it within seconds", true, false, ScopeAdmin},

	{AdminListener, "GET /metrics", "Prometheus metrics", false, true, ScopeAdmin},
	{AdminListener, "GET /debug/pipeline", "counters, memory and CPU of this process", false, true, ScopeAdmin},
	{AdminListener, "GET /debug/pprof/", "Go profiles", false, true, ScopeAdmin},
	{AdminListener, "GET /debug/pprof/cmdline", "Go profiles", false, false, ScopeAdmin},
	{AdminListener, "GET /debug/pprof/profile", "Go profiles", false, false, ScopeAdmin},
	{AdminListener, "GET /debug/pprof/symbol", "Go profiles", false, false, ScopeAdmin},
	{AdminListener, "GET /debug/pprof/trace", "Go profiles", false, false, ScopeAdmin},
}

// Request bodies. A route that changes state (POST, DELETE) and is sent a
// body takes it as JSON (MediaJSON), with no Content-Encoding, unless
// Bodies lists it; anything else is refused with 415 before the route runs.
const MediaJSON = "application/json"

// Body is what a route takes as a request body.
type Body struct {
	MediaTypes []string // lower case, without parameters
	Gzip       bool     // Content-Encoding: gzip is taken
}

// Bodies lists the routes that take more than JSON.
var Bodies = map[string]Body{
	// JSON, and NDJSON under its several names (event.MediaTypes).
	"POST /v1/events": {MediaTypes: []string{MediaJSON, "application/x-ndjson", "application/ndjson", "application/jsonl",
		"application/x-jsonlines", "application/jsonlines"}, Gzip: true},
}

// segmentBody is what the Segment-compatible routes take: JSON, also as
// text/plain (browser trackers send it so, to avoid a CORS preflight), and
// gzip.
var segmentBody = Body{MediaTypes: []string{MediaJSON, "text/plain"}, Gzip: true}

// WriteKeyRoutes are the routes that also take a credential as HTTP Basic
// auth, the way Segment's trackers send their writeKey: the username is the
// API key, the password empty.
var WriteKeyRoutes = map[string]bool{}

func init() {
	for _, p := range []string{"POST /v1/batch", "POST /v1/track", "POST /v1/identify", "POST /v1/page", "POST /v1/screen", "POST /v1/group", "POST /v1/alias"} {
		Bodies[p] = segmentBody
		WriteKeyRoutes[p] = true
	}
}

// BodyOf returns what the route of pattern takes as a request body.
func BodyOf(pattern string) Body {
	if b, ok := Bodies[pattern]; ok {
		return b
	}
	return Body{MediaTypes: []string{MediaJSON}}
}

// OnAdminListener reports whether the route is served on a process's
// admin listener (loopback by default) rather than its public port.
func (r Route) OnAdminListener() bool { return r.Stage == AdminListener }

// Of returns the routes of the given stages, and those of every process
// (its admin listener's included).
func Of(stages ...string) []Route {
	var out []Route
	for _, r := range Routes {
		if r.Stage == Any || r.Stage == AdminListener || contains(stages, r.Stage) {
			out = append(out, r)
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
