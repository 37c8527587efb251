// Package terraform holds the tests of skyjoin's Terraform (the modules and
// roots in this directory) against the code: least privilege, and the
// metrics of the monitoring. They parse the HCL; validating it against
// the Google providers' schemas is `tofu validate` (docs/deploy.md).
package terraform

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/skyjoin/skyjoin/internal/app"
	"github.com/skyjoin/skyjoin/internal/broker/pubsub"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/iam"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
)

// module is the parsed .tf files of one directory.
type module struct {
	dir    string
	files  map[string]*hclsyntax.Body
	locals map[string]hcl.Expression
}

func parseModule(t *testing.T, dir string) *module {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no .tf files in %s (%v)", dir, err)
	}
	p := hclparse.NewParser()
	m := &module{dir: dir, files: map[string]*hclsyntax.Body{}, locals: map[string]hcl.Expression{}}
	for _, path := range paths {
		f, diags := p.ParseHCLFile(path)
		if diags.HasErrors() {
			t.Fatalf("parse %s: %s", path, diags.Error())
		}
		body := f.Body.(*hclsyntax.Body)
		m.files[path] = body
		for _, b := range body.Blocks {
			if b.Type != "locals" {
				continue
			}
			for name, a := range b.Body.Attributes {
				if _, dup := m.locals[name]; dup {
					t.Fatalf("%s: local %s defined twice", dir, name)
				}
				m.locals[name] = a.Expr
			}
		}
	}
	return m
}

// local evaluates a local value of m in ctx (nil: it must be a literal).
func (m *module) local(t *testing.T, name string, ctx *hcl.EvalContext) cty.Value {
	t.Helper()
	expr, ok := m.locals[name]
	if !ok {
		t.Fatalf("%s has no local %s", m.dir, name)
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("%s: local.%s: %s", m.dir, name, diags.Error())
	}
	return v
}

// resources are the resource blocks of m, by "TYPE.NAME".
func (m *module) resources() map[string]*hclsyntax.Block {
	rs := map[string]*hclsyntax.Block{}
	for _, body := range m.files {
		for _, b := range body.Blocks {
			if b.Type == "resource" && len(b.Labels) == 2 {
				rs[b.Labels[0]+"."+b.Labels[1]] = b
			}
		}
	}
	return rs
}

func strs(t *testing.T, v cty.Value) []string {
	t.Helper()
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		out = append(out, e.AsString())
	}
	return out
}

func strMap(t *testing.T, v cty.Value) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, e := range v.AsValueMap() {
		if e.Type() != cty.String {
			t.Fatalf("%s: want a string, got %s", k, e.Type().FriendlyName())
		}
		out[k] = e.AsString()
	}
	return out
}

// testProject is the project the tests deploy to, on paper.
const testProject = "skyjoin-dev"

// skyjoinModule is the module that grants each Cloud Run service account
// its roles (iam.tf).
const skyjoinModule = "modules/skyjoin"

