package sandbox_test

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/scrapethis/scrapethis/sandbox"
)

// serveOn serves body over HTTP on addr ("127.0.0.1:0", say) and returns
// its port.
func serveOn(t *testing.T, network, addr, body string) int {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) })}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-served })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestHostNetworkGuardsThePlatform: with the host's network, a job cannot
// connect to the platform's ports on 127.0.0.1, ::1 or the host's other
// addresses (on a host whose Postgres trusts local connections, that
// would be a takeover), while the host's other services (a demo site) stay
// reachable, and so do the platform's ports for the host's own processes.
func TestHostNetworkGuardsThePlatform(t *testing.T) {
	t.Parallel()
	plat := serveOn(t, "tcp4", "127.0.0.1:0", "platform")
	serveOn(t, "tcp6", fmt.Sprintf("[::1]:%d", plat), "platform6")
	site := serveOn(t, "tcp4", "127.0.0.1:0", "site")
	// A uid range of its own: its rules are this test's, removed after it.
	// Its ends differ in more than the low byte (a range compared in host
	// byte order would match nothing).
	const first, last = 209000, 209999
	l := newLauncher(t, func(c *sandbox.Config) {
		c.UIDFirst, c.UIDLast = first, last
		c.PlatformPorts = []uint16{uint16(plat)}
		c.NetworkDeny = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	t.Cleanup(func() { dropGuardRules(t, fmt.Sprintf("scrapethis-uids:%d-%d", first, last)) })

	targets := []string{fmt.Sprintf("127.0.0.1:%d", plat), fmt.Sprintf("::1:%d", plat), fmt.Sprintf("127.0.0.1:%d", site),
		fmt.Sprintf("%s:%d", hostIPv4(t), plat)}
	out, res := runPython(t, l, probe, targets...)
	if res.Err != nil {
		t.Fatalf("probe: %v\n%s", res.Err, out)
	}
	got := results(out)
	for _, target := range targets {
		r, ok := got[target]
		switch {
		case !ok:
			t.Errorf("%s: not probed:\n%s", target, out)
		case strings.HasSuffix(target, fmt.Sprintf(":%d", site)):
			if r != "ok site" {
				t.Errorf("the host's other service %s: %q, want it reachable", target, r)
			}
		case strings.HasPrefix(r, "ok"):
			t.Errorf("the platform's port %s reached from a job: %q", target, r)
		}
	}
	// The host's own processes still reach it.
	res2, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", plat))
	if err != nil {
		t.Fatalf("the platform's port from the host: %v", err)
	}
	res2.Body.Close()
}

// dropGuardRules deletes the guard rules tagged tag.
func dropGuardRules(t *testing.T, tag string) {
	c, err := nftables.New()
	if err != nil {
		t.Error(err)
		return
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: "scrapethis"}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: "output", Table: tbl})
	if err != nil {
		t.Error(err)
		return
	}
	for _, r := range rules {
		if string(r.UserData) == tag {
			c.DelRule(r)
		}
	}
	if err := c.Flush(); err != nil {
		t.Error(err)
	}
}
