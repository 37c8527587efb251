package webhook

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// The guard's tests resolve and dial nothing: names go to fakeResolver,
// connections to fakeDialer, which records the address and connects to
// nothing (or to an in-memory HTTP server). Only the tests through the
// Dispatcher at the end use real sockets, on loopback.

// fakeResolver answers from a table; a name with several answers gives
// them in turn (DNS rebinding), the last one from then on.
type fakeResolver struct {
	mu       sync.Mutex
	answers  map[string][][]string
	fallback []string // the answer for other names; none: not found
	asked    []string
}

func (r *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, host)
	seq, ok := r.answers[strings.ToLower(host)]
	if !ok && r.fallback != nil {
		seq, ok = [][]string{r.fallback}, true
	}
	if !ok || len(seq) == 0 {
		return nil, &net.DNSError{Err: "no such host (fake resolver)", Name: host, IsNotFound: true}
	}
	ans := seq[0]
	if len(seq) > 1 {
		r.answers[strings.ToLower(host)] = seq[1:]
	}
	var out []netip.Addr
	for _, s := range ans {
		a := netip.MustParseAddr(s)
		if network == "ip4" && !a.Is4() || network == "ip6" && a.Is4() {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

var errFakeDial = errors.New("fake dialer: not connected")

// fakeDialer records what would be dialled. With serve set, it hands back
// one end of an in-memory pipe whose other end answers one HTTP request
// with 204 and closes.
type fakeDialer struct {
	mu     sync.Mutex
	dialed []string
	serve  bool
}

func (d *fakeDialer) dial(_ context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, address)
	d.mu.Unlock()
	if !d.serve {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, errFakeDial)
	}
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		req, err := http.ReadRequest(bufio.NewReader(server))
		if err != nil {
			return
		}
		req.Body.Close()
		fmt.Fprint(server, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
	}()
	return client, nil
}

func (d *fakeDialer) addresses() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dialed)
}

