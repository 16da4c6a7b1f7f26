package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RemoteNet is a network namespace of its own, "off the host" as the
// sandbox's isolated network sees it: wired to the host by a veth pair
// (strmN, 10.250.2N.1/30 on the host, Addr = 10.250.2N.2 inside), with a
// second address, Denied = 10.250.2N+1.2, routed via it. Tests deny
// DeniedNet and reach Addr. Needs root.
type RemoteNet struct {
	ns        netns.NsHandle
	Addr      netip.Addr
	Denied    netip.Addr
	DeniedNet netip.Prefix
}

// StartRemoteNet makes one; the test's end removes it. Test binaries
// running at once each take a free strmN.
func StartRemoteNet(t testing.TB) *RemoteNet {
	t.Helper()
	ns, err := newNetns()
	if err != nil {
		t.Fatalf("remote network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	var host netlink.Link
	var slot int
	for slot = 0; slot < 64; slot++ {
		name := fmt.Sprintf("strm%d", slot)
		err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))})
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
		if host, err = netlink.LinkByName(name); err != nil {
			t.Fatal(err)
		}
		break
	}
	if host == nil {
		t.Fatal("no free strmN link name")
	}
	t.Cleanup(func() { netlink.LinkDel(host) })
	r := &RemoteNet{
		ns:        ns,
		Addr:      netip.AddrFrom4([4]byte{10, 250, byte(2 * slot), 2}),
		Denied:    netip.AddrFrom4([4]byte{10, 250, byte(2*slot + 1), 2}),
		DeniedNet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, byte(2*slot + 1), 0}), 24),
	}
	gw := netip.AddrFrom4([4]byte{10, 250, byte(2 * slot), 1})
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("remote network: %s: %v", what, err)
		}
	}
	must("host address", netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNet(gw, 30)}))
	must("host end up", netlink.LinkSetUp(host))
	must("route to the denied address", netlink.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNet(r.DeniedNet.Addr(), 24), Gw: r.Addr.AsSlice()}))
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	must("netlink inside", err)
	defer h.Close()
	lo, err := h.LinkByName("lo")
	must("lo", err)
	must("lo up", h.LinkSetUp(lo))
	eth, err := h.LinkByName("eth0")
	must("eth0", err)
	must("address", h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(r.Addr, 30)}))
	must("second address", h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(r.Denied, 32)}))
	must("eth0 up", h.LinkSetUp(eth))
	must("default route", h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}))
	return r
}

// Listen listens on every address of the remote namespace (port 0: any).
func (r *RemoteNet) Listen(t testing.TB, port int) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNetns(r.ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in the remote namespace: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// newNetns creates a network namespace without moving this process into it.
func newNetns() (ns netns.NsHandle, err error) {
	err = onThread(func(orig netns.NsHandle) error {
		ns, err = netns.New() // moves this thread into it
		if err != nil {
			return err
		}
		return netns.Set(orig)
	})
	return ns, err
}

// inNetns runs f on a thread in ns.
func inNetns(ns netns.NsHandle, f func() error) error {
	return onThread(func(orig netns.NsHandle) error {
		if err := netns.Set(ns); err != nil {
			return err
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			return err
		}
		return ferr
	})
}

// onThread runs f on a goroutine of its own, locked to its thread, passing
// it the thread's network namespace to return to. The thread is only
// unlocked (back in the pool) if it is back in that namespace; otherwise
// it ends with the goroutine.
func onThread(f func(orig netns.NsHandle) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		err = f(orig)
		if cur, cerr := netns.Get(); cerr == nil {
			if cur.Equal(orig) {
				runtime.UnlockOSThread()
			}
			cur.Close()
		}
		done <- err
	}()
	return <-done
}
