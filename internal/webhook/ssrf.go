package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The private-address guard. A webhook's URL is chosen by whoever may call
// the API, and skyjoin connects to it from inside the network it runs in,
// so by default a delivery may only reach a public address. The guard
// decides in two places:
//
//   - at registration (checkTarget), what the URL alone decides: an IP
//     literal and what it embeds, a host in a non-standard numeric form,
//     names that are never public (localhost, .internal, metadata names);
//   - at dial time (guard.DialContext), for every connection: the host is
//     resolved here, every address it resolves to is judged, and only
//     those addresses are dialled, so a name that resolves to a private
//     address, or that changes its answer between registration and
//     delivery (DNS rebinding), is refused. The dialer's Control hook
//     judges the address once more, right before connect(2).
//
// Redirects are never followed and no proxy is used, so the address judged
// is always the address connected to.

// class is how far an address or host is from public.
type class uint8

const (
	classPublic   class = iota
	classPrivate        // refused unless private targets are allowed
	classMetadata       // a cloud metadata service: always refused
	classInvalid        // a host in a non-standard or invalid form: always refused
)

// verdict is the judgement of an address or host that is not public.
type verdict struct {
	class class
	what  string // "is loopback", "embeds the IPv4 address 127.0.0.1 (NAT64), which is loopback"...
}

func (v verdict) refused(allowPrivate bool) bool {
	return v.class == classMetadata || v.class == classInvalid || (v.class == classPrivate && !allowPrivate)
}

// namedPrefix is a prefix of address space and what it is.
type namedPrefix struct {
	p    netip.Prefix
	what string
}