// TestGuardForms is the table of every form of a host that reaches a
// private, loopback, link-local or metadata address, and of public ones:
// what registration decides from the URL alone, and what the dial-time
// guard does, with and without allow_private.
func TestGuardForms(t *testing.T) {
	resolver := map[string][]string{
		"rebind.example.test": {"127.0.0.1"},
		"ten.example.test":    {"10.0.0.7"},
		"meta.example.test":   {"169.254.169.254"},
		"mixed.example.test":  {"93.184.215.14", "10.0.0.1"},
		"mapped.example.test": {"::ffff:127.0.0.1"},
		"nat64.example.test":  {"64:ff9b::a9fe:a9fe"},
		"ula.example.test":    {"fd12:3456::1"},
		"public.example.test": {"93.184.215.14"},
		"both.example.test":   {"2606:4700:4700::1111", "93.184.215.14"},
		// The resolver of a Google Cloud VM answers these names so; a
		// name judged alone is refused before it is resolved.
		"metadata.google.internal": {"169.254.169.254"},
		"localhost":                {"127.0.0.1", "::1"},
	}
	const (
		pub  = classPublic
		priv = classPrivate
		meta = classMetadata
		bad  = classInvalid
	)
	tests := []struct {
		host string
		want class
		// atDial: only the dial-time guard can tell (a name that resolves
		// there); otherwise registration refuses it.
		atDial bool
	}{
		// IPv4 literals.
		{"127.0.0.1", priv, false},
		{"127.255.255.254", priv, false},
		{"10.1.2.3", priv, false},
		{"172.16.5.4", priv, false},
		{"172.31.255.255", priv, false},
		{"192.168.0.10", priv, false},
		{"100.64.0.1", priv, false},
		{"169.254.10.1", priv, false},
		{"0.0.0.0", priv, false},
		{"0.1.2.3", priv, false},
		{"224.0.0.1", priv, false},
		{"255.255.255.255", priv, false},
		{"198.18.0.1", priv, false},
		{"192.0.2.1", priv, false},
		{"169.254.169.254", meta, false},
		{"169.254.170.2", meta, false},
		{"100.100.100.200", meta, false},
		{"192.0.0.192", meta, false},
		{"93.184.215.14", pub, false},
		{"8.8.8.8", pub, false},
		{"172.32.0.1", pub, false},
		{"100.128.0.1", pub, false},
		// IPv6 literals.
		{"::1", priv, false},
		{"::", priv, false},
		{"fe80::1", priv, false},
		{"fe80::1%eth0", priv, false},
		{"fc00::1", priv, false},
		{"fd12:3456::1", priv, false},
		{"fec0::1", priv, false},
		{"ff02::1", priv, false},
		{"2001:db8::1", priv, false},
		{"100::1", priv, false},
		{"4000::1", priv, false},
		{"fd00:ec2::254", meta, false},
		{"fd20:ce::254", meta, false},
		{"2606:4700:4700::1111", pub, false},
		{"2001:4860:4860::8888", pub, false},
		// IPv4-mapped, -compatible and -translated IPv6.
		{"::ffff:127.0.0.1", priv, false},
		{"::ffff:7f00:1", priv, false},
		{"::ffff:10.0.0.1", priv, false},
		{"::ffff:169.254.169.254", meta, false},
		{"::ffff:8.8.8.8", pub, false},
		{"::127.0.0.1", priv, false},
		{"::7f00:1", priv, false},
		{"::a9fe:a9fe", meta, false},
		{"::8.8.8.8", priv, false}, // deprecated, not routed
		{"::ffff:0:127.0.0.1", priv, false},
		// NAT64.
		{"64:ff9b::127.0.0.1", priv, false},
		{"64:ff9b::7f00:1", priv, false},
		{"64:ff9b::10.1.2.3", priv, false},
		{"64:ff9b::a9fe:a9fe", meta, false},
		{"64:ff9b::8.8.8.8", pub, false},
		{"64:ff9b:1::7f00:1", priv, false},      // local-use prefix, /96
		{"64:ff9b:1:7f00:0:100::", priv, false}, // local-use prefix, /48: 127.0.0.1
		{"64:ff9b:1:a9fe:a9:fe00::", meta, false},
		{"64:ff9b:1::808:808", priv, false}, // site-local translation
		// 6to4.
		{"2002:7f00:1::1", priv, false},
		{"2002:a00:1::1", priv, false},
		{"2002:a9fe:a9fe::1", meta, false},
		{"2002:808:808::1", pub, false},
		// Teredo: server 65.54.227.120, client obfuscated (bits inverted).
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", priv, false}, // client 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", priv, false}, // client 10.0.0.1
		{"2001:0:4136:e378:8000:63bf:5601:5601", meta, false}, // client 169.254.169.254
		{"2001:0:a00:1:8000:63bf:f7f7:f7f7", priv, false},     // server 10.0.0.1
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", pub, false},  // client 8.8.8.8
		// IPv4 in decimal, octal, hexadecimal and short forms: refused
		// whatever they denote, public too.
		{"2130706433", bad, false},
		{"0177.0.0.1", bad, false},
		{"0x7f.1", bad, false},
		{"0x7f000001", bad, false},
		{"017700000001", bad, false},
		{"127.1", bad, false},
		{"127.0.1", bad, false},
		{"127.0.0.1.", bad, false},
		{"0", bad, false},
		{"0x7F.0.0.1", bad, false},
		{"3232235777", bad, false},
		{"0xa9.0xfe.0xa9.0xfe", bad, false},
		{"134744072", bad, false}, // 8.8.8.8
		{"1.2.3.4.5", bad, false},
		{"256.1.1.1", bad, false},
		{"08.1.1.1", bad, false},
		{"foo.0x10", bad, false},
		// Names decided without resolving.
		{"localhost", priv, false},
		{"LOCALHOST.", priv, false},
		{"api.localhost", priv, false},
		{"printer.local", priv, false},
		{"db.internal", priv, false},
		{"nas.home.arpa", priv, false},
		{"intranet", priv, false},
		{"metadata.google.internal", meta, false},
		{"Metadata.Google.Internal.", meta, false},
		{"metadata", meta, false},
		{"metadata.goog", meta, false},
		{"instance-data", meta, false},
		{"instance-data.ec2.internal", meta, false},
		{"ｌｏｃａｌｈｏｓｔ", bad, false},
		// Names that only their resolution tells: at dial time.
		{"rebind.example.test", priv, true},
		{"ten.example.test", priv, true},
		{"meta.example.test", meta, true},
		{"mixed.example.test", priv, true},
		{"mapped.example.test", priv, true},
		{"nat64.example.test", meta, true},
		{"ula.example.test", priv, true},
		{"public.example.test", pub, true},
		{"both.example.test", pub, true},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			// Registration, from the URL alone.
			static := tt.want != pub && !tt.atDial
			if msg := checkTarget(tt.host, false); (msg != "") != static {
				t.Errorf("registration: %q, want refused %v", msg, static)
			}
			staticAllowed := tt.want == priv || tt.want == pub || tt.atDial
			if msg := checkTarget(tt.host, true); (msg != "") == staticAllowed {
				t.Errorf("registration with allow_private: %q, want refused %v", msg, !staticAllowed)
			}
			u := "http://" + tt.host + "/hook"
			if strings.Contains(tt.host, ":") {
				u = "http://[" + strings.Replace(tt.host, "%", "%25", 1) + "]/hook"
			}
			if msg := checkURL(u, false); (msg != "") != static {
				t.Errorf("checkURL(%s): %q, want refused %v", u, msg, static)
			}

			// Dial time, with and without allow_private.
			for _, allow := range []bool{false, true} {
				// Other names (the private ones decided without
				// resolving, allowed with allow_private) resolve to a
				// private address.
				res := &fakeResolver{answers: map[string][][]string{}, fallback: []string{"192.168.77.77"}}
				for k, v := range resolver {
					res.answers[k] = [][]string{v}
				}
				dl := &fakeDialer{}
				g := newGuard(allow, res, dl.dial)
				_, err := g.DialContext(t.Context(), "tcp", net.JoinHostPort(tt.host, "443"))
				refuse := tt.want == meta || tt.want == bad || (tt.want == priv && !allow)
				var re *RefusedError
				switch {
				case refuse && !errors.As(err, &re):
					t.Errorf("dial (allow_private %v): %v, want refused", allow, err)
				case refuse && len(dl.addresses()) > 0:
					t.Errorf("dial (allow_private %v): refused but dialled %v", allow, dl.addresses())
				case !refuse && !errors.Is(err, errFakeDial):
					t.Errorf("dial (allow_private %v): %v, want a dial", allow, err)
				case !refuse && tt.atDial && !slices.Contains(dl.addresses(), net.JoinHostPort(resolver[tt.host][0], "443")):
					t.Errorf("dial (allow_private %v): dialled %v, want the resolved %s", allow, dl.addresses(), resolver[tt.host][0])
				}
				if refuse && re != nil && !strings.Contains(re.Error(), "refused") {
					t.Errorf("refusal %q", re)
				}
			}
		})
	}
}

