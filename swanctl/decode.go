package swanctl

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mpsa/mpsa/bgp/policy"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm/groupid"
)

// The names the schema knows, per section. They are functions so that no
// package-level slice can be changed by accident.
func globalKeys() []string {
	return []string{"role", "vici", "control_port", "control_interface", "status_socket", "log_level", "metrics_listen", "push_rate", "push_burst"}
}

func globalSections() []string { return []string{"groups"} }

func groupKeys() []string {
	return []string{
		"connection", "control_child", "esp_proposal", counterModeKey,
		"lifetime", "rekey_time", "rekey_jitter", "rollover1", "rollover2",
		"rekey_on_join", "rekey_on_leave", "nonce_length",
		"dataplane", "tun", "mtu", "encap", "encap_port", "if_id", "xfrm_interface", "underlay", "local_ts",
	}
}

func groupSections() []string { return []string{"routes", "bgp"} }

// counterModeKey permits counter-mode ciphers. Its name says what it
// risks; it was allow_counter_mode, which is refused with a pointer to
// it (refuseRenamedCounterMode).
const counterModeKey = "insecure_counter_mode_lab_only"

// counterModeRisk says why counter modes are unsafe with a shared SA, for
// the errors and the warning about them.
const counterModeRisk = "with one key shared by every member, each sender must never use a counter (IV) another sender uses, " +
	"which a group SA without sender IDs cannot ensure (RFC 6054) and neither data plane guarantees " +
	"(the kernel's seqiv draws a random salt per state, so about one pair of senders in 2^32 reuses IVs, and the userspace data plane has no counter mode)"

func routeKeys() []string { return []string{"prefixes", "peer"} }

func bgpKeys() []string {
	return []string{"enabled", "asn", "router_id", "port", "hold_time", "restart_time", "stale_time", "deferral_time", "next_hop"}
}

func bgpSections() []string { return []string{"policy"} }

func bgpPolicyKeys() []string { return []string{"identity", "prefixes"} }

// LoadMPSA reads the swanctl.conf-style file at path, with everything it
// includes, and decodes its mpsa section. The error, if any, is Errors and
// lists every problem found.
func LoadMPSA(path string) (*Config, error) {
	return Reader{}.LoadMPSA(path)
}

// LoadMPSA is the package-level LoadMPSA reading through rd. Problems with
// includes (a missing file, a cycle) do not stop the reading, so the rest
// is decoded and its problems reported with them, sorted by file and line;
// after a syntax error, or when the file cannot be read, only the reader's
// problems are reported.
func (rd Reader) LoadMPSA(path string) (*Config, error) {
	root, readErrs, stopped := rd.read(path)
	if stopped {
		return nil, readErrs
	}
	cfg, err := Decode(root)
	if len(readErrs) == 0 {
		return cfg, err
	}
	var decodeErrs Errors
	errors.As(err, &decodeErrs)
	all := append(slices.Clone(readErrs), decodeErrs...)
	sortByPos(all)
	return nil, all
}

// Decode decodes and validates the mpsa section of a parsed configuration,
// filling in defaults. The error, if any, is Errors, sorted by position.
func Decode(root *Section) (*Config, error) {
	var errs, warns Errors
	sec := root.Section("mpsa")
	if sec == nil {
		for _, s := range root.Sections {
			if len(s.Name) >= 3 && suggest(s.Name, []string{"mpsa"}) != "" {
				errs.add(s.Pos, "unknown section %q and no mpsa { } section; did you mean mpsa?", s.Name)
				return nil, errs
			}
		}
		// Line 1: the section may go anywhere in the file.
		errs.add(Pos{File: root.Pos.File, Line: 1}, "no mpsa { } section; add one with role and groups (examples: /usr/share/doc/mpsa/examples)")
		return nil, errs
	}
	r := &sectionReader{sec: sec, path: "mpsa", errs: &errs, warns: &warns}
	cfg := decodeGlobal(r)
	checkAcrossGroups(cfg, &errs)
	for _, g := range cfg.Groups {
		g.ControlChildConf = childConf(root, g.Connection, g.ControlChild)
	}
	sortByPos(errs)
	sortByPos(warns)
	if err := errs.err(); err != nil {
		return nil, err
	}
	cfg.Warnings = warns
	return cfg, nil
}

func sortByPos(l Errors) {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Pos.File, b.Pos.File), cmp.Compare(a.Pos.Line, b.Pos.Line))
	})
}

