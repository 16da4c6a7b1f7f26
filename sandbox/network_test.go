package sandbox_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/sandbox"
)

// remote starts a remote network namespace (see testenv.RemoteNet)
// serving "remote" over HTTP on port 80.
func remote(t *testing.T) *testenv.RemoteNet {
	t.Helper()
	r := testenv.StartRemoteNet(t)
	ln := r.Listen(t, 80)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "remote") })}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-served })
	return r
}

// isolatedLauncher is a launcher with the isolated network that denies
// deny and 127.0.0.1 (as the worker's DATABASE_URL would).
func isolatedLauncher(t *testing.T, deny ...netip.Prefix) *sandbox.Launcher {
	t.Helper()
	return newLauncher(t, func(c *sandbox.Config) {
		c.Network = sandbox.NetworkIsolated
		c.NetworkDeny = append(deny, netip.MustParsePrefix("127.0.0.1/32"))
	})
}

// probe is a Python spider that tries each of its arguments (HOST:PORT)
// at once and prints "HOST:PORT ok BODY" or "HOST:PORT fail ERROR".
const probe = `#!/usr/bin/python3
import os, socket, sys, threading
if os.getuid() == 0:
    sys.exit("refusing to run as root")
out = {}
def try_(target):
    host, port = target.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.settimeout(2)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        body = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            body += b
        out[target] = "ok " + body.decode("latin1").split("\r\n\r\n", 1)[-1]
    except Exception as e:
        out[target] = "fail " + type(e).__name__
ts = [threading.Thread(target=try_, args=(a,)) for a in sys.argv[1:]]
for t in ts: t.start()
for t in ts: t.join()
for a in sys.argv[1:]:
    print(a, out[a])
`

// runPython runs a Python spider in a sandbox and returns its output.
func runPython(t *testing.T, l *sandbox.Launcher, body string, args ...string) (string, sandbox.Result) {
	t.Helper()
	dir := t.TempDir()
	file := dir + "/spider.py"
	if err := os.WriteFile(file, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	path := sandbox.CodeDir + "/spider.py"
	p, err := l.Policy("test-net", []sandbox.Mount{{Source: file, Target: path}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	proc, err := l.Start(p, sandbox.Command{Path: path, Args: append([]string{path}, args...), Env: []string{"PATH=/usr/bin:/bin"}, Stdout: outW, Stderr: os.Stderr})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(outR)
	return string(b), proc.Wait()
}

// results parses probe's output: target -> "ok BODY" or "fail ERROR".
func results(out string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if target, res, ok := strings.Cut(sc.Text(), " "); ok {
			m[target] = res
		}
	}
	return m
}

// hostIPv4 is an IPv4 address of the host's own that is not loopback.
func hostIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() && !strings.HasPrefix(a.Label, "stj") && !strings.HasPrefix(a.Label, "strm") {
			return a.IP.String()
		}
	}
	t.Skip("the host has no IPv4 address but loopback")
	return ""
}

// TestIsolatedNetworkReach: an isolated job reaches a server off the host
// and nothing of the host's own (its loopback, its addresses, the veth's
// host end), nor the platform's Postgres, nor a denied address.
func TestIsolatedNetworkReach(t *testing.T) {
	rn := remote(t)
	l := isolatedLauncher(t, rn.DeniedNet)
	if err := l.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A host server on every address: 127.0.0.1, the host's IPs and the
	// veth host ends all reach it, from the host.
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "host") })}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-served }()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	hostIP := hostIPv4(t)

	remote := rn.Addr.String() + ":80"
	denied := rn.Denied.String() + ":80"
	loop := "127.0.0.1:" + port
	mine := hostIP + ":" + port
	pg := "127.0.0.1:5432"
	pgHost := hostIP + ":5432"
	// The job's gateway, the host end of its veth: its .1.
	gateway := "GATEWAY:" + port
	spider := strings.Replace(probe, "ts = [", `gw = open("/proc/net/route").read().split("\n")[1].split()[2]
gw = socket.inet_ntoa(bytes.fromhex(gw)[::-1])
sys.argv = [a.replace("GATEWAY", gw) for a in sys.argv]
print("gateway", gw)
ts = [`, 1)
	out, res := runPython(t, l, spider, remote, denied, loop, mine, pg, pgHost, gateway)
	if res.Err != nil {
		t.Fatalf("spider: %v\n%s", res.Err, out)
	}
	t.Logf("the job's view:\n%s", out)
	got := results(out)
	gw := got["gateway"]
	if !strings.HasPrefix(gw, "10.213.") {
		t.Fatalf("gateway %q is not in the jobs' range:\n%s", gw, out)
	}
	gateway = gw + ":" + port
	if got[remote] != "ok remote" {
		t.Errorf("the remote server: %q, want it reached\n%s", got[remote], out)
	}
	for _, target := range []string{denied, loop, mine, pg, pgHost, gateway} {
		if !strings.HasPrefix(got[target], "fail") {
			t.Errorf("%s: %q, want it unreachable\n%s", target, got[target], out)
		}
	}
	// The host reaches its own server on each of those (it is up).
	c := http.Client{Timeout: time.Second}
	for _, target := range []string{loop, mine} {
		resp, err := c.Get("http://" + target + "/")
		if err != nil {
			t.Fatalf("the host server at %s: %v", target, err)
		}
		resp.Body.Close()
	}
	assertNoJobLinks(t)
}