func TestGuardControl(t *testing.T) {
	g := newGuard(false, &fakeResolver{}, (&fakeDialer{}).dial)
	gp := newGuard(true, &fakeResolver{}, (&fakeDialer{}).dial)
	for _, tt := range []struct {
		addr          string
		strict, allow bool // allowed by a strict guard, by one allowing private addresses
	}{
		{"127.0.0.1:80", false, true},
		{"[::1]:80", false, true},
		{"[::ffff:127.0.0.1]:80", false, true},
		{"10.0.0.1:443", false, true},
		{"169.254.169.254:80", false, false},
		{"[fd00:ec2::254]:80", false, false},
		{"[64:ff9b::a9fe:a9fe]:80", false, false},
		{"93.184.215.14:443", true, true},
		{"[2606:4700:4700::1111]:443", true, true},
	} {
		if err := g.control("tcp", tt.addr, nil); (err == nil) != tt.strict {
			t.Errorf("strict control(%s) = %v, want allowed %v", tt.addr, err, tt.strict)
		}
		if err := gp.control("tcp", tt.addr, nil); (err == nil) != tt.allow {
			t.Errorf("allow_private control(%s) = %v, want allowed %v", tt.addr, err, tt.allow)
		}
	}
}

// TestGuardRebinding: a name whose answer changes between two connections
// (public, then loopback) is judged on each: the first connection is made,
// the second refused, through the delivery client.
func TestGuardRebinding(t *testing.T) {
	res := &fakeResolver{answers: map[string][][]string{
		"rebind.example.test": {{"93.184.215.14"}, {"127.0.0.1"}},
	}}
	dl := &fakeDialer{serve: true}
	c := newClient(5*time.Second, newGuard(false, res, dl.dial))
	resp, err := c.Get("http://rebind.example.test/hook")
	if err != nil {
		t.Fatalf("first request (public answer): %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	_, err = c.Get("http://rebind.example.test/hook") // a new connection: the server closed the first
	var re *RefusedError
	if !errors.As(err, &re) || re.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("second request (rebound to loopback): %v, want refused", err)
	}
	if got := dl.addresses(); !slices.Equal(got, []string{"93.184.215.14:80"}) {
		t.Fatalf("dialled %v, want the public address once", got)
	}
	if got := res.asked; len(got) != 2 {
		t.Fatalf("resolved %v, want the name resolved for each connection", got)
	}
}

// TestRegisterGuarded: the guard is on by default; allow_private takes
// the admin scope; metadata addresses are refused even with it.
func TestRegisterGuarded(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tt := range []struct {
		name   string
		scopes string // of the caller; "": no principal (a process without auth)
		body   map[string]any
		code   int
		field  string
	}{
		{"loopback", "", map[string]any{"url": "http://127.0.0.1:1/hook"}, 400, "url"},
		{"localhost", "", map[string]any{"url": "http://localhost:1/hook"}, 400, "url"},
		{"ipv6 loopback", "", map[string]any{"url": "http://[::1]:1/hook"}, 400, "url"},
		{"mapped", "", map[string]any{"url": "http://[::ffff:127.0.0.1]:1/hook"}, 400, "url"},
		{"decimal", "", map[string]any{"url": "http://2130706433:1/hook"}, 400, "url"},
		{"octal", "", map[string]any{"url": "http://0177.0.0.1:1/hook"}, 400, "url"},
		{"hex", "", map[string]any{"url": "http://0x7f.1:1/hook"}, 400, "url"},
		{"metadata", "", map[string]any{"url": "http://169.254.169.254/latest/meta-data"}, 400, "url"},
		{"metadata name", "", map[string]any{"url": "http://metadata.google.internal/computeMetadata/v1/"}, 400, "url"},
		{"metadata allowed private", "", map[string]any{"url": "http://169.254.169.254/", "allow_private": true}, 400, "url"},
		{"metadata admin", "admin", map[string]any{"url": "http://[fd00:ec2::254]/", "allow_private": true}, 400, "url"},
		{"octal allowed private", "admin", map[string]any{"url": "http://0177.0.0.1:1/hook", "allow_private": true}, 400, "url"},
		{"allow_private without admin", "webhooks", map[string]any{"url": "http://127.0.0.1:1/hook", "allow_private": true}, 403, "allow_private"},
		{"allow_private by an admin", "admin", map[string]any{"url": "http://127.0.0.1:1/hook", "allow_private": true}, 201, ""},
		{"allow_private without auth", "", map[string]any{"url": "http://[::1]:1/hook", "allow_private": true}, 201, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.body["secret"] = secret
			code, body := e.doAs(tt.scopes, "POST", "/v1/webhooks", tt.body)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %s", code, tt.code, body)
			}
			if tt.field != "" && !strings.Contains(string(body), `"field":"`+tt.field+`"`) {
				t.Fatalf("the error does not name %s: %s", tt.field, body)
			}
			if code == 201 && !strings.Contains(string(body), `"allow_private":true`) {
				t.Fatalf("the registration does not show allow_private: %s", body)
			}
		})
	}
	// The process-wide opt-out (local development) allows private targets
	// without the field, never metadata.
	dev := newEnv(t, Config{AllowPrivate: true})
	if code, body := dev.do("POST", "/v1/webhooks", map[string]any{"url": "http://127.0.0.1:1/hook", "secret": secret}); code != 201 {
		t.Fatalf("with --webhook-allow-private: %d %s", code, body)
	}
	if code, body := dev.do("POST", "/v1/webhooks", map[string]any{"url": "http://169.254.169.254/", "secret": secret}); code != 400 {
		t.Fatalf("metadata with --webhook-allow-private: %d %s", code, body)
	}
}