func decodeGlobal(r *sectionReader) *Config {
	r.checkNames(globalKeys(), globalSections(), nil)
	cfg := &Config{
		Role:             Role(r.enum("role", "", string(RoleController), string(RoleMember))),
		VICI:             r.str("vici", DefaultVICI()),
		ControlPort:      uint16(r.uinteger("control_port", DefaultControlPort, 1, 65535)),
		ControlInterface: r.str("control_interface", ""),
		StatusSocket:     r.str("status_socket", DefaultStatusSocket),
		LogLevel:         r.enum("log_level", DefaultLogLevel, "debug", "info", "warn", "error"),
		MetricsListen:    r.str("metrics_listen", ""),
		PushRate:         DefaultPushRate,
		PushBurst:        DefaultPushBurst,
		Pos:              r.sec.Pos,
	}
	if cfg.Role == RoleMember {
		// Like a group setting of the other role: warned about, not
		// checked, the default kept.
		for _, k := range []string{"push_rate", "push_burst"} {
			if kv := r.get(k); kv != nil {
				r.warnf(kv.Pos, "%s is ignored in role member (a member pushes nothing; the controller's %s paces its pushes); remove it", k, k)
			}
		}
	} else {
		cfg.PushRate = int(r.uinteger("push_rate", DefaultPushRate, 1, maxPushRate))
		cfg.PushBurst = int(r.uinteger("push_burst", DefaultPushBurst, 1, maxPushRate))
	}
	switch kv := r.sec.Key("role"); {
	case kv == nil:
		r.errorf(r.sec.Pos, "role is not set; write role = controller or role = member")
	case strings.TrimSpace(kv.Value) == "":
		r.errorf(kv.Pos, "role is empty; write role = controller or role = member")
	}
	if err := checkVICI(cfg.VICI); err != nil {
		r.errorf(r.pos("vici"), "vici = %s: %v", cfg.VICI, err)
	}
	if cfg.ControlInterface != "" {
		if err := checkIfName(cfg.ControlInterface); err != nil {
			r.errorf(r.pos("control_interface"), "control_interface = %s: %v; write the name of charon's TUN device, such as ipsec0", cfg.ControlInterface, err)
		}
	}
	if !filepath.IsAbs(cfg.StatusSocket) {
		r.errorf(r.pos("status_socket"), "status_socket = %s is not an absolute path; write one such as %s", cfg.StatusSocket, DefaultStatusSocket)
	}
	if cfg.MetricsListen != "" {
		if err := checkListen(cfg.MetricsListen, "127.0.0.1:9474 or [::1]:9474"); err != nil {
			r.errorf(r.pos("metrics_listen"), "metrics_listen = %s: %v", cfg.MetricsListen, err)
		}
	}
	groups := r.sub("groups")
	if groups == nil {
		r.errorf(r.sec.Pos, "no groups; add groups { NAME { connection = ... } }")
		return cfg
	}
	if len(groups.sec.Sections) == 0 {
		r.errorf(groups.sec.Pos, "no groups; add groups { NAME { connection = ... } }")
	}
	checkOnlySections(groups, "groups { NAME { connection = ... } }")
	for _, gs := range groups.sec.Sections {
		cfg.Groups = append(cfg.Groups, decodeGroup(groups.child(gs), cfg.Role))
	}
	return cfg
}

// checkVICI validates a VICI socket URI as charon accepts it.
func checkVICI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil {
		return fmt.Errorf("not a URI; write unix:///PATH or tcp://HOST:PORT")
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return fmt.Errorf("a unix URI needs an absolute path; write unix:///var/run/charon.vici")
		}
	case "tcp":
		if err := checkListen(u.Host, "tcp://127.0.0.1:4502"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported scheme %q; write unix:///PATH or tcp://HOST:PORT", u.Scheme)
	}
	return nil
}

// checkListen validates HOST:PORT with a numeric port; example is what to
// write instead.
func checkListen(hostport, example string) error {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("not HOST:PORT; write for example %s", example)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535; write a port number, for example %s", port, example)
	}
	return nil
}

// decodeGroup decodes one group. Settings that the role does not use are
// not decoded, only warned about, and the group holds their defaults; with
// no valid role, every setting is decoded.
func decodeGroup(r *sectionReader, role Role) *Group {
	r.checkNames(groupKeys(), groupSections(), retiredGroupKeys())
	g := &Group{
		Name:             r.sec.Name,
		Connection:       r.str("connection", ""),
		AllowCounterMode: r.boolean(counterModeKey, false),
		Pos:              r.sec.Pos,
	}
	if g.AllowCounterMode {
		r.warnf(r.pos(counterModeKey), "%s = yes permits counter-mode ciphers: %s; it is meant for a lab only: remove it anywhere else", counterModeKey, counterModeRisk)
	}
	g.ControlChild = r.str("control_child", g.Connection)
	if g.Connection == "" {
		r.errorf(r.pos("connection"), "connection is not set; write connection = NAME, the swanctl connection between %s and %s", peerWord(role, true), peerWord(role, false))
	}
	timersOK := true
	switch role {
	case RoleController:
		timersOK = decodeSA(r, g, role)
		g.Dataplane, g.MTU = DefaultDataplane, DefaultMTU
	case RoleMember:
		defaultSA(g)
		decodeMember(r, g)
	default:
		decodeSA(r, g, role)
		decodeMember(r, g)
	}
	if bs := r.sub("bgp"); bs != nil {
		g.BGP = decodeBGP(bs, role)
	}
	warnIgnored(r, role)
	switch role {
	case RoleController:
		checkTimers(r, g, timersOK)
	case RoleMember:
		checkPrefixes(r, g)
		if len(g.LocalTS) == 0 && r.get("local_ts") == nil {
			r.errorf(r.sec.Pos, "member group has no local_ts; write local_ts = the prefixes behind this member (10.1.0.0/24)")
		}
		if !g.PeersLearned() {
			r.errorf(r.sec.Pos, "member group has no way to learn its peers; add bgp { asn = AS NUMBER } to learn them from the controller, or routes { NAME { prefixes = ...  peer = ... } } with static peers")
		}
	}
	return g
}