// TestServiceAccountsHoldExactlyWhatTheCodeNeeds checks least privilege
// against the code: for each service, the stage command and flags it runs
// (local.service_args), with the environment every service gets
// (local.common_env) and its secret flags as sm:// references
// (local.service_secrets), go through app.CloudGrants, which adds up the
// roles each Google backend declares for what the stage uses; the
// service's account must hold exactly those: local.service_grants plus
// secretAccessor on each of its secrets.
func TestServiceAccountsHoldExactlyWhatTheCodeNeeds(t *testing.T) {
	m := parseModule(t, skyjoinModule)
	args := m.local(t, "service_args", nil)
	secrets := m.local(t, "service_secrets", nil)
	grants := m.local(t, "service_grants", nil)
	env := strMap(t, m.local(t, "common_env", evalContext(t)))

	rows := slices.Sorted(maps.Keys(args.AsValueMap()))
	for _, v := range []cty.Value{secrets, grants} {
		if got := slices.Sorted(maps.Keys(v.AsValueMap())); !slices.Equal(got, rows) {
			t.Fatalf("service_args has rows %v, but service_secrets or service_grants has %v", rows, got)
		}
	}
	for _, row := range rows {
		t.Run(row, func(t *testing.T) {
			senv := maps.Clone(env)
			var tf []iam.Grant
			for flag, id := range strMap(t, secrets.GetAttr(row)) {
				senv[platform.EnvName(flag)] = "sm://projects/" + testProject + "/secrets/" + id + "/versions/latest"
				tf = append(tf, iam.Grant{Role: "roles/secretmanager.secretAccessor", On: iam.Secret(id)})
			}
			for it := grants.GetAttr(row).ElementIterator(); it.Next(); {
				_, g := it.Element()
				tf = append(tf, iam.Grant{Role: g.GetAttr("role").AsString(), On: g.GetAttr("on").AsString()})
			}
			if len(iam.Union(tf)) != len(tf) {
				t.Errorf("service_grants.%s lists a grant twice", row)
			}
			want, err := app.CloudGrants(strs(t, args.GetAttr(row)), senv)
			if err != nil {
				t.Fatal(err)
			}
			if d := iam.Diff(want, tf); d != "" {
				t.Errorf("the account of %s (%s) does not hold exactly what its stage needs:%s\n(the code's side: app.CloudGrants and the Grants of each backend)",
					row, strings.Join(strs(t, args.GetAttr(row)), " "), d)
			}
		})
	}

	// The custom roles are the ones the code declares.
	custom := m.local(t, "custom_roles", nil)
	wantCustom := map[string][]string{strings.TrimPrefix(pubsub.EphemeralRole, iam.CustomPrefix): pubsub.EphemeralPermissions}
	gotCustom := map[string][]string{}
	for name, r := range custom.AsValueMap() {
		gotCustom[name] = strs(t, r.GetAttr("permissions"))
	}
	if !maps.EqualFunc(gotCustom, wantCustom, func(a, b []string) bool {
		return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
	}) {
		t.Errorf("custom_roles = %v, want %v (pubsub.EphemeralRole, pubsub.EphemeralPermissions)", gotCustom, wantCustom)
	}

	// Each worker mode deploys rows that exist.
	for _, mode := range []string{"push", "pull", "dataflow"} {
		ctx := evalContext(t)
		ctx.Variables["var"] = cty.ObjectVal(map[string]cty.Value{"worker_mode": cty.StringVal(mode)})
		ctx.Functions = map[string]function.Function{"merge": stdlib.MergeFunc}
		for stage, row := range strMap(t, m.local(t, "deployed", ctx)) {
			if !slices.Contains(rows, row) {
				t.Errorf("worker_mode %s: service %s uses row %q, which service_args lacks", mode, stage, row)
			}
		}
	}
}

// TestNoOtherGrantsToServiceAccounts checks that the tables above are all
// the services' accounts hold: the only IAM resources anywhere in the
// Terraform whose member is a service's account are the five of iam.tf,
// each one for_each over local.grants_on; none is a binding or a policy,
// which would replace grants made elsewhere.
func TestNoOtherGrantsToServiceAccounts(t *testing.T) {
	want := []string{
		"google_bigquery_dataset_iam_member.service",
		"google_project_iam_member.service",
		"google_pubsub_subscription_iam_member.service",
		"google_pubsub_topic_iam_member.service",
		"google_secret_manager_secret_iam_member.service",
	}
	var got []string
	dirs, _ := filepath.Glob("modules/*")
	if len(dirs) == 0 {
		t.Fatal("no modules")
	}
	for _, dir := range dirs {
		m := parseModule(t, dir)
		for name, b := range m.resources() {
			if !strings.Contains(b.Labels[0], "_iam_") {
				continue
			}
			member, ok := b.Body.Attributes["member"]
			if !ok {
				if _, ok := b.Body.Attributes["members"]; ok || strings.HasSuffix(b.Labels[0], "_iam_policy") {
					t.Errorf("%s: %s sets members or a whole policy: grant with _iam_member resources", dir, name)
				}
				continue
			}
			if !refersTo(member.Expr, "google_service_account", "service") {
				continue
			}
			got = append(got, name)
			if dir != skyjoinModule {
				t.Errorf("%s: %s grants a service account a role outside %s/iam.tf", dir, name, skyjoinModule)
			}
			fe, ok := b.Body.Attributes["for_each"]
			if !ok || !refersTo(fe.Expr, "local", "grants_on") {
				t.Errorf("%s: %s must be for_each over local.grants_on, the checked table", dir, name)
			}
			if role := b.Body.Attributes["role"]; role == nil || !refersTo(role.Expr, "each", "value") {
				t.Errorf("%s: %s must take its role from the table (each.value.role)", dir, name)
			}
		}
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("IAM resources granting to the services' accounts: %v, want %v", got, want)
	}
}

// refersTo reports whether expr refers to root.attr.
func refersTo(expr hcl.Expression, root, attr string) bool {
	for _, tr := range expr.Variables() {
		if tr.RootName() != root || len(tr) < 2 {
			continue
		}
		if a, ok := tr[1].(hcl.TraverseAttr); ok && a.Name == attr {
			return true
		}
	}
	return false
}

