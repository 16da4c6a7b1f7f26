//go:build !sandboxinit

package sandbox

// The host's side of the isolated network (see network.go): left out of
// the small init binary (built with -tags sandboxinit), which never sets up
// a network itself.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// setupHostNetwork prepares the host for isolated jobs: IPv4 forwarding,
// the nftables table (created or updated under a lock, so that workers of
// one host share it), the jobs' resolv.conf. Its error names what the
// kernel lacks.
func setupHostNetwork(cfg Config, lockDir string, log *slog.Logger) (*hostNetwork, error) {
	hn := &hostNetwork{rng: cfg.networkRange()}
	if err := enableForwarding(log); err != nil {
		return nil, err
	}
	if err := withLock(filepath.Join(lockDir, ".nftables.lock"), func() error { return applyRules(hn.rng, cfg.NetworkDeny) }); err != nil {
		return nil, err
	}
	var why string
	hn.resolvConf, why = resolvConf(cfg.DNS, "/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
	if why != "" {
		log.Warn("isolated sandbox network: jobs cannot resolve names: " + why + "; set SCRAPETHIS_SANDBOX_DNS to nameservers off this host")
	}
	if routes, err := netlink.RouteGet(netip.MustParseAddr("1.1.1.1").AsSlice()); err == nil && len(routes) > 0 {
		if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil {
			hn.mtu = l.Attrs().MTU
		}
	}
	return hn, nil
}

func enableForwarding(log *slog.Logger) error {
	const f = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(f)
	if err != nil {
		return fmt.Errorf("the isolated sandbox network needs IPv4 forwarding (%s: %w)", f, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(f, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("the isolated sandbox network needs IPv4 forwarding, which cannot be turned on (%w)", err)
	}
	log.Info("isolated sandbox network: turned on IPv4 forwarding (net.ipv4.ip_forward=1) for the jobs' NAT")
	return nil
}

// withLock runs f holding an flock on path: workers of one host update the
// shared nftables table one at a time.
func withLock(path string, f func() error) error {
	lf, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("nftables lock: %w", err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("nftables lock: %w", err)
	}
	return f()
}

// applyRules creates or updates table inet scrapethis in one transaction:
// the sets keep the union of what every worker of the host asked for (job
// ranges, denied prefixes), the chains are rewritten (they are the same
// for every worker). No other table is touched.
func applyRules(rng netip.Prefix, deny []netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("the isolated sandbox network needs nf_tables (netlink: %w)", err)
	}
	defer c.CloseLasting()
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable}
	jobs := []netip.Prefix{rng}
	for name, list := range map[string]*[]netip.Prefix{"jobnets": &jobs, "deny": &deny} {
		if s, err := c.GetSetByName(t, name); err == nil {
			if els, err := c.GetSetElements(s); err == nil {
				*list = append(*list, rangesOf(els)...)
			}
		}
	}
	c.AddTable(t)
	sets := map[string]*nftables.Set{}
	for name, list := range map[string][]netip.Prefix{"jobnets": jobs, "deny": deny} {
		s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nftables set %s: %w", name, err)
		}
		c.FlushSet(s)
		if els := intervalElements(list); len(els) > 0 {
			if err := c.SetAddElements(s, els); err != nil {
				return fmt.Errorf("nftables set %s: %w", name, err)
			}
		}
		sets[name] = s
	}
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		ch := c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
		c.FlushChain(ch)
		return ch
	}
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(exprs...)})
	}
	drop := []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}

	// Before anything else (DNAT included): nothing from a job to an
	// address of the host's own, no IPv6 from a job.
	pre := chain("prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	rule(pre, ifname(expr.MetaKeyIIFNAME, true), nfproto(unix.NFPROTO_IPV6), drop)
	rule(pre, ifname(expr.MetaKeyIIFNAME, true), fibLocal(), drop)
	// Whatever still reaches the host from a job (broadcasts): dropped.
	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	rule(in, ifname(expr.MetaKeyIIFNAME, true), drop)
	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	rule(fwd, ifname(expr.MetaKeyIIFNAME, true), nfproto(unix.NFPROTO_IPV4), ipLookup(16, sets["deny"]), drop)
	rule(fwd, ifname(expr.MetaKeyIIFNAME, true), ifname(expr.MetaKeyOIFNAME, true), drop)
	// Into a job: replies only, from anywhere.
	rule(fwd, ifname(expr.MetaKeyOIFNAME, true), notReply(), drop)
	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	rule(post, nfproto(unix.NFPROTO_IPV4), ipLookup(12, sets["jobnets"]), ifname(expr.MetaKeyOIFNAME, false), []expr.Any{&expr.Masq{}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("the isolated sandbox network needs nf_tables with NAT, fib and conntrack (nf_tables, nft_nat, nft_fib, nft_ct, nft_masq): %w", err)
	}
	return nil
}

// ifname matches an interface name starting with vethPrefix (or not).
func ifname(key expr.MetaKey, is bool) []expr.Any {
	op := expr.CmpOpEq
	if !is {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(vethPrefix)},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// fibLocal: fib daddr type local.
func fibLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// ipLookup: the IPv4 address at offset (12 saddr, 16 daddr) is in s.
func ipLookup(offset uint32, s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

// notReply: ct state not established or related.
func notReply() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// intervalElements are an interval set's elements for ps: a start key and
// an end key (exclusive, flagged) per merged range.
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	var els []nftables.SetElement
	for _, s := range merge(spansOf(ps)) {
		els = append(els, nftables.SetElement{Key: v4(s.lo).AsSlice()})
		if s.hi != ^uint32(0) {
			els = append(els, nftables.SetElement{Key: v4(s.hi + 1).AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

// rangesOf turns an interval set's elements back into prefixes covering
// the same addresses.
func rangesOf(els []nftables.SetElement) []netip.Prefix {
	var starts, ends []uint32
	for _, e := range els {
		if len(e.Key) != 4 {
			continue
		}
		k := binary.BigEndian.Uint32(e.Key)
		if e.IntervalEnd {
			ends = append(ends, k)
		} else {
			starts = append(starts, k)
		}
	}
	slices.Sort(starts)
	slices.Sort(ends)
	var out []netip.Prefix
	for _, lo := range starts {
		hi := ^uint32(0)
		for _, e := range ends {
			if e > lo {
				hi = e - 1
				break
			}
		}
		out = append(out, prefixesOf(lo, hi)...)
	}
	return out
}

// setupJobNetwork wires the init's (pid's) new network namespace: a veth
// pair (a stale one of the uid's, from a worker that died, is deleted
// first), the addresses of the uid's /30, both ends and lo up, the default
// route via the host end.
func (hn *hostNetwork) setupJobNetwork(pid, uid int) (*jobNet, error) {
	jn := netFor(hn.rng, uid)
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("the job's network namespace: %w", err)
	}
	defer ns.Close()
	if old, err := netlink.LinkByName(jn.link); err == nil {
		netlink.LinkDel(old)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: jn.link, MTU: hn.mtu},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) { // a stale link the kernel was still removing
			if old, err := netlink.LinkByName(jn.link); err == nil {
				netlink.LinkDel(old)
			}
			err = netlink.LinkAdd(veth)
		}
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("the isolated sandbox network needs veth pairs, which this kernel lacks (CONFIG_VETH): %w", err)
		}
		if err != nil {
			return nil, fmt.Errorf("create veth %s: %w", jn.link, err)
		}
	}
	fail := func(err error) (*jobNet, error) {
		jn.remove()
		return nil, err
	}
	host, err := netlink.LinkByName(jn.link)
	if err != nil {
		return fail(fmt.Errorf("veth %s: %w", jn.link, err))
	}
	// The host end needs no IPv6 (no link-local address to reach the host by).
	os.WriteFile("/proc/sys/net/ipv6/conf/"+jn.link+"/disable_ipv6", []byte("1"), 0o644)
	if err := netlink.AddrAdd(host, addr(jn.host, jn.bits)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fail(fmt.Errorf("address of %s: %w", jn.link, err))
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fail(fmt.Errorf("set %s up: %w", jn.link, err))
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fail(fmt.Errorf("netlink in the job's namespace: %w", err))
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fail(fmt.Errorf("the job's %s: %w", name, err))
		}
		if name == "eth0" {
			if err := h.AddrAdd(l, addr(jn.job, jn.bits)); err != nil {
				return fail(fmt.Errorf("the job's address: %w", err))
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fail(fmt.Errorf("set the job's %s up: %w", name, err))
		}
		if name == "eth0" {
			if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: jn.host.AsSlice()}); err != nil {
				return fail(fmt.Errorf("the job's default route: %w", err))
			}
		}
	}
	return &jn, nil
}

func addr(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
}

// remove deletes the job's veth pair (both ends go); a link already gone
// (its namespace died first) is no error.
func (jn *jobNet) remove() error {
	if jn == nil {
		return nil
	}
	l, err := netlink.LinkByName(jn.link)
	if err != nil {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s: %w", jn.link, err)
	}
	return nil
}