// decodeSA decodes the settings of the shared SA, which only a controller
// uses. It reports whether every timer is a valid time value.
func decodeSA(r *sectionReader, g *Group, role Role) (timersOK bool) {
	decodeProposal(r, g, role)
	timersOK = true
	for _, t := range []struct {
		key string
		def Duration
		d   *Duration
	}{
		{"lifetime", DefaultLifetime, &g.Lifetime},
		{"rekey_time", DefaultRekeyTime, &g.RekeyTime},
		{"rekey_jitter", DefaultRekeyJitter, &g.RekeyJitter},
		{"rollover1", DefaultRollover1, &g.Rollover1},
		{"rollover2", DefaultRollover2, &g.Rollover2},
	} {
		var ok bool
		*t.d, ok = r.duration(t.key, t.def)
		timersOK = timersOK && ok
	}
	g.RekeyOnJoin = r.boolean("rekey_on_join", DefaultRekeyOnJoin)
	g.RekeyOnLeave = r.boolean("rekey_on_leave", DefaultRekeyOnLeave)
	g.NonceLength = int(r.uinteger("nonce_length", DefaultNonceLength, minNonceLength, maxNonceLength))
	return timersOK
}

// defaultSA fills in the defaults of the settings decodeSA decodes.
func defaultSA(g *Group) {
	g.Suite, _ = mpsa.ParseProposal(DefaultESPProposal)
	g.ESPProposal = g.Suite.String()
	g.Lifetime, g.RekeyTime, g.RekeyJitter = DefaultLifetime, DefaultRekeyTime, DefaultRekeyJitter
	g.Rollover1, g.Rollover2 = DefaultRollover1, DefaultRollover2
	g.RekeyOnJoin, g.RekeyOnLeave = DefaultRekeyOnJoin, DefaultRekeyOnLeave
	g.NonceLength = DefaultNonceLength
}

// decodeMember decodes the settings only a member uses: its data plane,
// its addresses and its routes.
func decodeMember(r *sectionReader, g *Group) {
	g.Dataplane = Backend(r.enum("dataplane", string(DefaultDataplane), string(BackendXFRM), string(BackendUserspace)))
	g.IfID = uint32(r.uinteger("if_id", 0, 0, 0xffffffff))
	g.Underlay = r.addr("underlay")
	g.LocalTS = r.prefixes("local_ts")
	decodeDataplane(r, g)
	if rs := r.sub("routes"); rs != nil {
		g.Routes = decodeRoutes(rs)
	}
}

// peerWord names the two ends of the group's connection.
func peerWord(role Role, self bool) string {
	switch {
	case role == RoleController && self:
		return "this controller"
	case role == RoleController:
		return "its members"
	case self:
		return "this member"
	}
	return "its controller"
}

// controllerOnly are the group settings only a controller uses.
func controllerOnly() []string {
	return []string{"esp_proposal", "lifetime", "rekey_time", "rekey_jitter", "rollover1", "rollover2", "rekey_on_join", "rekey_on_leave", "nonce_length"}
}

// memberOnly are the group settings only a member uses.
func memberOnly() []string {
	return []string{"dataplane", "tun", "mtu", "encap", "encap_port", "if_id", "xfrm_interface", "underlay", "local_ts", "routes"}
}

// warnIgnored warns about settings the role does not use: a member gets
// the proposal and the timers from its controller in MPSA_PUT, and a
// controller has no data plane.
func warnIgnored(r *sectionReader, role Role) {
	var ignored []string
	why := ""
	switch role {
	case RoleMember:
		ignored, why = controllerOnly(), "a member receives it from its controller in MPSA_PUT"
	case RoleController:
		ignored, why = memberOnly(), "a controller has no data plane"
	default:
		return
	}
	for _, kv := range r.sec.Keys {
		if slices.Contains(ignored, kv.Name) {
			r.warnf(kv.Pos, "%s is ignored in role %s (%s); remove it", kv.Name, role, why)
		}
	}
	for _, s := range r.sec.Sections {
		if slices.Contains(ignored, s.Name) {
			r.warnf(s.Pos, "%s is ignored in role %s (%s); remove it", s.Name, role, why)
		}
	}
}