// evalContext has what common_env refers to: the module's variables, and
// its modules' outputs as the modules compute them (see moduleOutput).
func evalContext(t *testing.T) *hcl.EvalContext {
	t.Helper()
	vars := map[string]cty.Value{"project": cty.StringVal(testProject), "prefix": cty.StringVal("skyjoin")}
	storeURL := moduleOutput(t, "modules/bigquery", "store_url", map[string]cty.Value{
		"var": cty.ObjectVal(map[string]cty.Value{
			"project": vars["project"], "location": cty.StringVal("EU"), "retention_days": cty.NumberIntVal(400),
		}),
		"google_bigquery_dataset": cty.ObjectVal(map[string]cty.Value{"this": cty.ObjectVal(map[string]cty.Value{"dataset_id": cty.StringVal("skyjoin")})}),
		"google_bigquery_table":   cty.ObjectVal(map[string]cty.Value{"events": cty.ObjectVal(map[string]cty.Value{"table_id": cty.StringVal("events")})}),
	})
	registryURL := moduleOutput(t, "modules/firestore", "registry_url", map[string]cty.Value{
		"var": cty.ObjectVal(map[string]cty.Value{"project": vars["project"], "database": cty.StringVal("(default)")}),
	})
	return &hcl.EvalContext{Variables: map[string]cty.Value{
		"var": cty.ObjectVal(vars),
		"module": cty.ObjectVal(map[string]cty.Value{
			"bigquery":  cty.ObjectVal(map[string]cty.Value{"store_url": storeURL}),
			"firestore": cty.ObjectVal(map[string]cty.Value{"registry_url": registryURL}),
		}),
	}}
}

// moduleOutput evaluates output name of the module in dir with vars.
func moduleOutput(t *testing.T, dir, name string, vars map[string]cty.Value) cty.Value {
	t.Helper()
	m := parseModule(t, dir)
	for _, body := range m.files {
		for _, b := range body.Blocks {
			if b.Type != "output" || len(b.Labels) != 1 || b.Labels[0] != name {
				continue
			}
			v, diags := b.Body.Attributes["value"].Expr.Value(&hcl.EvalContext{Variables: vars})
			if diags.HasErrors() {
				t.Fatalf("%s: output %s: %s", dir, name, diags.Error())
			}
			return v
		}
	}
	t.Fatalf("%s has no output %s", dir, name)
	return cty.NilVal
}

// TestServiceURLsParse checks that the URLs the Terraform gives the
// services are ones the code takes.
func TestServiceURLsParse(t *testing.T) {
	env := strMap(t, parseModule(t, skyjoinModule).local(t, "common_env", evalContext(t)))
	if _, err := bigquery.ParseURL(env["SKYJOIN_STORE"]); err != nil {
		t.Errorf("SKYJOIN_STORE: %v", err)
	}
	if _, err := pubsub.ParseURL(env["SKYJOIN_BROKER"]); err != nil {
		t.Errorf("SKYJOIN_BROKER: %v", err)
	}
	if env["SKYJOIN_REGISTRY"] != "firestore://"+testProject {
		t.Errorf("SKYJOIN_REGISTRY = %q, want firestore://%s", env["SKYJOIN_REGISTRY"], testProject)
	}
	for k := range env {
		if !strings.HasPrefix(k, "SKYJOIN_") {
			t.Errorf("common_env has %s: skyjoin reads only SKYJOIN_* variables", k)
		}
	}
}

// TestServiceMemoryIsTheBudget checks that every service's memory is a
// size skyjoin takes as its memory budget (SKYJOIN_MEMORY_LIMIT, set from
// local.memory), and that the module sets the variable from it.
func TestServiceMemoryIsTheBudget(t *testing.T) {
	m := parseModule(t, skyjoinModule)
	ctx := evalContext(t)
	vars := ctx.Variables["var"].AsValueMap()
	vars["worker_mode"] = cty.StringVal("pull")
	ctx.Variables["var"] = cty.ObjectVal(vars)
	defaults := m.local(t, "defaults", ctx).AsValueMap()
	if len(defaults) == 0 {
		t.Fatal("local.defaults is empty")
	}
	for name, d := range defaults {
		mem := d.GetAttr("memory").AsString()
		n, err := platform.ParseBytes(mem)
		if err != nil {
			t.Errorf("%s: memory %q is not a memory budget skyjoin takes: %v", name, mem, err)
		} else if n < 256<<20 {
			t.Errorf("%s: memory %q under 256 MiB", name, mem)
		}
	}
	// module "service" takes its memory, and its environment, from
	// local.memory.
	found := false
	for _, body := range m.files {
		for _, b := range body.Blocks {
			if b.Type != "module" || len(b.Labels) != 1 || b.Labels[0] != "service" {
				continue
			}
			found = true
			for _, attr := range []string{"memory", "env"} {
				a := b.Body.Attributes[attr]
				if a == nil || !slices.ContainsFunc(a.Expr.Variables(), func(tr hcl.Traversal) bool {
					return len(tr) > 1 && tr.RootName() == "local" && tr[1].(hcl.TraverseAttr).Name == "memory"
				}) {
					t.Errorf(`module "service": %s does not use local.memory`, attr)
				}
			}
		}
	}
	if !found {
		t.Error(`no module "service"`)
	}
}

