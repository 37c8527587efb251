package webhook

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Filters of every cost class: cheap ones, one comprehension over the
// attributes, and nested comprehensions (over MaxFilterCost).
var costFilters = []struct {
	src     string
	refused bool
}{
	{`location.country == "Spain" && weather.temperature_c > 30`, false},
	{`user.email.matches("^.*@example\\.com$")`, false},
	{`attributes.exists(k, k.startsWith("utm_"))`, false},
	{`attributes.map(k, attributes[k]).exists(v, v.contains("x"))`, false},
	{`attributes.all(k, attributes.all(j, k == j || attributes[k] != attributes[j]))`, true},
	{`attributes.exists(k, attributes.exists(j, attributes.exists(l, k + j + l == "x")))`, true},
	// Ordinary comprehensions over properties stay allowed (the property
	// limits are the size hints); nested ones over them are refused.
	{`properties.items.exists(i, i.qty > 2 && i.sku == "a")`, false},
	{`properties.exists(k, k.startsWith("utm_"))`, false},
	{`properties.amount > 10.0 && properties.items.size() >= 2`, false},
	{`properties.items.exists(i, properties.items.exists(j, properties.items.exists(l, i.qty + j.qty + l.qty > 100)))`, true},
	{`attributes.exists(k, attributes.filter(j, j.contains(k)).size() > 1)`, true},
}

// TestFilterCostRefusedAtRegistration: POST /v1/webhooks refuses a filter
// whose estimated cost is over the bound, naming the filter, and takes
// the others.
func TestFilterCostRefusedAtRegistration(t *testing.T) {
	e := newEnv(t, Config{})
	secret := strings.Repeat("s", MinSecretLength)
	for _, tt := range costFilters {
		body, _ := json.Marshal(map[string]any{"url": "http://127.0.0.1:1/hook", "allow_private": true, "secret": secret, "filter": tt.src})
		code, answer := e.do("POST", "/v1/webhooks", string(body))
		switch {
		case tt.refused && (code != 400 || !strings.Contains(string(answer), "filter: too costly") || !strings.Contains(string(answer), `"field":"filter"`)):
			t.Errorf("%s: %d %s, want 400 naming filter as too costly", tt.src, code, answer)
		case !tt.refused && code != 201:
			t.Errorf("%s: %d %s, want 201", tt.src, code, answer)
		}
	}
}

// fullRecord is a record of the largest sizes the schema admits where a
// filter can spend: 64 attributes of 1024 characters.
func fullRecord() *event.Record {
	lat, lon := 1.0, 2.0
	r := &event.Record{Event: event.Event{EventID: "e", EventType: "t", OccurredAt: time.Now(), User: event.User{ID: "u", Email: strings.Repeat("e", 256)},
		Location: event.Location{Latitude: &lat, Longitude: &lon, Country: "Spain"}, Attributes: map[string]string{}},
		Weather: &event.Weather{TemperatureC: 31, Condition: "Clear sky"}}
	for i := range 64 {
		r.Attributes[fmt.Sprintf("key-%02d-%s", i, strings.Repeat("k", 56))] = fmt.Sprintf("%04d%s", i, strings.Repeat("v", 1020))
	}
	// And properties near their limits: 80 items of 3 entries each, 254
	// entries in all.
	items := make([]string, 80)
	for i := range items {
		items[i] = fmt.Sprintf(`{"sku":"sku-%02d","qty":%d}`, i, i%5)
	}
	r.Properties = []byte(`{"amount":12.5,"utm_source":"x","items":[` + strings.Join(items, ",") + `]}`)
	if errs := r.Validate(0, time.Time{}, 0); len(errs) > 0 {
		panic(fmt.Sprint(errs))
	}
	return r
}

// TestFilterCostLimitAtRuntime: a filter within the bound runs to its end
// on the largest record; a costly filter registered before the bound (it
// still loads) is stopped by the runtime limit and counts as no match.
func TestFilterCostLimitAtRuntime(t *testing.T) {
	enc, err := encodeRecord(fullRecord())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range costFilters {
		f, err := compileFilter(tt.src)
		if err != nil {
			t.Fatal(err)
		}
		if (f.checkCost() != nil) != tt.refused {
			t.Errorf("%s: estimated %d..%d, refused %v", tt.src, f.cost.Min, f.cost.Max, !tt.refused)
		}
		_, _, err = f.prg.Eval(enc.vars)
		limited := err != nil && strings.Contains(err.Error(), "cost limit")
		if !tt.refused && err != nil {
			t.Errorf("%s: %v", tt.src, err)
		}
		if tt.refused && !limited {
			// A refused filter may still end below the limit on this record,
			// but not the nested ones over 64 attributes.
			t.Errorf("%s: evaluation not stopped by the cost limit (err %v)", tt.src, err)
		}
		if ok, merr := f.match(enc.vars); tt.refused && (ok || merr == nil) {
			t.Errorf("%s: match %v, %v; want no match and the error", tt.src, ok, errors.Unwrap(merr))
		}
	}
}