// retiredGroupKeys are the group settings that no longer exist, each
// with the error that says why and what to write instead, given the
// value written.
func retiredGroupKeys() map[string]func(value string) string {
	return map[string]func(string) string{
		"allow_counter_mode": func(v string) string {
			return fmt.Sprintf("allow_counter_mode was renamed %s, which says what it risks: %s; "+
				"remove it and use a CBC proposal such as %s, or, in a lab only, write %s = %s",
				counterModeKey, counterModeRisk, DefaultESPProposal, counterModeKey, v)
		},
	}
}

func decodeProposal(r *sectionReader, g *Group, role Role) {
	prop := r.str("esp_proposal", DefaultESPProposal)
	suite, err := mpsa.ParseProposal(prop)
	if err != nil {
		r.errorf(r.pos("esp_proposal"), "%v; write a single proposal such as %s", err, DefaultESPProposal)
		suite, _ = mpsa.ParseProposal(DefaultESPProposal)
	}
	g.Suite, g.ESPProposal = suite, suite.String()
	if role == RoleController && suite.CounterMode() && !g.AllowCounterMode {
		r.errorf(r.pos("esp_proposal"), "esp_proposal = %s is a counter mode: %s; use a CBC proposal such as %s, or, in a lab only, write %s = yes", prop, counterModeRisk, DefaultESPProposal, counterModeKey)
	}
}

// maxWireSeconds is the longest lifetime or rollover time MPSA_PUT can
// carry: its LIFE, ROLL1 and ROLL2 attributes are 4-octet seconds.
const maxWireSeconds = 1<<32 - 1

// checkTimers checks the relations between the SA timers. When one of
// them is zero, or (valid false) not a time value, that is reported
// already and the relations are not checked: they would compare with a
// value the operator did not mean.
func checkTimers(r *sectionReader, g *Group, valid bool) {
	for _, k := range []struct {
		key string
		d   Duration
		def Duration
	}{{"lifetime", g.Lifetime, DefaultLifetime}, {"rekey_time", g.RekeyTime, DefaultRekeyTime}, {"rollover1", g.Rollover1, DefaultRollover1}, {"rollover2", g.Rollover2, DefaultRollover2}} {
		switch {
		case k.d <= 0:
			r.errorf(r.pos(k.key), "%s must be longer than 0s; write %s = %s (the default) or another time above 0s", k.key, k.key, k.def)
			valid = false
		case k.key == "lifetime" && k.d.Std() > mpsa.MaxLifetime:
			r.errorf(r.pos(k.key), "lifetime = %s is longer than members accept (%s: an SA whose keys every member holds should not live longer); write lifetime = %s (the default) or another time up to 7d", k.d, Duration(mpsa.MaxLifetime), k.def)
			valid = false
		case k.d.Std() > maxWireSeconds*time.Second && k.key != "rekey_time":
			r.errorf(r.pos(k.key), "%s = %s does not fit MPSA_PUT's 4-octet seconds (at most %d s, about 136 years); write %s = %s (the default) or another time below that", k.key, k.d, maxWireSeconds, k.key, k.def)
			valid = false
		}
	}
	if !valid {
		return
	}
	if g.Rollover2 < g.Rollover1 {
		r.errorf(r.pos("rollover2"), "rollover2 (%s) is shorter than rollover1 (%s): members would stop receiving with the old SA while others still send with it; write rollover2 = %s or more", g.Rollover2, g.Rollover1, g.Rollover1)
	}
	rollover := max(g.Rollover1, g.Rollover2)
	if g.RekeyTime >= g.Lifetime {
		const what = "rekey_time (%s) is not below lifetime (%s): the SA would expire before it is replaced; "
		if rekey := suggestRekey(g.Lifetime, rollover); rekey > 0 {
			r.errorf(r.pos("rekey_time"), what+"write a rekey_time below %s, such as %s", g.RekeyTime, g.Lifetime, g.Lifetime, rekey)
		} else {
			r.errorf(r.pos("rekey_time"), what+"write a longer lifetime, such as lifetime = %s (rekey_time plus the rollover)", g.RekeyTime, g.Lifetime, g.RekeyTime+rollover)
		}
		return
	}
	if g.RekeyJitter >= g.RekeyTime {
		r.errorf(r.pos("rekey_jitter"), "rekey_jitter (%s) is not below rekey_time (%s); write a smaller rekey_jitter, such as 0s (the default)", g.RekeyJitter, g.RekeyTime)
	}
	margin := g.Lifetime - g.RekeyTime
	for _, k := range []struct {
		key string
		d   Duration
	}{{"rollover1", g.Rollover1}, {"rollover2", g.Rollover2}} {
		if k.d > margin {
			r.errorf(r.pos(k.key), "%s (%s) is longer than the margin between rekey_time and lifetime (%s): the old SA would expire while members still use it; lower %s to %s or less, or raise lifetime to %s or more", k.key, k.d, margin, k.key, margin, g.RekeyTime+k.d)
		}
	}
}