// prefixes of non-public IPv4 space.
var private4 = []namedPrefix{
	{netip.MustParsePrefix("0.0.0.0/8"), "in 0.0.0.0/8 (this host, unspecified)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private (10.0.0.0/8)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (100.64.0.0/10, carrier-grade NAT)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.0.0/16)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private (172.16.0.0/12)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation (192.0.2.0/24)"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast (192.88.99.0/24)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private (192.168.0.0/16)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation (198.51.100.0/24)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation (203.0.113.0/24)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (240.0.0.0/4, broadcast included)"},
}

// prefixes of non-public IPv6 space that embed no IPv4 address.
var private6 = []namedPrefix{
	{netip.MustParsePrefix("100::/64"), "discard-only (100::/64)"},
	{netip.MustParsePrefix("2001:2::/48"), "benchmarking (2001:2::/48)"},
	{netip.MustParsePrefix("2001:10::/28"), "ORCHID (2001:10::/28)"},
	{netip.MustParsePrefix("2001:20::/28"), "ORCHIDv2 (2001:20::/28)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation (2001:db8::/32)"},
	{netip.MustParsePrefix("3fff::/20"), "documentation (3fff::/20)"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (fc00::/7, private)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local (fe80::/10)"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (fec0::/10, deprecated)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// metadataAddrs are the addresses of cloud metadata services, refused even
// for a webhook that may reach private addresses: they hand out the
// credentials of the machine.
var metadataAddrs = []netip.Prefix{
	netip.MustParsePrefix("169.254.169.0/24"),   // AWS, Google Cloud, Azure, Oracle, DigitalOcean... (169.254.169.254) and AWS's other link-local services
	netip.MustParsePrefix("169.254.170.0/24"),   // AWS ECS task metadata (169.254.170.2), EKS pod identity (169.254.170.23)
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud
	netip.MustParsePrefix("192.0.0.192/32"),     // Oracle Cloud (legacy)
	netip.MustParsePrefix("fd00:ec2::/112"),     // AWS IMDS over IPv6 (fd00:ec2::254), EKS pod identity (fd00:ec2::23)
	netip.MustParsePrefix("fd20:ce::/112"),      // Google Cloud metadata over IPv6 (fd20:ce::254)
}

// metadataNames are host names of cloud metadata services.
var metadataNames = map[string]bool{
	"metadata":                   true, // Google Cloud, through the search domain
	"metadata.google.internal":   true,
	"metadata.goog":              true,
	"instance-data":              true, // AWS
	"instance-data.ec2.internal": true,
	"metadata.azure.com":         true,
	"metadata.tencentyun.com":    true,
}

// privateSuffixes are domains whose names are never public.
var privateSuffixes = []string{
	"localhost", // RFC 6761: loopback
	"local",     // multicast DNS (RFC 6762)
	"internal",  // reserved for private use (ICANN, 2024)
	"home.arpa", // home networks (RFC 8375)
	// Not delegated in the public DNS, common inside networks (home and
	// corp are withheld by ICANN for name collisions).
	"localdomain", "home", "corp", "lan", "intranet",
}

// Prefixes of IPv6 addresses that embed an IPv4 address.
var (
	v4compat  = netip.MustParsePrefix("::/96")           // IPv4-compatible (deprecated)
	v4mapped  = netip.MustParsePrefix("::ffff:0:0/96")   // IPv4-mapped
	v4xlat    = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (SIIT, RFC 2765)
	nat64     = netip.MustParsePrefix("64:ff9b::/96")    // NAT64 well-known prefix (RFC 6052)
	nat64Loc  = netip.MustParsePrefix("64:ff9b:1::/48")  // NAT64 local-use prefix (RFC 8215)
	sixToFour = netip.MustParsePrefix("2002::/16")       // 6to4 (RFC 3056)
	teredo    = netip.MustParsePrefix("2001::/32")       // Teredo (RFC 4380)
	global6   = netip.MustParsePrefix("2000::/3")        // where public IPv6 unicast addresses are
)

func v4at(b [16]byte, i ...int) netip.Addr {
	return netip.AddrFrom4([4]byte{b[i[0]], b[i[1]], b[i[2]], b[i[3]]})
}

// embedded returns the IPv4 addresses an IPv6 address carries, the name
// of the form, and, for a form that is never public whatever it carries,
// why; nil if it carries none.
func embedded(a netip.Addr) (v4s []netip.Addr, form, never string) {
	b := a.As16()
	switch {
	case v4mapped.Contains(a):
		return []netip.Addr{a.Unmap()}, "IPv4-mapped IPv6", ""
	case v4xlat.Contains(a):
		return []netip.Addr{v4at(b, 12, 13, 14, 15)}, "IPv4-translated IPv6", "is an IPv4-translated IPv6 address (::ffff:0:0:0/96), not routed"
	case v4compat.Contains(a):
		return []netip.Addr{v4at(b, 12, 13, 14, 15)}, "IPv4-compatible IPv6", "is an IPv4-compatible IPv6 address (::/96, deprecated), not routed"
	case nat64.Contains(a):
		return []netip.Addr{v4at(b, 12, 13, 14, 15)}, "NAT64", ""
	case nat64Loc.Contains(a):
		// The site chooses the prefix length (/48 to /96): every place
		// RFC 6052 may put the IPv4 address (skipping bits 64-71).
		return []netip.Addr{
			v4at(b, 6, 7, 9, 10),    // /48
			v4at(b, 7, 9, 10, 11),   // /56
			v4at(b, 9, 10, 11, 12),  // /64
			v4at(b, 12, 13, 14, 15), // /96
		}, "local-use NAT64", "is local-use NAT64 (64:ff9b:1::/48), translated by the site's own gateway"
	case sixToFour.Contains(a):
		return []netip.Addr{v4at(b, 2, 3, 4, 5)}, "6to4", ""
	case teredo.Contains(a):
		client := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		return []netip.Addr{client, v4at(b, 4, 5, 6, 7)}, "Teredo", ""
	}
	return nil, "", ""
}

// judgeAddr says whether a may be a webhook target; ok is true for a
// public address.
func judgeAddr(a netip.Addr) (v verdict, ok bool) {
	a = a.WithZone("")
	if !a.IsValid() {
		return verdict{classInvalid, "is not an IP address"}, false
	}
	for _, p := range metadataAddrs {
		if p.Contains(a) {
			return verdict{classMetadata, "is a cloud metadata address"}, false
		}
	}
	if a.Is4() {
		for _, p := range private4 {
			if p.p.Contains(a) {
				return verdict{classPrivate, "is " + p.what}, false
			}
		}
		return verdict{}, true
	}
	switch {
	case a.IsUnspecified():
		return verdict{classPrivate, "is unspecified (::)"}, false
	case a.IsLoopback():
		return verdict{classPrivate, "is loopback"}, false
	}
	if v4s, form, never := embedded(a); v4s != nil {
		// The worst of what it carries: metadata before private.
		var worst verdict
		for _, v4 := range v4s {
			if ev, ok := judgeAddr(v4); !ok && ev.class > worst.class {
				worst = ev
				worst.what = fmt.Sprintf("embeds the IPv4 address %s (%s), which %s", v4, form, ev.what)
			}
		}
		switch {
		case worst.class != classPublic:
			return worst, false
		case never != "":
			return verdict{classPrivate, never}, false
		}
		return verdict{}, true
	}
	for _, p := range private6 {
		if p.p.Contains(a) {
			return verdict{classPrivate, "is " + p.what}, false
		}
	}
	if !global6.Contains(a) {
		return verdict{classPrivate, "is outside the global unicast space (2000::/3)"}, false
	}
	return verdict{}, true
}

// judgeHost judges a URL's host (u.Hostname()) as far as it can without
// resolving it: ok is true for a public IP literal and for a name that may
// be public, which is resolved and judged at dial time.
func judgeHost(host string) (v verdict, ok bool) {
	if host == "" {
		return verdict{classInvalid, "is empty"}, false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return judgeAddr(a)
	}
	for _, r := range host {
		if r >= 0x80 {
			return verdict{classInvalid, "is not ASCII: give an internationalised name in its punycode (xn--) form"}, false
		}
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if endsInNumber(h) {
		// WHATWG URL parsers, browsers and the C resolver read such a
		// host as an IPv4 address (2130706433, 0177.0.0.1, 0x7f.1,
		// 127.1); Go's resolver would look it up as a name. Ambiguous:
		// refused whatever it denotes.
		if a, ok := parseLegacyIPv4(h); ok {
			return verdict{classInvalid, fmt.Sprintf("is the IPv4 address %s in a non-standard form (decimal, octal or hexadecimal parts, or fewer than four): write it in dotted decimal", a)}, false
		}
		return verdict{classInvalid, "ends in a number but is not an IPv4 address"}, false
	}
	if metadataNames[h] {
		return verdict{classMetadata, "is a cloud metadata name"}, false
	}
	for _, s := range privateSuffixes {
		if h == s || strings.HasSuffix(h, "."+s) {
			what := "is under ." + s + ", which is never public"
			if s == "localhost" {
				what = "is loopback (localhost)"
			}
			return verdict{classPrivate, what}, false
		}
	}
	if !strings.Contains(h, ".") {
		return verdict{classPrivate, "is a single-label name, resolved through the local search domains"}, false
	}
	return verdict{}, true
}

// endsInNumber reports whether the last label of host is a number, as the
// WHATWG URL standard's "ends in a number" does: all decimal digits, or 0x
// and hexadecimal digits.
func endsInNumber(host string) bool {
	labels := strings.Split(host, ".")
	last := labels[len(labels)-1]
	if last == "" && len(labels) > 1 {
		last = labels[len(labels)-2]
	}
	if last == "" {
		return false
	}
	if strings.Trim(last, "0123456789") == "" {
		return true
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		return strings.Trim(last[2:], "0123456789abcdefABCDEF") == ""
	}
	return false
}

// parseLegacyIPv4 parses host as the WHATWG URL standard's IPv4 parser
// does: one to four parts, each decimal, octal (leading 0) or hexadecimal
// (0x), the last filling the remaining bytes.
func parseLegacyIPv4(host string) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if parts[len(parts)-1] == "" && len(parts) > 1 {
		parts = parts[:len(parts)-1]
	}
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" {
			return netip.Addr{}, false
		}
		base := 10
		switch {
		case len(p) >= 2 && (p[:2] == "0x" || p[:2] == "0X"):
			p, base = p[2:], 16
			if p == "" {
				p = "0"
			}
		case len(p) >= 2 && p[0] == '0':
			p, base = p[1:], 8
		}
		n, err := strconv.ParseUint(p, base, 64)
		if err != nil || n > 1<<32 {
			return netip.Addr{}, false
		}
		nums[i] = n
	}
	var v uint64
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, false
		}
		v |= n << (8 * (3 - i))
	}
	last := nums[len(nums)-1]
	if last >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, false
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// checkTarget returns what is wrong with a webhook's host as far as the
// URL alone tells, or "": the static half of the guard.
func checkTarget(host string, allowPrivate bool) string {
	v, ok := judgeHost(host)
	if ok || !v.refused(allowPrivate) {
		return ""
	}
	msg := fmt.Sprintf("host %s %s", host, v.what)
	switch v.class {
	case classMetadata:
		return msg + ": refused, even with allow_private"
	case classPrivate:
		return msg + ": not a public address; a webhook may reach private addresses only with \"allow_private\": true (admin scope)"
	}
	return msg
}