// TestDialGuardedInDispatcher: a loopback registration without
// allow_private (stored by a version whose guard was off) is refused when
// its batch is dialled: one attempt, the refusal in the failure list, and
// nothing reaches the receiver. The same target with allow_private is
// delivered to. A redirect is not followed.
func TestDialGuardedInDispatcher(t *testing.T) {
	e := newEnv(t, Config{MaxAttempts: 3, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Millisecond})
	rcv := newReceiver(t, secret)
	id := newID("wh_")
	doc := fmt.Sprintf(`{"id":%q,"url":%q,"filter":"","secret":%q,"batch_size":10,"max_wait_ms":0,"created_at":"2026-01-01T00:00:00Z"}`, id, rcv.srv.URL+"/old", secret)
	if err := e.reg.Put(t.Context(), collWebhooks, id, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stored registration live", func() bool { return e.live(id) })
	e.d.Deliver([]event.Record{rec("g1", "Spain", 20)}, nil)
	eventually(t, "the refusal in the failure list", func() bool { return len(e.failures(id)) == 1 })
	f := e.failures(id)[0]
	if f.Attempts != 1 || !strings.Contains(f.Reason, "refused") || !strings.Contains(f.Reason, "loopback") {
		t.Fatalf("failure %+v: want one attempt, refused as loopback", f)
	}
	if n, _, _ := rcv.snapshot(); n != 0 {
		t.Fatalf("the receiver got %d requests", n)
	}
	e.do("DELETE", "/v1/webhooks/"+id, nil)

	ok := e.register(map[string]any{"url": rcv.srv.URL + "/new", "max_wait_ms": 0}) // allow_private
	e.d.Deliver([]event.Record{rec("g2", "Spain", 20)}, nil)
	eventually(t, "delivery with allow_private", func() bool { return slices.Contains(rcv.received(), "g2") })
	e.do("DELETE", "/v1/webhooks/"+ok.ID, nil)

	var hits int
	var mu sync.Mutex
	final := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
	}))
	defer final.Close()
	redirect := httptest.NewServer(http.RedirectHandler(final.URL+"/elsewhere", http.StatusTemporaryRedirect))
	defer redirect.Close()
	w := e.register(map[string]any{"url": redirect.URL, "max_wait_ms": 0})
	e.d.Deliver([]event.Record{rec("g3", "Spain", 20)}, nil)
	eventually(t, "the redirect in the failure list", func() bool { return len(e.failures(w.ID)) == 1 })
	if f := e.failures(w.ID)[0]; f.Attempts != 1 || !strings.Contains(f.Reason, "307") {
		t.Fatalf("failure %+v: want one attempt and the 307", f)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 {
		t.Fatalf("the redirect was followed: %d requests at its target", hits)
	}
}
