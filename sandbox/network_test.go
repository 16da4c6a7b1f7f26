package sandbox_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/sandbox"
)

// remoteServerEnv makes the test binary a "remote" HTTP server (see
// TestMain): started in a network namespace of its own, it answers
// "remote" on :80 until its stdin closes.
const remoteServerEnv = "SANDBOX_TEST_REMOTE_SERVER"

func serveRemote() {
	ln, err := net.Listen("tcp4", ":80")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "remote")
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	<-done
	os.Exit(0)
}

// The remote namespace: 10.250.0.1 (host) <-> 10.250.0.2 (remote), and
// 10.250.1.2 on the remote too, routed via it: denied in the tests.
var (
	remoteAddr = netip.MustParseAddr("10.250.0.2")
	deniedAddr = netip.MustParseAddr("10.250.1.2")
	deniedNet  = netip.MustParsePrefix("10.250.1.0/24")
)

const remoteLink = "strm0" // not the jobs' prefix

// startRemote starts the remote server in a new network namespace wired to
// the host; the test's end removes it.
func startRemote(t *testing.T) {
	t.Helper()
	if l, err := netlink.LinkByName(remoteLink); err == nil {
		netlink.LinkDel(l) // left by a killed run
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{remoteServerEnv + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
		if l, err := netlink.LinkByName(remoteLink); err == nil {
			netlink.LinkDel(l)
		}
	})
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: remoteLink}, PeerName: "eth0", PeerNamespace: netlink.NsPid(cmd.Process.Pid)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	host, err := netlink.LinkByName(remoteLink)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netlink.AddrAdd(host, mustAddr("10.250.0.1/30")))
	must(netlink.LinkSetUp(host))
	must(netlink.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipnet(deniedNet), Gw: remoteAddr.AsSlice()}))
	h, err := netlink.NewHandleAt(mustNS(t, cmd.Process.Pid), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "eth0" {
			must(h.AddrAdd(l, mustAddr("10.250.0.2/30")))
			must(h.AddrAdd(l, mustAddr("10.250.1.2/32")))
		}
		must(h.LinkSetUp(l))
		if name == "eth0" {
			must(h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.250.0.1")}))
		}
	}
	client := http.Client{Timeout: time.Second}
	testenv.WaitFor(t, 10*time.Second, "the remote server", func() bool {
		resp, err := client.Get("http://10.250.0.2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func mustNS(t *testing.T, pid int) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// isolatedLauncher is a launcher with the isolated network that denies
// deniedNet.
func isolatedLauncher(t *testing.T) *sandbox.Launcher {
	t.Helper()
	return newLauncher(t, func(c *sandbox.Config) {
		c.Network = sandbox.NetworkIsolated
		c.NetworkDeny = []netip.Prefix{deniedNet, netip.MustParsePrefix("127.0.0.1/32")}
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
		if !a.IP.IsLoopback() && !strings.HasPrefix(a.Label, "stj") && !a.IP.Equal(net.ParseIP("10.250.0.1")) {
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
	l := isolatedLauncher(t)
	if err := l.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	startRemote(t)
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

	remote := remoteAddr.String() + ":80"
	denied := deniedAddr.String() + ":80"
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

// assertNoJobLinks: every job's veth pair is gone once its Wait returns.
func assertNoJobLinks(t *testing.T) {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "stj") {
			t.Errorf("link %s is left behind", l.Attrs().Name)
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && strings.HasPrefix(r.Dst.String(), "10.213.") {
			t.Errorf("route %s is left behind", r.Dst)
		}
	}
}