// RefusedError is a connection the guard refused.
type RefusedError struct {
	Host string     // the host as dialled
	Addr netip.Addr // the address refused; invalid when the host itself was
	What string
}

// Error names the host and why, not the address a name resolved to: the
// text is kept in the failure list, which every holder of the webhooks
// scope reads, and must not map the private network's names to addresses.
func (e *RefusedError) Error() string {
	if !e.Addr.IsValid() || e.Addr.String() == e.Host {
		return fmt.Sprintf("webhook target %s refused: it %s", e.Host, e.What)
	}
	return fmt.Sprintf("webhook target %s refused: it resolved to an address which %s", e.Host, e.What)
}

// Resolver resolves host names; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc connects to a literal address (ip:port).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// guard is the dial-time half: DialContext resolves, judges every address
// and dials only addresses it judged.
type guard struct {
	allowPrivate bool
	resolver     Resolver
	dial         DialFunc
}

// newGuard returns the guard of a client; nil resolver and dial are the
// system's resolver and a net.Dialer whose Control judges the address once
// more before connecting.
func newGuard(allowPrivate bool, resolver Resolver, dial DialFunc) *guard {
	g := &guard{allowPrivate: allowPrivate, resolver: resolver, dial: dial}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	if g.dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
		g.dial = d.DialContext
	}
	return g
}