// googleMetrics are the Google Cloud metrics the monitoring may use besides
// skyjoin's own: Pub/Sub's backlog and Cloud Run's requests and instances.
var googleMetrics = []string{
	"pubsub.googleapis.com/subscription/num_undelivered_messages",
	"pubsub.googleapis.com/subscription/oldest_unacked_message_age",
	"run.googleapis.com/container/instance_count",
	"run.googleapis.com/request_count",
}

// metricTypeRE finds metric types in monitoring filters.
var metricTypeRE = regexp.MustCompile(`metric\.type\s*=\s*"([^"]+)"`)

// TestMonitoringUsesExportedMetrics checks that every metric an alert
// policy or the dashboard refers to is one skyjoin exports, under the name
// Cloud Monitoring gives it, or one of googleMetrics; and that the alerts
// cover what issue 15 asks (backlog age, dead letters, error ratio,
// end-to-end latency).
func TestMonitoringUsesExportedMetrics(t *testing.T) {
	exported := map[string]bool{}
	rec := &recorder{names: map[string]string{}}
	if err := app.Instruments(rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.names) < 20 {
		t.Fatalf("only %d instruments registered: %v", len(rec.names), rec.names)
	}
	for name, kind := range rec.names {
		exported[cloudMonitoringType(name, kind)] = true
	}
	for _, g := range googleMetrics {
		exported[g] = true
	}

	m := parseModule(t, "modules/monitoring")
	used := map[string][]string{} // metric type -> where
	for path, body := range m.files {
		hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			var text string
			switch e := n.(type) {
			case *hclsyntax.TemplateExpr:
				for _, part := range e.Parts {
					if lit, ok := part.(*hclsyntax.LiteralValueExpr); ok && lit.Val.Type() == cty.String {
						text += lit.Val.AsString()
					} else {
						text += "${}" // an interpolation
					}
				}
			default:
				return nil
			}
			for _, mt := range metricTypeRE.FindAllStringSubmatch(text, -1) {
				used[mt[1]] = append(used[mt[1]], fmt.Sprintf("%s:%d", filepath.Base(path), n.Range().Start.Line))
			}
			return nil
		})
	}
	// local.prom holds the start of skyjoin's metric types.
	promPrefix := m.local(t, "prom", nil).AsString()
	if !strings.HasSuffix(promPrefix, `metric.type = "prometheus.googleapis.com`) {
		t.Fatalf("local.prom = %q", promPrefix)
	}
	resolved := used
	// Filters that continue local.prom: ${local.prom}/NAME/KIND".
	promRE := regexp.MustCompile(`\$\{\}(/[a-z0-9_.]+/[a-z]+)"`)
	for path, body := range m.files {
		hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			e, ok := n.(*hclsyntax.TemplateExpr)
			if !ok || len(e.Parts) < 2 || !refersTo(e.Parts[0], "local", "prom") {
				return nil
			}
			lit, ok := e.Parts[1].(*hclsyntax.LiteralValueExpr)
			if !ok {
				t.Errorf("%s:%d: a filter after local.prom must name its metric literally", path, n.Range().Start.Line)
				return nil
			}
			if mm := promRE.FindStringSubmatch("${}" + lit.Val.AsString()); mm != nil {
				mt := "prometheus.googleapis.com" + mm[1]
				resolved[mt] = append(resolved[mt], fmt.Sprintf("%s:%d", filepath.Base(path), n.Range().Start.Line))
			} else {
				t.Errorf("%s:%d: cannot read the metric after local.prom in %q", path, n.Range().Start.Line, lit.Val.AsString())
			}
			return nil
		})
	}
	if len(resolved) < 8 {
		t.Fatalf("found only %d metric types in the monitoring: %v", len(resolved), resolved)
	}
	for mt, where := range resolved {
		if !exported[mt] {
			t.Errorf("%s (%s) is neither a metric skyjoin exports nor an allowed Google metric", mt, strings.Join(where, ", "))
		}
	}
	for _, need := range []string{
		"pubsub.googleapis.com/subscription/oldest_unacked_message_age",
		cloudMonitoringType("skyjoin.deadletter.events", "counter"),
		"run.googleapis.com/request_count",
		cloudMonitoringType("skyjoin.pipeline.latency", "histogram"),
	} {
		if len(resolved[need]) == 0 {
			t.Errorf("no alert or chart uses %s", need)
		}
	}
}