func decodeDataplane(r *sectionReader, g *Group) {
	g.MTU = int(r.uinteger("mtu", DefaultMTU, minMTU, maxMTU))
	switch g.Dataplane {
	case BackendUserspace:
		if r.get("if_id") != nil {
			r.errorf(r.pos("if_id"), "if_id applies to dataplane = xfrm only; remove it or write dataplane = xfrm")
		}
		if r.get("xfrm_interface") != nil {
			r.errorf(r.pos("xfrm_interface"), "xfrm_interface applies to dataplane = xfrm only; remove it or write dataplane = xfrm")
		}
		g.TUN = r.ifName("tun", "TUN device")
		g.Encap = r.boolean("encap", DefaultEncap)
		port := uint16(r.uinteger("encap_port", DefaultEncapPort, 1, 65535))
		switch {
		case g.Encap:
			g.EncapPort = port
		case r.get("encap_port") != nil:
			r.errorf(r.pos("encap_port"), "encap_port needs encap = yes; write encap = yes or remove encap_port")
		}
	case BackendXFRM:
		if r.get("tun") != nil {
			r.errorf(r.pos("tun"), "tun applies to dataplane = userspace only; remove it or write dataplane = userspace")
		}
		for _, k := range []string{"encap", "encap_port"} {
			if r.get(k) != nil {
				r.errorf(r.pos(k), "%s applies to dataplane = userspace only: the kernel data plane sends plain ESP (IP protocol 50); remove it or write dataplane = userspace", k)
			}
		}
		switch {
		case g.IfID != 0:
			g.XFRMInterface = r.ifName("xfrm_interface", "XFRM interface")
		case r.get("xfrm_interface") != nil:
			r.errorf(r.pos("xfrm_interface"), "xfrm_interface needs route-based mode; write if_id = N (not 0) or remove xfrm_interface")
		}
	}
	if g.MTU < minMTUIPv6 && anyIPv6(g) {
		r.errorf(r.pos("mtu"), "mtu = %d is below %d, the minimum for IPv6 traffic; write mtu = %d or more", g.MTU, minMTUIPv6, minMTUIPv6)
	}
}

// ifName returns the interface name of key, by default mpsa- and the
// group's name, and reports a name Linux would refuse; what names the
// interface in messages.
func (r *sectionReader) ifName(key, what string) string {
	name := r.str(key, defaultTUNPrefix+r.sec.Name)
	if err := checkIfName(name); err != nil {
		if r.get(key) == nil {
			r.errorf(r.sec.Pos, "the default %s name %q: %v; write %s = NAME, at most %d characters without /, : or blanks", what, name, err, key, maxInterfaceNameLen)
		} else {
			r.errorf(r.pos(key), "%s = %s: %v; write a name of at most %d characters without /, : or blanks, such as %s", key, name, err, maxInterfaceNameLen, shortIfName(r.sec.Name))
		}
	}
	return name
}

func anyIPv6(g *Group) bool {
	for _, p := range g.LocalTS {
		if p.Addr().Is6() {
			return true
		}
	}
	return false
}

// shortIfName is an interface name for the group called group to suggest:
// the default when that is valid, else mpsa0.
func shortIfName(group string) string {
	if name := defaultTUNPrefix + group; checkIfName(name) == nil {
		return name
	}
	return defaultTUNPrefix + "0"
}

// checkIfName validates a Linux network interface name.
func checkIfName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return errors.New("not a valid interface name")
	case len(name) > maxInterfaceNameLen:
		return fmt.Errorf("longer than %d characters, the Linux limit", maxInterfaceNameLen)
	case strings.ContainsAny(name, "/: \t"):
		return errors.New("an interface name may not contain /, : or blanks")
	}
	return nil
}

func decodeRoutes(r *sectionReader) []Route {
	checkOnlySections(r, "routes { NAME { prefixes = PREFIX[, PREFIX]  peer = ADDRESS } }; strongSwan names may not contain . or :, so a prefix cannot be a key")
	var routes []Route
	for _, rs := range r.sec.Sections {
		rr := r.child(rs)
		rr.checkNames(routeKeys(), nil, nil)
		rt := Route{Name: rs.Name, Prefixes: rr.prefixes("prefixes"), Peer: rr.addr("peer"), Pos: rs.Pos}
		if rr.get("prefixes") == nil {
			rr.errorf(rs.Pos, "route has no prefixes; write prefixes = the prefixes behind that peer (10.2.0.0/24)")
		}
		if rr.get("peer") == nil {
			rr.errorf(rs.Pos, "route has no peer; write peer = that member's underlay address (192.0.2.20)")
		}
		routes = append(routes, rt)
	}
	return routes
}

