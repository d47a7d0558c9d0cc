package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/swanctl"
)

// runDaemonCmd runs status, members, peers and rekey against a daemon.
func runDaemonCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	help := map[string]string{
		"status":  "status [--json] [--socket PATH]",
		"members": "members GROUP [--json] [--socket PATH]",
		"peers":   "peers GROUP [--json] [--socket PATH]",
		"rekey":   "rekey GROUP [--json] [--socket PATH]",
		"routes":  "routes GROUP [--json] [--socket PATH]",
	}[cmd]
	fs := newFlagSet(cmd, help, stderr)
	socket := fs.String("socket", swanctl.DefaultStatusSocket, "path of mpsad's status socket")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	wantArgs := 1
	if cmd == "status" {
		wantArgs = 0
	}
	if len(pos) != wantArgs {
		fmt.Fprintf(stderr, "usage: mpsactl %s\n", help)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c := api.NewClient(*socket)
	if cmd == "rekey" {
		spi, err := c.Rekey(ctx, pos[0])
		if err != nil {
			fmt.Fprintf(stderr, "mpsactl rekey: %v\n", err)
			return 1
		}
		if *asJSON {
			return printJSON(stdout, struct {
				Group string `json:"group"`
				SPI   string `json:"spi"`
			}{pos[0], spi})
		}
		fmt.Fprintf(stdout, "group %s rekeyed: new SPI %s\n", pos[0], spi)
		return 0
	}
	if cmd == "routes" {
		rs, err := c.Routes(ctx, pos[0])
		if err != nil {
			fmt.Fprintf(stderr, "mpsactl routes: %v\n", err)
			return 1
		}
		if *asJSON {
			return printJSON(stdout, rs)
		}
		printRoutes(stdout, rs)
		return 0
	}
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "mpsactl %s: %v\n", cmd, err)
		return 1
	}
	var g *api.GroupStatus
	if cmd != "status" {
		for i := range st.Groups {
			if st.Groups[i].Name == pos[0] {
				g = &st.Groups[i]
			}
		}
		if g == nil {
			fmt.Fprintf(stderr, "mpsactl %s: no group %q (groups: %s)\n", cmd, pos[0], groupNames(st))
			return 1
		}
	}
	switch cmd {
	case "status":
		if *asJSON {
			return printJSON(stdout, st)
		}
		printStatus(stdout, st)
	case "members":
		if st.Role != "controller" {
			fmt.Fprintf(stderr, "mpsactl members: this mpsad is a %s; members are known to the controller\n", st.Role)
			return 1
		}
		if *asJSON {
			return printJSON(stdout, g.Members)
		}
		printMembers(stdout, g.Members)
	case "peers":
		if *asJSON {
			return printJSON(stdout, g.Peers)
		}
		printPeers(stdout, g.Peers)
	}
	return 0
}

