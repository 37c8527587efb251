package pii

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

var testKey = []byte("test-key-0123456789")

func mustPolicy(t testing.TB, spec string, key []byte) *Policy {
	t.Helper()
	s, err := ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(s, key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func f64(v float64) *float64 { return &v }

func sample() event.Record {
	return event.Record{
		Event: event.Event{
			EventID: "e-1", EventType: "user.signup", OccurredAt: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC),
			User: event.User{ID: "u-42", Username: "ada1815", Name: "Ada Lovelace", Title: "Ms", FirstName: "Ada", LastName: "Lovelace",
				Email: "Ada@Example.com", Phone: "+44 (20) 7946-0018", Cell: "07700 900461", Gender: "female", Nationality: "GB",
				BirthDate: "1815-12-10", PictureURL: "https://example.com/ada.jpg"},
			Location: event.Location{Latitude: f64(51.50735), Longitude: f64(-0.12776), Street: "12 St James's Square", City: "London",
				State: "England", Country: "United Kingdom", Postcode: "SW1Y 4LB", Timezone: "Europe/London"},
			Attributes: map[string]string{"plan": "pro", "ip": "203.0.113.9", "utm.source": "mail", "utm.campaign": "x"},
		},
		Weather: &event.Weather{CellLatitude: 51.5168, CellLongitude: -0.1382, Condition: "Overcast"},
	}
}

// TestEveryFieldKnown: every field of event.User and event.Location has a
// path (so that a field added there is covered by the policy, and not kept
// by accident of being unknown).
func TestEveryFieldKnown(t *testing.T) {
	for prefix, typ := range map[string]reflect.Type{"user.": reflect.TypeFor[event.User](), "location.": reflect.TypeFor[event.Location]()} {
		for i := range typ.NumField() {
			path := prefix + jsonName(typ.Field(i))
			f, ok := fields[path]
			if !ok {
				t.Errorf("field %s has no accessor in pii.fields", path)
				continue
			}
			// The accessor reaches that field: set it through the accessor
			// and look for it by reflection.
			var r event.Record
			switch {
			case f.str != nil:
				*f.str(&r) = "marker"
			case f.num != nil:
				*f.num(&r) = f64(7)
			}
			v := reflect.ValueOf(r.User)
			if prefix == "location." {
				v = reflect.ValueOf(r.Location)
			}
			got := v.Field(i)
			if got.Kind() == reflect.Pointer {
				got = got.Elem()
			}
			if !got.IsValid() || got.IsZero() {
				t.Errorf("the accessor of %s does not reach it", path)
			}
		}
	}
}

func TestDefaultPolicy(t *testing.T) {
	p := mustPolicy(t, "", testKey)
	r := sample()
	p.Apply(&r)
	u, l := r.User, r.Location
	want := map[string][2]string{
		"id":          {u.ID, "u-42"},
		"name":        {u.Name, ""},
		"first_name":  {u.FirstName, ""},
		"last_name":   {u.LastName, ""},
		"picture_url": {u.PictureURL, ""},
		"birth_date":  {u.BirthDate, "1815"},
		"title":       {u.Title, "Ms"},
		"gender":      {u.Gender, "female"},
		"nationality": {u.Nationality, "GB"},
		"street":      {l.Street, ""},
		"postcode":    {l.Postcode, "SW1"},
		"city":        {l.City, "London"},
		"country":     {l.Country, "United Kingdom"},
		"timezone":    {l.Timezone, "Europe/London"},
		"plan":        {r.Attributes["plan"], "pro"},
		"ip":          {r.Attributes["ip"], "203.0.113.9"},
	}
	for name, gw := range want {
		if gw[0] != gw[1] {
			t.Errorf("%s = %q, want %q", name, gw[0], gw[1])
		}
	}
	for name, v := range map[string]string{"email": u.Email, "phone": u.Phone, "cell": u.Cell, "username": u.Username} {
		if !strings.HasPrefix(v, HashPrefix) || len(v) != len(HashPrefix)+32 {
			t.Errorf("%s = %q, want a hash", name, v)
		}
	}
	if *l.Latitude != 51.5 || *l.Longitude != -0.1 {
		t.Errorf("coordinates %v,%v, want 51.5,-0.1", *l.Latitude, *l.Longitude)
	}
	if r.Weather.CellLatitude != 51.5 || r.Weather.CellLongitude != -0.1 {
		t.Errorf("weather cell %v,%v, want 51.5,-0.1", r.Weather.CellLatitude, r.Weather.CellLongitude)
	}
	// No planted value survives anywhere in the record's JSON.
	b, _ := json.Marshal(r)
	for _, v := range []string{"Ada@", "Example.com", "7946", "900461", "Lovelace", "ada1815", "James", "4LB", "51.507", "0.127", "51.516", "0.138", "12-10", "ada.jpg"} {
		if strings.Contains(string(b), v) {
			t.Errorf("%q survives the default policy: %s", v, b)
		}
	}
}

func TestHashIsKeyedAndNormalised(t *testing.T) {
	p1 := mustPolicy(t, "", testKey)
	p2 := mustPolicy(t, "", []byte("another key"))
	apply := func(p *Policy, email, phone string) (string, string) {
		r := sample()
		r.User.Email, r.User.Phone = email, phone
		p.Apply(&r)
		return r.User.Email, r.User.Phone
	}
	e1, ph1 := apply(p1, "ada@example.com", "+442079460018")
	e2, ph2 := apply(p1, " ADA@Example.COM ", "+44 (20) 7946-0018")
	if e1 != e2 || ph1 != ph2 {
		t.Errorf("spellings of one value hash differently: %s %s / %s %s", e1, e2, ph1, ph2)
	}
	e3, _ := apply(p2, "ada@example.com", "")
	if e3 == e1 {
		t.Error("two keys give the same hash")
	}
	e4, _ := apply(p1, "bob@example.com", "")
	if e4 == e1 {
		t.Error("two values give the same hash")
	}
	// The same id hashes the same through UserID (erasure) and Apply.
	hp := mustPolicy(t, "user.id=hash", testKey)
	r := sample()
	hp.Apply(&r)
	if r.User.ID != hp.UserID("u-42") || r.User.ID == "u-42" {
		t.Errorf("stored id %q, UserID %q", r.User.ID, hp.UserID("u-42"))
	}
	if ids := hp.UserIDs("u-42"); len(ids) != 2 || ids[0] != "u-42" || ids[1] != r.User.ID {
		t.Errorf("UserIDs = %v", ids)
	}
	if ids := KeepAll().UserIDs("u-42"); len(ids) != 1 {
		t.Errorf("UserIDs without a key = %v", ids)
	}
}

func TestKeepPreset(t *testing.T) {
	p := mustPolicy(t, "keep", nil)
	r, want := sample(), sample()
	p.Apply(&r)
	if !reflect.DeepEqual(r, want) {
		t.Errorf("keep changed the record:\n%+v\n%+v", r, want)
	}
	if len(p.Spec().Rules()) != 0 || p.Spec().String() != "keep" {
		t.Errorf("keep has rules %v", p.Spec().Rules())
	}
}

func TestRules(t *testing.T) {
	cases := []struct {
		spec  string
		check func(r event.Record) string
	}{
		{"keep,location.latitude=coarsen:1,location.longitude=coarsen:0.01", func(r event.Record) string {
			if *r.Location.Latitude != 52 || *r.Location.Longitude != -0.13 {
				return "coordinates " + jsonOf(r.Location)
			}
			return ""
		}},
		{"keep,user.email=coarsen,location.postcode=coarsen:2", func(r event.Record) string {
			if r.User.Email != "example.com" || r.Location.Postcode != "SW" {
				return r.User.Email + " " + r.Location.Postcode
			}
			return ""
		}},
		{"keep,attributes.*=drop,attributes.plan=keep", func(r event.Record) string {
			if len(r.Attributes) != 1 || r.Attributes["plan"] != "pro" {
				return jsonOf(r.Attributes)
			}
			return ""
		}},
		{"keep\nattributes.utm.*=drop # campaign data\nattributes.ip=hash", func(r event.Record) string {
			if len(r.Attributes) != 2 || r.Attributes["plan"] != "pro" || !strings.HasPrefix(r.Attributes["ip"], HashPrefix) {
				return jsonOf(r.Attributes)
			}
			return ""
		}},
		{"keep,attributes.*=drop", func(r event.Record) string {
			if r.Attributes != nil {
				return jsonOf(r.Attributes)
			}
			return ""
		}},
		{"default,user.name=hash,location.latitude=keep,location.longitude=keep", func(r event.Record) string {
			if !strings.HasPrefix(r.User.Name, HashPrefix) || *r.Location.Latitude != 51.50735 || r.User.FirstName != "" {
				return jsonOf(r.Event)
			}
			return ""
		}},
	}
	for _, tc := range cases {
		p := mustPolicy(t, tc.spec, testKey)
		r := sample()
		p.Apply(&r)
		if msg := tc.check(r); msg != "" {
			t.Errorf("%q: %s", tc.spec, msg)
		}
	}
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestBirthDateCoarsen(t *testing.T) {
	p := mustPolicy(t, "keep,user.birth_date=coarsen", nil)
	for in, want := range map[string]string{"1987-04-02": "1987", "1987-04-02T00:00:00Z": "1987", "1987": "1987",
		"19870402": "", "02/04/1987": "", "87-04-02": ""} {
		r := sample()
		r.User.BirthDate = in
		p.Apply(&r)
		if r.User.BirthDate != want {
			t.Errorf("birth_date %q -> %q, want %q", in, r.User.BirthDate, want)
		}
	}
}

func TestSpecErrors(t *testing.T) {
	cases := map[string]string{
		"user.id=drop":                    "keep or hash",
		"location.latitude=hash":          "keep or coarsen",
		"location.latitude=coarsen:100":   "(0, 90]",
		"user.name=coarsen":               "coarsen is defined for",
		"user.emial=hash":                 `unknown field "user.emial"`,
		"user.email=scramble":             `action "scramble"`,
		"user.email=hash:3":               "takes no parameter",
		"location.postcode=coarsen:2.5":   "leading characters",
		"attributes.x=coarsen":            "free-form",
		"attributes.=hash":                "ROOT.KEY",
		"user.email=hash,user.email=drop": "given twice",
		"strict":                          "not a preset",
		"user.email=hash,keep":            "may only come first",
		"user.birth_date=coarsen:2":       "no parameter",
	}
	for spec, want := range cases {
		_, err := ParseSpec(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSpec(%q) = %v, want an error with %q", spec, err, want)
		}
	}
	// Every problem at once.
	_, err := ParseSpec("user.id=drop,user.x=hash")
	if err == nil || !strings.Contains(err.Error(), "user.id") || !strings.Contains(err.Error(), "user.x") {
		t.Errorf("two problems: %v", err)
	}
	// A policy that hashes needs a key.
	s, _ := ParseSpec("")
	if _, err := New(s, nil); err == nil {
		t.Error("New without a key accepted a hashing policy")
	}
}

func TestSpecFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pii.txt")
	os.WriteFile(path, []byte("# our policy\nkeep\nuser.email = hash\n\nattributes.ip=drop  # not needed\n"), 0o600)
	s, err := ParseSpec("@" + path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "keep,attributes.ip=drop,user.email=hash" {
		t.Errorf("spec %s", got)
	}
	if _, err := ParseSpec("@" + path + ".missing"); err == nil {
		t.Error("a missing file is accepted")
	}
}

func TestApplyTree(t *testing.T) {
	p := mustPolicy(t, "keep,properties.contact.*=hash,properties.contact.kind=keep,properties.debug=drop,properties.secret=hash", testKey)
	var m map[string]any
	json.Unmarshal([]byte(`{"contact":{"kind":"home","email":"a@b.c","deep":{"phone":"123"}},"debug":{"x":1},"secret":{"n":2},"plain":"kept"}`), &m)
	p.ApplyTree("properties", m)
	c := m["contact"].(map[string]any)
	if c["kind"] != "home" || !strings.HasPrefix(c["email"].(string), HashPrefix) ||
		!strings.HasPrefix(c["deep"].(map[string]any)["phone"].(string), HashPrefix) {
		t.Errorf("contact: %v", c)
	}
	if _, ok := m["debug"]; ok {
		t.Errorf("debug kept: %v", m)
	}
	if s, _ := m["secret"].(string); !strings.HasPrefix(s, HashPrefix) || m["plain"] != "kept" {
		t.Errorf("secret %v, plain %v", m["secret"], m["plain"])
	}
}

// TestApplyProperties: the policy reaches into a record's properties:
// hash, drop and coarsen at a path, a PREFIX.* rule, and the rest kept as
// it was (numbers with their text).
func TestApplyProperties(t *testing.T) {
	p := mustPolicy(t, "keep,properties.customer.email=hash,properties.customer.*=drop,properties.customer.tier=keep,"+
		"properties.amount=coarsen:10,properties.ip=drop,properties.zip=coarsen", testKey)
	r := sample()
	r.Properties = []byte(`{"amount":123.4,"big":9007199254740993,"ip":"10.0.0.1","zip":"12345","items":[{"sku":"a"}],` +
		`"customer":{"email":"A@b.c","name":"Ann","tier":"gold"}}`)
	p.Apply(&r)
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(r.Properties))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	c := m["customer"].(map[string]any)
	if e, _ := c["email"].(string); !strings.HasPrefix(e, HashPrefix) || e != p.hash("A@b.c") {
		t.Errorf("customer.email = %v, want its hash", c["email"])
	}
	if _, ok := c["name"]; ok || c["tier"] != "gold" {
		t.Errorf("customer = %v, want name dropped by customer.* and tier kept", c)
	}
	if m["amount"] != json.Number("120") {
		t.Errorf("amount = %v, want 120 (coarsened to 10)", m["amount"])
	}
	if _, ok := m["ip"]; ok {
		t.Errorf("ip kept: %v", m)
	}
	if _, ok := m["zip"]; ok {
		t.Errorf("zip (a string: nothing coarser to keep) kept: %v", m)
	}
	if m["big"] != json.Number("9007199254740993") || fmt.Sprint(m["items"]) != "[map[sku:a]]" {
		t.Errorf("untouched values changed: big %v items %v", m["big"], m["items"])
	}
	for spec, want := range map[string]string{
		"attributes.a=coarsen":    "coarsen is not defined",
		"properties.a=coarsen:-1": "positive",
	} {
		if _, err := ParseSpec(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
}

// BenchmarkApply: the default policy on one record (4 hashes, 7 drops or
// coarsenings), as the worker applies it to every record.
func BenchmarkApply(b *testing.B) {
	p := mustPolicy(b, "", testKey)
	recs := make([]event.Record, 1024)
	for i := range recs {
		recs[i] = sample()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := recs[i%len(recs)] // a copy; its attributes map is shared and stays as the policy leaves it
		p.Apply(&r)
	}
}

func jsonName(sf reflect.StructField) string {
	name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
	return name
}

// TestDefaultCoversTrackerContext: the default policy reaches what a
// Segment tracker sends about the person beside the event's own fields.
func TestDefaultCoversTrackerContext(t *testing.T) {
	p := mustPolicy(t, "default", testKey)
	r := sample()
	r.Properties = []byte(`{"amount":12.5,"_segment":{"context":{"ip":"203.0.113.7","locale":"en-GB","traits":{"email":"a@b.c"}},"traits":{"address":"1 Main St"}}}`)
	p.Apply(&r)
	got := string(r.Properties)
	for _, clear := range []string{"203.0.113.7", "a@b.c", "1 Main St"} {
		if strings.Contains(got, clear) {
			t.Errorf("%q in clear in %s", clear, got)
		}
	}
	if !strings.Contains(got, p.hash("203.0.113.7")) || !strings.Contains(got, `"locale":"en-GB"`) || !strings.Contains(got, `"amount":12.5`) {
		t.Errorf("properties after the default policy: %s", got)
	}
}

// TestPropertiesNoRuleReaches: properties that no rule can reach are kept
// as sent, byte for byte (order of names, spacing, number text), without
// a decode; a name spelled with an escape, or a rule for every name, still
// takes the rules.
func TestPropertiesNoRuleReaches(t *testing.T) {
	p := mustPolicy(t, "default", testKey)
	const sent = `{"zeta": 1.50, "amount":12.5,"items":[{"sku":"a"}],"segment":"b2b"}`
	r := sample()
	r.Properties = []byte(sent)
	p.Apply(&r)
	if string(r.Properties) != sent {
		t.Errorf("untouched properties changed:\n got %s\nwant %s", r.Properties, sent)
	}
	// "_segment" as a value, not a name: decoded and walked (the check is
	// on bytes), and nothing is lost.
	r = sample()
	r.Properties = []byte(`{"note":"_segment","n":1}`)
	p.Apply(&r)
	if string(r.Properties) != `{"n":1,"note":"_segment"}` {
		t.Errorf("properties with \"_segment\" as a value: %s", r.Properties)
	}
	// As a name spelled with an escape: the rules apply.
	r = sample()
	r.Properties = []byte(`{"\u005fsegment":{"context":{"ip":"203.0.113.7"}}}`)
	p.Apply(&r)
	if strings.Contains(string(r.Properties), "203.0.113.7") || !strings.Contains(string(r.Properties), p.hash("203.0.113.7")) {
		t.Errorf("an escaped name escaped the rules: %s", r.Properties)
	}
	all := mustPolicy(t, "keep,properties.*=drop", testKey)
	r = sample()
	r.Properties = []byte(sent)
	all.Apply(&r)
	if string(r.Properties) != "{}" {
		t.Errorf("properties.*=drop left %s", r.Properties)
	}
}

// BenchmarkApplyProperties: the default policy on a record with typed
// properties that no rule reaches (an order event), as most records are.
func BenchmarkApplyProperties(b *testing.B) {
	p := mustPolicy(b, "default", testKey)
	const props = `{"order_id":"ord-20481","amount":42.5,"currency":"EUR","items":[{"sku":"sku-1","qty":2,"price":12.5},{"sku":"sku-7","qty":1,"price":17.5}],"coupon":null,"first_order":false,"channel":{"name":"app","version":"5.2.1"}}`
	recs := make([]event.Record, 1024)
	for i := range recs {
		recs[i] = sample()
		recs[i].Properties = []byte(props)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := recs[i%len(recs)]
		p.Apply(&r)
	}
}