// BGP timer limits: a hold time is 0 or at least 3 s and fits 16 bits
// (RFC 4271); the graceful restart time fits the capability's 12 bits
// (RFC 4724); GoBGP keeps the deferral time in 16 bits.
const (
	minBGPHoldTime    = 3
	maxBGPHoldTime    = 65535
	maxBGPRestartTime = 4095
	maxBGPDeferral    = 65535
)

// decodeBGP decodes a group's bgp { } section. Settings that the role does
// not use draw a warning and hold their defaults.
func decodeBGP(r *sectionReader, role Role) *BGP {
	r.checkNames(bgpKeys(), bgpSections(), nil)
	b := &BGP{
		Enabled:      r.boolean("enabled", true),
		ASN:          uint32(r.uinteger("asn", 0, 1, 0xffffffff)),
		RouterID:     r.addr("router_id"),
		Port:         uint16(r.uinteger("port", DefaultBGPPort, 1, 65535)),
		StaleTime:    DefaultBGPStaleTime,
		DeferralTime: DefaultBGPDeferralTime,
		Pos:          r.sec.Pos,
	}
	if b.Enabled && r.get("asn") == nil {
		r.errorf(r.sec.Pos, "asn is not set; write asn = the group's AS number (a private one such as 64512)")
	}
	if b.RouterID.IsValid() && !b.RouterID.Is4() {
		r.errorf(r.pos("router_id"), "router_id = %s is not an IPv4 address; write a BGP router ID as an IPv4 address, such as 192.0.2.1", b.RouterID)
	}
	b.HoldTime = r.seconds("hold_time", DefaultBGPHoldTime, minBGPHoldTime, maxBGPHoldTime, "BGP's hold time is at least 3 s and at most 65535 s")
	b.RestartTime = r.seconds("restart_time", DefaultBGPRestartTime, 1, maxBGPRestartTime, "the graceful restart capability carries at most 4095 s")
	ignored := func(key, why string) bool {
		if role == "" {
			return false
		}
		if kv := r.sec.Key(key); kv != nil {
			r.warnf(kv.Pos, "%s is ignored in role %s (%s); remove it", key, role, why)
		} else if s := r.sec.Section(key); s != nil {
			r.warnf(s.Pos, "%s is ignored in role %s (%s); remove it", key, role, why)
		}
		return true
	}
	if role != RoleController || !ignored("stale_time", "a controller learns no routes") {
		b.StaleTime = r.seconds("stale_time", DefaultBGPStaleTime, 1, 0, "")
	}
	if role != RoleMember || !ignored("deferral_time", "only a reflector defers") {
		b.DeferralTime = r.seconds("deferral_time", DefaultBGPDeferralTime, 1, maxBGPDeferral, "GoBGP keeps the deferral time in 16 bits")
	}
	b.NextHop = NextHopIKE
	if role != RoleMember || !ignored("next_hop", "the controller checks the members' next hops") {
		switch v := r.str("next_hop", NextHopIKE); v {
		case NextHopIKE, NextHopAny:
			b.NextHop = v
		default:
			r.errorf(r.pos("next_hop"), "next_hop = %s is not a choice; write next_hop = ike (a member's routes must lead to its IKE address, the default) or next_hop = any (members whose ESP address is not their IKE address)", v)
		}
	}
	if role != RoleMember || !ignored("policy", "the controller filters the routes") {
		if ps := r.sub("policy"); ps != nil {
			b.Policy = decodeBGPPolicy(ps)
		}
		if role == RoleController && b.Enabled && len(b.Policy) == 0 {
			r.warnf(r.sec.Pos, "no policy: the route reflector rejects every prefix a member advertises; add policy { NAME { identity = cpe-*.example.net  prefixes = 10.0.0.0/8 le 24 } }")
		}
	}
	return b
}

// seconds returns the duration of key in whole seconds within [lo, hi]
// (hi 0: no upper bound), or def; limit says why the bounds are there.
func (r *sectionReader) seconds(key string, def Duration, lo, hi int64, limit string) Duration {
	d, ok := r.duration(key, def)
	if !ok {
		return def
	}
	s := int64(d.Std() / time.Second)
	switch {
	case s < lo:
		r.errorf(r.pos(key), "%s = %s is too short; write %s = %s (the default) or at least %s", key, d, key, def, Duration(time.Duration(lo)*time.Second))
		return def
	case hi > 0 && s > hi:
		r.errorf(r.pos(key), "%s = %s is too long (%s); write %s = %s (the default) or at most %s", key, d, limit, key, def, Duration(time.Duration(hi)*time.Second))
		return def
	}
	return d
}

