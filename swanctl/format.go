package swanctl

import (
	"fmt"
	"net/netip"
	"strings"
)

// Format renders the effective configuration, defaults included, as an
// `mpsa { }` section in strongSwan's syntax: readable, and itself a valid
// configuration that decodes to the same Config. Settings the role does
// not use are left out.
func (c *Config) Format() string {
	w := &writer{}
	w.open("mpsa")
	w.kv("role", string(c.Role))
	w.kv("vici", c.VICI)
	w.kv("control_port", fmt.Sprint(c.ControlPort))
	w.kv("control_interface", c.ControlInterface)
	w.kv("status_socket", c.StatusSocket)
	w.kv("log_level", c.LogLevel)
	w.kv("metrics_listen", c.MetricsListen)
	if c.Role == RoleController {
		w.kv("push_rate", fmt.Sprint(c.PushRate))
		w.kv("push_burst", fmt.Sprint(c.PushBurst))
	}
	w.open("groups")
	for _, g := range c.Groups {
		g.format(w, c.Role)
	}
	w.close()
	w.close()
	return w.b.String()
}

func (g *Group) format(w *writer, role Role) {
	w.open(g.Name)
	w.kv("connection", g.Connection)
	w.kv("control_child", g.ControlChild)
	w.kv(counterModeKey, yesNo(g.AllowCounterMode))
	if role == RoleController {
		w.kv("esp_proposal", g.ESPProposal)
		w.kv("lifetime", g.Lifetime.String())
		w.kv("rekey_time", g.RekeyTime.String())
		w.kv("rekey_jitter", g.RekeyJitter.String())
		w.kv("rollover1", g.Rollover1.String())
		w.kv("rollover2", g.Rollover2.String())
		w.kv("rekey_on_join", yesNo(g.RekeyOnJoin))
		w.kv("rekey_on_leave", yesNo(g.RekeyOnLeave))
		w.kv("nonce_length", fmt.Sprint(g.NonceLength))
	} else {
		g.formatDataplane(w)
	}
	if b := g.BGP; b != nil {
		b.format(w, role)
	}
	w.close()
}

// format writes the bgp section with the settings the role uses.
func (b *BGP) format(w *writer, role Role) {
	w.open("bgp")
	w.kv("enabled", yesNo(b.Enabled))
	if b.ASN != 0 {
		w.kv("asn", fmt.Sprint(b.ASN))
	}
	w.kv("router_id", addrString(b.RouterID))
	w.kv("port", fmt.Sprint(b.Port))
	w.kv("hold_time", b.HoldTime.String())
	w.kv("restart_time", b.RestartTime.String())
	if role != RoleController {
		w.kv("stale_time", b.StaleTime.String())
	}
	if role != RoleMember {
		w.kv("deferral_time", b.DeferralTime.String())
		w.kv("next_hop", b.NextHop)
		if len(b.Policy) > 0 {
			w.open("policy")
			for _, p := range b.Policy {
				w.open(p.Name)
				w.kv("identity", p.Identity)
				rs := make([]string, len(p.Prefixes))
				for i, r := range p.Prefixes {
					rs[i] = r.String()
				}
				w.kv("prefixes", strings.Join(rs, ", "))
				w.close()
			}
			w.close()
		}
	}
	w.close()
}

// formatDataplane writes the member-only settings.
func (g *Group) formatDataplane(w *writer) {
	w.kv("dataplane", string(g.Dataplane))
	if g.Dataplane == BackendUserspace {
		w.kv("tun", g.TUN)
		w.kv("encap", yesNo(g.Encap))
		if g.Encap {
			w.kv("encap_port", fmt.Sprint(g.EncapPort))
		}
	} else {
		w.kv("if_id", fmt.Sprint(g.IfID))
		if g.IfID != 0 {
			w.kv("xfrm_interface", g.XFRMInterface)
		}
	}
	w.kv("mtu", fmt.Sprint(g.MTU))
	w.kv("underlay", addrString(g.Underlay))
	w.kv("local_ts", prefixList(g.LocalTS))
	if len(g.Routes) > 0 {
		w.open("routes")
		for _, rt := range g.Routes {
			w.open(rt.Name)
			w.kv("prefixes", prefixList(rt.Prefixes))
			w.kv("peer", addrString(rt.Peer))
			w.close()
		}
		w.close()
	}
}

// writer indents sections.
type writer struct {
	b     strings.Builder
	depth int
}

func (w *writer) indent() { w.b.WriteString(strings.Repeat("    ", w.depth)) }

// open starts the section name, which references refs (`name : a, b {`).
func (w *writer) open(name string, refs ...string) {
	w.indent()
	// A blank after "include" would make the line read as an include
	// statement ("include {", "include : a {"), so that name gets none.
	sep := " "
	if name == "include" {
		sep = ""
	}
	w.b.WriteString(name)
	if len(refs) > 0 {
		w.b.WriteString(sep + ": " + strings.Join(refs, ", "))
		sep = " "
	}
	w.b.WriteString(sep + "{\n")
	w.depth++
}

func (w *writer) close() {
	w.depth--
	w.indent()
	w.b.WriteString("}\n")
}

// kv writes a setting; an empty value is written as `key =`, which means
// unset (the default) to strongSwan and to mpsad.
func (w *writer) kv(key, value string) {
	w.indent()
	if value == "" {
		w.b.WriteString(key + " =\n")
		return
	}
	w.b.WriteString(key + " = " + Quote(value) + "\n")
}

// Quote returns value as it must be written after `key =` to read back
// unchanged: as is when that is safe, else double-quoted with escapes.
func Quote(value string) string {
	safe := value != "" && !strings.ContainsAny(value, "#}\"\\\r\n\t") &&
		strings.TrimSpace(value) == value && !strings.Contains(value, "  ")
	if safe {
		return value
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(value) + `"`
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
