//go:build !sandboxinit

package sandbox

// The platform guard of the host network mode. A job that shares the
// host's network could otherwise open a connection to the platform's own
// Postgres and Redis: on a host whose Postgres trusts local connections
// (a development machine, this one) that alone is an account takeover,
// with no secret to steal. So the job uids get an nftables rule in the
// output hook: no TCP connection to the platform's ports (PlatformPorts)
// on any address of this host, IPv4 or IPv6, and nothing to the platform's
// remote addresses or the operator's denied prefixes (NetworkDeny, less
// loopback, which the port rule covers without taking the host's other
// local services, such as a demo site, from the jobs). A connection is
// refused at once (a TCP reset, or ICMP administratively prohibited), not
// left to time out.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// guardPlatform writes this launcher's rules into the output chain of
// table inet scrapethis, replacing those an earlier worker with the same
// uid range wrote and leaving other ranges' (workers of one host share
// the chain).
func guardPlatform(cfg Config, lockDir string) error {
	return withLock(filepath.Join(lockDir, ".nftables.lock"), func() error {
		c, err := nftables.New()
		if err != nil {
			return fmt.Errorf("the platform guard needs nf_tables (netlink: %w)", err)
		}
		defer c.CloseLasting()
		t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable})
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		if err := c.Flush(); err != nil {
			return fmt.Errorf("the platform guard needs nf_tables: %w", err)
		}
		tag := []byte("scrapethis-uids:" + strconv.Itoa(cfg.UIDFirst) + "-" + strconv.Itoa(cfg.UIDLast))
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return fmt.Errorf("the platform guard cannot read its rules: %w", err)
		}
		for _, r := range rules {
			if string(r.UserData) == string(tag) {
				if err := c.DelRule(r); err != nil {
					return fmt.Errorf("the platform guard cannot replace its rules: %w", err)
				}
			}
		}
		// A range compares bytes in order: the uid, in host byte order,
		// goes to network order first (as nft itself does).
		uids := []expr.Any{
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
			&expr.Range{Op: expr.CmpOpEq, Register: 1,
				FromData: binary.BigEndian.AppendUint32(nil, uint32(cfg.UIDFirst)),
				ToData:   binary.BigEndian.AppendUint32(nil, uint32(cfg.UIDLast))},
		}
		add := func(exprs ...[]expr.Any) {
			var all []expr.Any
			for _, e := range exprs {
				all = append(all, e...)
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all, UserData: tag})
		}
		tcp := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}
		reset := []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
		prohibited := []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
		for _, port := range cfg.PlatformPorts {
			dport := []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
			}
			add(uids, tcp, dport, fibLocal(), reset)
		}
		for _, p := range cfg.NetworkDeny {
			if p.Contains(netip.MustParseAddr("127.0.0.1")) || p.Addr().IsLoopback() || !p.Addr().Is4() {
				continue // loopback: the port rule above
			}
			last := lastAddr(p)
			add(uids, nfproto(unix.NFPROTO_IPV4), []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: p.Masked().Addr().AsSlice(), ToData: last.AsSlice()},
			}, prohibited)
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("the platform guard needs nf_tables with reject and fib (nft_reject_inet, nft_fib_inet): %w", err)
		}
		return nil
	})
}

// lastAddr is the last address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	n := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, n)))
}