// cloudMonitoringType is the Cloud Monitoring metric type of an
// OpenTelemetry instrument sent over OTLP to the Telemetry API: the
// Prometheus mapping, prometheus.googleapis.com/NAME/KIND, with the
// instrument's name as it is and KIND counter (monotonic sums), gauge
// (gauges and non-monotonic sums) or histogram.
func cloudMonitoringType(name, kind string) string {
	return "prometheus.googleapis.com/" + name + "/" + kind
}

// recorder is a MeterProvider that notes the name and kind of every
// instrument made with it.
type recorder struct {
	noop.MeterProvider
	names map[string]string
}

func (r *recorder) Meter(string, ...metric.MeterOption) metric.Meter { return recMeter{r: r} }

func (r *recorder) add(name, kind string) { r.names[name] = kind }

type recMeter struct {
	noop.Meter
	r *recorder
}

func (m recMeter) Int64Counter(n string, o ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	m.r.add(n, "counter")
	return m.Meter.Int64Counter(n, o...)
}

func (m recMeter) Float64Counter(n string, o ...metric.Float64CounterOption) (metric.Float64Counter, error) {
	m.r.add(n, "counter")
	return m.Meter.Float64Counter(n, o...)
}

func (m recMeter) Int64UpDownCounter(n string, o ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	m.r.add(n, "gauge")
	return m.Meter.Int64UpDownCounter(n, o...)
}

func (m recMeter) Float64UpDownCounter(n string, o ...metric.Float64UpDownCounterOption) (metric.Float64UpDownCounter, error) {
	m.r.add(n, "gauge")
	return m.Meter.Float64UpDownCounter(n, o...)
}

func (m recMeter) Int64Histogram(n string, o ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	m.r.add(n, "histogram")
	return m.Meter.Int64Histogram(n, o...)
}

func (m recMeter) Float64Histogram(n string, o ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	m.r.add(n, "histogram")
	return m.Meter.Float64Histogram(n, o...)
}

func (m recMeter) Int64Gauge(n string, o ...metric.Int64GaugeOption) (metric.Int64Gauge, error) {
	m.r.add(n, "gauge")
	return m.Meter.Int64Gauge(n, o...)
}

func (m recMeter) Float64Gauge(n string, o ...metric.Float64GaugeOption) (metric.Float64Gauge, error) {
	m.r.add(n, "gauge")
	return m.Meter.Float64Gauge(n, o...)
}

func (m recMeter) Int64ObservableCounter(n string, o ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	m.r.add(n, "counter")
	return m.Meter.Int64ObservableCounter(n, o...)
}

func (m recMeter) Float64ObservableCounter(n string, o ...metric.Float64ObservableCounterOption) (metric.Float64ObservableCounter, error) {
	m.r.add(n, "counter")
	return m.Meter.Float64ObservableCounter(n, o...)
}

func (m recMeter) Int64ObservableUpDownCounter(n string, o ...metric.Int64ObservableUpDownCounterOption) (metric.Int64ObservableUpDownCounter, error) {
	m.r.add(n, "gauge")
	return m.Meter.Int64ObservableUpDownCounter(n, o...)
}

func (m recMeter) Float64ObservableUpDownCounter(n string, o ...metric.Float64ObservableUpDownCounterOption) (metric.Float64ObservableUpDownCounter, error) {
	m.r.add(n, "gauge")
	return m.Meter.Float64ObservableUpDownCounter(n, o...)
}

func (m recMeter) Int64ObservableGauge(n string, o ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	m.r.add(n, "gauge")
	return m.Meter.Int64ObservableGauge(n, o...)
}

func (m recMeter) Float64ObservableGauge(n string, o ...metric.Float64ObservableGaugeOption) (metric.Float64ObservableGauge, error) {
	m.r.add(n, "gauge")
	return m.Meter.Float64ObservableGauge(n, o...)
}