func groupNames(st api.Status) string {
	var n []string
	for _, g := range st.Groups {
		n = append(n, g.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

func printJSON(w io.Writer, v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return 1
	}
	fmt.Fprintf(w, "%s\n", b)
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t *time.Time) string {
	if t == nil {
		return "-"
	}
	d := time.Until(*t).Round(time.Second)
	if d < 0 {
		return fmt.Sprintf("%s ago", -d)
	}
	return "in " + d.String()
}

func printStatus(w io.Writer, st api.Status) {
	vici := "connected"
	if !st.VICIConnected {
		vici = "NOT connected"
	}
	fmt.Fprintf(w, "mpsad %s, role %s, charon %s\n", st.Version, st.Role, vici)
	for _, g := range st.Groups {
		fmt.Fprintf(w, "\ngroup %s: SPI %s\n", g.Name, orDash(g.SPI))
		for _, p := range g.CharonProblems {
			fmt.Fprintf(w, "  PROBLEM: %s\n", p)
		}
		for _, p := range g.ControlProblems {
			fmt.Fprintf(w, "  PROBLEM since %s: %s\n", p.Since.Format(time.DateTime), p.Problem)
		}
		if st.Role == "controller" {
			fmt.Fprintf(w, "  previous SPI %s, next rekey %s, expires %s, %d rekeys\n", orDash(g.PreviousSPI), ago(g.NextRekey), ago(g.Expires), g.Rekeys)
			fmt.Fprintf(w, "  %d members\n", len(g.Members))
			if f := g.Fanout; f != nil {
				fmt.Fprintf(w, "  %d of %d have the current SA, %d pushes waiting; a push to all takes %s at push_rate (rollover window %s)\n",
					f.Current, f.Members, f.Queued, seconds(f.PushSeconds), seconds(f.WindowSeconds))
				if f.Warning != "" {
					fmt.Fprintf(w, "  WARNING: %s\n", f.Warning)
				}
			}
			if len(g.Members) > 0 {
				var b strings.Builder
				printMembers(&b, g.Members)
				writeIndented(w, b.String())
			}
		} else {
			if c := g.Controller; c != nil && c.Address != "" {
				fmt.Fprintf(w, "  controller %s: %s\n", c.Address, c.State)
			} else if c != nil {
				fmt.Fprintf(w, "  controller: %s (no control child)\n", c.State)
			}
			fmt.Fprintf(w, "  outbound %s, inbound %s\n", orDash(g.OutboundSPI), orDash(strings.Join(g.InboundSPIs, " ")))
			if g.DataPlaneError != "" {
				fmt.Fprintf(w, "  last data plane error: %s\n", g.DataPlaneError)
			}
			for _, x := range g.DataPlaneWarnings {
				fmt.Fprintf(w, "  WARNING: %s\n", x)
			}
			var tables strings.Builder
			if len(g.SAs) > 0 {
				tw := tabwriter.NewWriter(&tables, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SPI\tEXPIRES\tOUTBOUND FROM\tREMOVED")
				for _, s := range g.SAs {
					exp := s.Expires
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.SPI, ago(&exp), ago(s.ActivateAt), ago(s.RemoveAt))
				}
				tw.Flush()
			}
			if len(g.Counters) > 0 {
				tw := tabwriter.NewWriter(&tables, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SPI\tIN PKTS\tIN BYTES\tOUT PKTS\tOUT BYTES\tIN ERRORS\tOUT ERRORS")
				for _, c := range g.Counters {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", c.SPI, c.InPackets, c.InBytes, c.OutPackets, c.OutBytes, c.InErrors, c.OutErrors)
				}
				tw.Flush()
			}
			writeIndented(w, tables.String())
			fmt.Fprintf(w, "  %d peer prefixes\n", len(g.Peers))
			if c := counts(g.DataPlaneDrops); c != "" {
				fmt.Fprintf(w, "  packets dropped by the data plane: %s\n", c)
			}
		}
		if b := g.BGP; b != nil {
			printBGPSummary(w, st.Role, b)
		}
		if c := counts(g.Drops); c != "" {
			fmt.Fprintf(w, "  dropped control datagrams: %s\n", c)
		}
	}
}

// seconds prints a number of seconds as a duration.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func printMembers(w io.Writer, ms []api.MemberStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tACKED SPI\tPENDING SPI\tRETRANSMITS\tIKE SA")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", m.ID, m.Address, orDash(m.AckedSPI), orDash(m.PendingSPI), m.Retransmits, m.IKE)
	}
	tw.Flush()
}

func printPeers(w io.Writer, ps []api.Peer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tUNDERLAY")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\n", p.Prefix, p.Underlay)
	}
	tw.Flush()
}

// writeIndented writes text with every line indented by two spaces.
func writeIndented(w io.Writer, text string) {
	for _, l := range strings.SplitAfter(text, "\n") {
		if l != "" {
			io.WriteString(w, "  "+l)
		}
	}
}

// counts prints the non-zero counts of m as reason=n, sorted by reason; ""
// when there are none.
func counts(m map[string]uint64) string {
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(m)) {
		if m[r] != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", r, m[r]))
		}
	}
	return strings.Join(parts, " ")
}