// assertNoJobLinks: every ended job's veth pair, address and route go with
// its network namespace, which the kernel tears down in the background.
func assertNoJobLinks(t *testing.T) {
	t.Helper()
	var left []string
	gone := func() bool {
		left = nil
		// A dump that links changed under (other tests' jobs) is read
		// again at the next poll.
		links, err := netlink.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			left = append(left, "(links changed while listed)")
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "stj") {
				left = append(left, "link "+l.Attrs().Name)
			}
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			left = append(left, "(routes changed while listed)")
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.Dst != nil && strings.HasPrefix(r.Dst.String(), "10.213.") {
				left = append(left, "route "+r.Dst.String())
			}
		}
		return len(left) == 0
	}
	t.Cleanup(func() {
		if len(left) > 0 {
			t.Logf("left behind: %v", left)
		}
	})
	testenv.WaitFor(t, 10*time.Second, "the ended jobs' veth pairs, addresses and routes to go", gone)
}

// TestIsolatedJobsCannotReachEachOther: a job listening on its own address
// is reachable from itself, never from another job running at once.
func TestIsolatedJobsCannotReachEachOther(t *testing.T) {
	rn := remote(t)
	l := isolatedLauncher(t, rn.DeniedNet)
	const listener = `#!/usr/bin/python3
import os, socket, sys
if os.getuid() == 0:
    sys.exit("refusing to run as root")
s = socket.socket()
s.bind(("0.0.0.0", 8000))
s.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((sys.argv[1], 80))
ip = u.getsockname()[0]
socket.create_connection((ip, 8000), timeout=2).close()
s.accept()[0].close()  # its own connection
print("listening", ip, flush=True)
c, addr = s.accept()
print("accepted", addr, flush=True)
`
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/listener.py", []byte(listener), 0o755); err != nil {
		t.Fatal(err)
	}
	path := sandbox.CodeDir + "/listener.py"
	p, err := l.Policy("test-net-a", []sandbox.Mount{{Source: dir + "/listener.py", Target: path}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	a, err := l.Start(p, sandbox.Command{Path: path, Args: []string{path, rn.Addr.String()}, Env: []string{"PATH=/usr/bin:/bin"}, Stdout: outW, Stderr: os.Stderr})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(outR)
	if !lines.Scan() {
		a.Wait()
		t.Fatal("the listening job ended without listening")
	}
	ip, ok := strings.CutPrefix(lines.Text(), "listening ")
	if !ok {
		t.Fatalf("the listening job said %q", lines.Text())
	}
	target := ip + ":8000"
	out, res := runPython(t, l, probe, target, rn.Addr.String()+":80")
	if res.Err != nil {
		t.Fatalf("the other job: %v\n%s", res.Err, out)
	}
	t.Logf("the other job's view:\n%s", out)
	got := results(out)
	if got[rn.Addr.String()+":80"] != "ok remote" {
		t.Errorf("the other job cannot reach the remote server either:\n%s", out)
	}
	if !strings.HasPrefix(got[target], "fail") {
		t.Errorf("a job reached another job's %s: %q", target, got[target])
	}
	syscall.Kill(-a.Pid(), syscall.SIGTERM)
	a.Wait()
	rest, _ := io.ReadAll(outR)
	if strings.Contains(string(rest), "accepted") {
		t.Errorf("the listening job accepted a connection from the other: %s", rest)
	}
	assertNoJobLinks(t)
}

// TestIsolatedStaleLink: a veth pair and address left by a worker that
// died (here: made by hand for the job's only uid) do not stop the next
// job, and are gone with it.
func TestIsolatedStaleLink(t *testing.T) {
	rn := remote(t)
	const uid = 200777
	l := newLauncher(t, func(c *sandbox.Config) {
		c.Network = sandbox.NetworkIsolated
		c.NetworkDeny = []netip.Prefix{rn.DeniedNet}
		c.UIDFirst, c.UIDLast = uid, uid
	})
	name := "stj" + strconv.Itoa(uid)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "stjstale"}); err != nil {
		t.Fatal(err)
	}
	stale, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l) // a failed test's
		}
	})
	// uid 200777 is /30 number 200777 % 16384 of 10.213.0.0/16.
	n := 4 * (uid % 16384)
	gw := fmt.Sprintf("10.213.%d.%d", n>>8, n&255+1)
	a, _ := netlink.ParseAddr(gw + "/30")
	if err := netlink.AddrAdd(stale, a); err != nil {
		t.Fatal(err)
	}
	netlink.LinkSetUp(stale)
	out, res := runPython(t, l, probe, rn.Addr.String()+":80")
	if res.Err != nil {
		t.Fatalf("spider: %v\n%s", res.Err, out)
	}
	if got := results(out)[rn.Addr.String()+":80"]; got != "ok remote" {
		t.Errorf("after a stale link: %q", got)
	}
	assertNoJobLinks(t)
}
