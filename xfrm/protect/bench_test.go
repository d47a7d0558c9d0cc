package protect

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/nettest"
)

// BenchmarkVerify verifies one member's control child on a controller
// whose kernel holds the policies of many members (an outbound and an
// inbound policy each, as charon installs them): the cost must not grow
// with their number.
//
//	go test -run '^$' -bench Verify -benchtime 2000x ./xfrm/protect/
func BenchmarkVerify(b *testing.B) {
	for _, members := range []int{100, 10000} {
		b.Run(fmt.Sprintf("policies=%d", 2*members), func(b *testing.B) {
			ns := nettest.NewNS(b, "pbench")
			var batch strings.Builder
			member := func(i int) netip.Addr {
				return netip.AddrFrom4([4]byte{10, 100 + byte(i/65536), byte(i / 256), byte(i)})
			}
			for i := range members {
				m := member(i)
				fmt.Fprintf(&batch, "xfrm policy add src 10.98.0.1/32 dst %s/32 dir out tmpl src 192.0.2.1 dst 192.0.2.11 proto esp reqid %d mode tunnel\n", m, 10+i)
				fmt.Fprintf(&batch, "xfrm policy add src %s/32 dst 10.98.0.1/32 dir in tmpl src 192.0.2.11 dst 192.0.2.1 proto esp reqid %d mode tunnel\n", m, 10+i)
			}
			ipBatch(b, ns, batch.String())
			var v *Verifier
			if err := ns.Do(func() (err error) { v, err = New(); return err }); err != nil {
				b.Fatal(err)
			}
			defer v.Close()
			i := members / 2
			c := ctlChild()
			c.ReqID = uint32(10 + i)
			c.Remote = member(i)
			c.RemoteTS = []string{c.Remote.String() + "/32"}
			ctx := context.Background()
			if _, err := v.Verify(ctx, c, false); err != nil {
				b.Fatal(err)
			}
			before := v.requests()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := v.Verify(ctx, c, false); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(v.requests()-before)/float64(b.N), "requests/op")
		})
	}
}