// printBGPSummary prints a group's BGP line of `mpsactl status`.
func printBGPSummary(w io.Writer, role string, b *api.BGPSummary) {
	if role == "controller" {
		fmt.Fprintf(w, "  bgp: %d members, %d prefixes accepted, %d rejected now (%d rejections in all)\n",
			b.Members, b.AcceptedPrefixes, b.RejectedPrefixes, b.RejectedTotal)
	} else {
		ctl := ""
		if b.Controller != "" {
			ctl = " with " + b.Controller
		}
		fmt.Fprintf(w, "  bgp: session %s%s, %d routes learned (%d stale)\n", orDash(b.Session), ctl, b.LearnedRoutes, b.StaleRoutes)
	}
	if b.LastError != "" {
		fmt.Fprintf(w, "  bgp error: %s\n", b.LastError)
	}
}

// printRoutes prints `mpsactl routes GROUP`.
func printRoutes(w io.Writer, rs api.Routes) {
	switch {
	case rs.Role == "controller" && rs.Reflector == nil:
		fmt.Fprintf(w, "group %s has no BGP: the members' peers are their static routes\n", rs.Group)
	case rs.Role == "controller":
		r := rs.Reflector
		fmt.Fprintf(w, "group %s: route reflector", rs.Group)
		if r.RouterID != "" {
			fmt.Fprintf(w, " %s", r.RouterID)
		}
		fmt.Fprintf(w, " on port %d", r.Port)
		if r.Interface != "" {
			fmt.Fprintf(w, " (interface %s)", r.Interface)
		}
		fmt.Fprintf(w, ", %d members, %d prefixes accepted and %d rejected in all\n", len(r.Members), r.AcceptedTotal, r.RejectedTotal)
		if r.Deferring {
			fmt.Fprintln(w, "  deferring: waiting for the members' routes before reflecting")
		}
		if r.LastError != "" {
			fmt.Fprintf(w, "  last error: %s\n", r.LastError)
		}
		for _, m := range r.Members {
			fmt.Fprintf(w, "\nmember %s (%s): session %s since %s, policy %s\n", m.Identity, m.Address, m.Session,
				m.Since.Format(time.DateTime), orDash(strings.Join(m.Policy, ", ")))
			if len(m.Accepted)+len(m.Rejected) == 0 {
				fmt.Fprintln(w, "  no prefixes")
				continue
			}
			var b strings.Builder
			tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "PREFIX\tNEXT HOP\tVERDICT\tAGE\tRULE OR REASON")
			for _, p := range m.Accepted {
				fmt.Fprintf(tw, "%s\t%s\taccepted\t%s\t%s\n", p.Prefix, orDash(p.NextHop), age(p.Since), p.Rule)
			}
			for _, p := range m.Rejected {
				fmt.Fprintf(tw, "%s\t%s\tREJECTED\t%s\t%s\n", p.Prefix, orDash(p.NextHop), age(p.Since), p.Reason)
			}
			tw.Flush()
			writeIndented(w, b.String())
		}
	default:
		fmt.Fprintf(w, "group %s", rs.Group)
		if s := rs.Session; s != nil {
			fmt.Fprintf(w, ": BGP session %s", s.State)
			if s.Controller != "" {
				fmt.Fprintf(w, " with %s", s.Controller)
			}
			if s.Since != nil {
				fmt.Fprintf(w, " since %s", s.Since.Format(time.DateTime))
			}
			var adv []string
			for _, a := range s.Advertised {
				adv = append(adv, a.Prefix+" via "+a.NextHop)
			}
			fmt.Fprintf(w, "; advertising %s", orDash(strings.Join(adv, ", ")))
		} else if !rs.BGP {
			fmt.Fprint(w, ": no BGP, static routes only")
		}
		fmt.Fprintln(w)
		if s := rs.Session; s != nil && s.LastError != "" {
			fmt.Fprintf(w, "  last error: %s\n", s.LastError)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PREFIX\tPEER\tORIGIN\tAGE\tSTATE")
		for _, r := range rs.Routes {
			state := "used"
			switch {
			case r.Ignored != "":
				state = "ignored: " + r.Ignored
			case r.Shadowed:
				state = "shadowed by the static route"
			case r.Stale:
				state = "used, stale"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Prefix, r.Peer, r.Origin, (time.Duration(r.AgeSeconds) * time.Second).String(), state)
		}
		tw.Flush()
	}
}

// age is how long ago t was, in whole seconds.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}