// decodeBGPPolicy decodes policy { NAME { identity = ...  prefixes = ... } }.
func decodeBGPPolicy(r *sectionReader) []BGPPolicy {
	checkOnlySections(r, "policy { NAME { identity = cpe-*.example.net  prefixes = 10.0.0.0/8 le 24 } }; strongSwan names may not contain . or :, so an identity cannot be a key")
	var out []BGPPolicy
	for _, ps := range r.sec.Sections {
		pr := r.child(ps)
		pr.checkNames(bgpPolicyKeys(), nil, nil)
		p := BGPPolicy{Name: ps.Name, Identity: pr.str("identity", ""), Pos: ps.Pos}
		if p.Identity == "" {
			pr.errorf(ps.Pos, "policy has no identity; write identity = the IKE identity of the members it admits, * matching any characters (cpe-*.example.net)")
		}
		if kv := pr.get("prefixes"); kv != nil {
			for _, s := range SplitList(kv.Value) {
				rg, err := policy.ParseRange(s)
				if err != nil {
					pr.errorf(kv.Pos, "prefixes: %v", err)
					continue
				}
				p.Prefixes = append(p.Prefixes, rg)
			}
		} else {
			pr.errorf(ps.Pos, "policy has no prefixes; write prefixes = the prefixes those members may advertise (10.1.0.0/16 le 24, 2001:db8:1::/48 le 64)")
		}
		out = append(out, p)
	}
	return out
}

// checkPrefixes reports overlaps within local_ts, between local_ts and
// routes, and between routes, of one group.
func checkPrefixes(r *sectionReader, g *Group) {
	localPos := r.pos("local_ts")
	for i, a := range g.LocalTS {
		for _, b := range g.LocalTS[:i] {
			if a.Overlaps(b) {
				r.errorf(localPos, "local_ts lists overlapping prefixes %s and %s; keep only the wider one", b, a)
			}
		}
	}
	type seen struct {
		p     netip.Prefix
		route string
	}
	var all []seen
	for _, rt := range g.Routes {
		if g.Underlay.IsValid() && rt.Peer.IsValid() && g.Underlay.Is4() != rt.Peer.Is4() {
			r.errorf(r.routeKeyPos(rt, "peer"), "route %s: peer %s and underlay %s are of different address families: ESP cannot travel between them; write a peer address of the underlay's family", rt.Name, rt.Peer, g.Underlay)
		}
		for _, p := range rt.Prefixes {
			for _, l := range g.LocalTS {
				if p.Overlaps(l) {
					r.errorf(r.routeKeyPos(rt, "prefixes"), "route %s: prefix %s overlaps local_ts %s: traffic for this member's own LAN would be sent to a peer; remove one of them", rt.Name, p, l)
				}
			}
			for _, s := range all {
				if p.Overlaps(s.p) {
					r.errorf(r.routeKeyPos(rt, "prefixes"), "route %s: prefix %s overlaps %s of route %s: each destination must map to exactly one peer; remove or narrow one of them", rt.Name, p, s.p, s.route)
				}
			}
			all = append(all, seen{p, rt.Name})
		}
	}
}

// routeKeyPos is where the setting key of a route is written, or where
// the route starts.
func (r *sectionReader) routeKeyPos(rt Route, key string) Pos {
	if rs := r.sec.Lookup("routes", rt.Name); rs != nil {
		if kv := rs.Key(key); kv != nil {
			return kv.Pos
		}
	}
	return rt.Pos
}