// DialContext dials address (host:port) if every address host resolves to
// may be reached; it tries them in order.
func (g *guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("webhook target %s: %w", address, err)
	}
	if v, ok := judgeHost(host); !ok && v.refused(g.allowPrivate) {
		return nil, &RefusedError{Host: host, What: v.what}
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ipnet := "ip"
		switch network {
		case "tcp4":
			ipnet = "ip4"
		case "tcp6":
			ipnet = "ip6"
		}
		addrs, err = g.resolver.LookupNetIP(ctx, ipnet, host)
		if err != nil {
			return nil, fmt.Errorf("webhook target %s: resolve: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("webhook target %s: resolve: no address", host)
		}
	}
	// One address refused refuses the name: an answer that mixes public
	// and private addresses is not to be trusted.
	for _, a := range addrs {
		if v, ok := judgeAddr(a); !ok && v.refused(g.allowPrivate) {
			return nil, &RefusedError{Host: host, Addr: a, What: v.what}
		}
	}
	var errs []error
	for _, a := range addrs {
		c, err := g.dial(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// control judges the address a socket is about to connect to (the
// net.Dialer's Control hook).
func (g *guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook target %s: %w", address, err)
	}
	if v, ok := judgeAddr(ap.Addr()); !ok && v.refused(g.allowPrivate) {
		return &RefusedError{Host: ap.Addr().String(), Addr: ap.Addr(), What: v.what}
	}
	return nil
}

// newClient is the HTTP client of deliveries: it dials through g, follows
// no redirects (a 3xx is a failed delivery) and uses no proxy, so that the
// address g judged is the one connected to.
func newClient(timeout time.Duration, g *guard) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           g.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