// checkAcrossGroups reports what groups may not share: the control
// connection (a control datagram carries no group ID, so the IKE SA names
// the group), the TUN device, the ESP-in-UDP port (which may not be the
// control port either), the XFRM if_id, and routed prefixes, which may
// overlap neither another group's routes nor its local_ts.
func checkAcrossGroups(cfg *Config, errs *Errors) {
	for i, g := range cfg.Groups {
		if g.EncapPort != 0 && g.EncapPort == cfg.ControlPort {
			errs.add(g.Pos, "mpsa.groups.%s: encap_port %d is the control_port; write a different encap_port", g.Name, g.EncapPort)
		}
		for _, o := range cfg.Groups[:i] {
			path := "mpsa.groups." + g.Name
			if g.Connection != "" && g.Connection == o.Connection && g.ControlChild == o.ControlChild {
				errs.add(g.Pos, "%s: connection %s with control_child %s is already used by group %s: the control exchange identifies a group by its IKE SA; give each group its own connection or control_child", path, g.Connection, g.ControlChild, o.Name)
			}
			if g.TUN != "" && g.TUN == o.TUN {
				errs.add(g.Pos, "%s: tun %s is already used by group %s; write a different tun = NAME", path, g.TUN, o.Name)
			}
			if g.XFRMInterface != "" && g.XFRMInterface == o.XFRMInterface {
				errs.add(g.Pos, "%s: xfrm_interface %s is already used by group %s; write a different xfrm_interface = NAME", path, g.XFRMInterface, o.Name)
			}
			if g.EncapPort != 0 && g.EncapPort == o.EncapPort {
				errs.add(g.Pos, "%s: encap_port %d is already used by group %s; write a different encap_port", path, g.EncapPort, o.Name)
			}
			if gi, oi := groupid.Of(g.Name), groupid.Of(o.Name); gi.Slot == oi.Slot {
				errs.add(g.Pos, "%s: the name hashes to the kernel identity of group %s (slot %d: reqid %#x, XFRM policy priorities %d and %d, route metric %d), by which mpsad and mpsactl flush tell a group's kernel objects apart; rename one of the two groups", path, o.Name, gi.Slot, gi.ReqID(), gi.Priority(), gi.Priority()+1, gi.RouteMetric())
			}
			if g.IfID != 0 && g.IfID == o.IfID {
				errs.add(g.Pos, "%s: if_id %d is already used by group %s; write a different if_id", path, g.IfID, o.Name)
			}
			if cfg.Role == RoleController && g.BGPEnabled() && o.BGPEnabled() && g.BGP.Port == o.BGP.Port {
				errs.add(g.BGP.Pos, "%s.bgp: port %d is already used by the route reflector of group %s (each listens on every address); write a different port, such as port = %d, and the same in the members' bgp { }", path, g.BGP.Port, o.Name, freeBGPPort(cfg))
			}
			for _, rt := range g.Routes {
				for _, p := range rt.Prefixes {
					for _, ort := range o.Routes {
						for _, q := range ort.Prefixes {
							if p.Overlaps(q) {
								errs.add(rt.Pos, "%s: route %s: prefix %s overlaps %s of route %s in group %s: each destination must map to one group and peer; remove or narrow one of them", path, rt.Name, p, q, ort.Name, o.Name)
							}
						}
					}
				}
			}
			routesOverlapLocal(g, o, errs)
			routesOverlapLocal(o, g, errs)
		}
	}
}

// freeBGPPort suggests a BGP port no controller group uses.
func freeBGPPort(cfg *Config) uint16 {
	for p := uint16(1179); ; p += 1000 {
		if !slices.ContainsFunc(cfg.Groups, func(g *Group) bool { return g.BGPEnabled() && g.BGP.Port == p }) {
			return p
		}
	}
}

// routesOverlapLocal reports the routes of group g that overlap the
// local_ts of group o: the member's own LAN, which must not be sent to a
// peer whichever group the route is in. (local_ts may repeat across
// groups: one LAN can take part in several groups, whose routes then
// tell its traffic apart by destination.)
func routesOverlapLocal(g, o *Group, errs *Errors) {
	for _, rt := range g.Routes {
		for _, p := range rt.Prefixes {
			for _, l := range o.LocalTS {
				if p.Overlaps(l) {
					errs.add(rt.Pos, "mpsa.groups.%s: route %s: prefix %s overlaps local_ts %s of group %s: traffic for this member's own LAN would be sent to a peer; remove or narrow one of them", g.Name, rt.Name, p, l, o.Name)
				}
			}
		}
	}
}

// checkOnlySections reports settings in a section that holds only named
// subsections, showing the form to write.
func checkOnlySections(r *sectionReader, form string) {
	r.checkRefs()
	for _, kv := range r.sec.Keys {
		r.errorf(kv.Pos, "unexpected setting %q: %s holds only named sections; write %s", kv.Name, r.sec.Name, form)
	}
}

// suggestRekey proposes a rekey_time for a lifetime: seven eighths of it,
// in whole minutes when the lifetime is long enough, and at most the
// lifetime less the rollover, so that the margin holds it. It returns 0
// (not a valid rekey_time) when the lifetime is too short for any.
func suggestRekey(life, rollover Duration) Duration {
	d := time.Duration(life) * 7 / 8
	if t := d.Truncate(time.Minute); t > 0 {
		d = t
	}
	d = min(d.Truncate(time.Second), time.Duration(life-rollover))
	return Duration(max(d, 0))
}

// childConf reads connections.CONN.children.CHILD of the configuration,
// nil when it is not there. Its syntax is swanctl's to check; mpsad reads
// only the proposals.
func childConf(root *Section, conn, child string) *ChildConf {
	sec := root.Lookup("connections", conn, "children", child)
	if sec == nil {
		return nil
	}
	c := &ChildConf{Pos: sec.Pos}
	split := func(key string) []string {
		kv := sec.Key(key)
		if kv == nil {
			return nil
		}
		var out []string
		for _, p := range strings.Split(kv.Value, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	c.ESPProposals = split("esp_proposals")
	c.AHProposals = split("ah_proposals")
	return c
}
