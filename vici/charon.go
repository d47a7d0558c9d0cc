package vici

import (
	"context"
	"fmt"
	"slices"
	"strings"

	govici "github.com/strongswan/govici/vici"
)

// Charon is what charon says of itself over VICI: its version, the plugins
// it loaded (the stats command) and the algorithms its crypto factory
// offers, each with the plugin that provides it (get-algorithms). It is
// read once per VICI session, not per event.
type Charon struct {
	Version Version
	// Plugins are the loaded plugins in load order ("charon" first).
	Plugins []string
	// Algorithms maps an algorithm kind as get-algorithms names it
	// ("encryption", "integrity", "aead", "prf", "dh", ...) to the
	// algorithms of that kind (strongSwan's names, "AES_CBC",
	// "HMAC_SHA2_256_128", "AES_GCM_16") and the plugin of each.
	Algorithms map[string]map[string]string
}

// HasPlugin reports whether charon loaded the named plugin.
func (c *Charon) HasPlugin(name string) bool { return slices.Contains(c.Plugins, name) }

// HasAlgorithm reports whether charon's crypto factory offers the
// algorithm of the given kind.
func (c *Charon) HasAlgorithm(kind, name string) bool {
	_, ok := c.Algorithms[kind][name]
	return ok
}

// Charon queries version, stats and get-algorithms.
func (c *Client) Charon(ctx context.Context) (*Charon, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	stats, err := c.s.Call(ctx, "stats", nil)
	if err != nil {
		return nil, fmt.Errorf("vici: stats: %w", err)
	}
	algs, err := c.s.Call(ctx, "get-algorithms", nil)
	if err != nil {
		return nil, fmt.Errorf("vici: get-algorithms: %w", err)
	}
	return parseCharon(v, stats, algs)
}

// parseCharon reads the answers of stats and get-algorithms.
func parseCharon(v Version, stats, algs *govici.Message) (*Charon, error) {
	ch := &Charon{Version: v, Algorithms: map[string]map[string]string{}}
	switch p := stats.Get("plugins").(type) {
	case []string:
		ch.Plugins = slices.Clone(p)
	case nil:
		return nil, fmt.Errorf("vici: stats: no plugins list")
	default:
		return nil, fmt.Errorf("vici: stats: plugins is %T, not a list", p)
	}
	for _, kind := range algs.Keys() {
		sec, ok := algs.Get(kind).(*govici.Message)
		if !ok {
			return nil, fmt.Errorf("vici: get-algorithms: %s is not a section", kind)
		}
		m := map[string]string{}
		for _, name := range sec.Keys() {
			plugin, _ := sec.Get(name).(string)
			m[name] = plugin
		}
		ch.Algorithms[kind] = m
	}
	return ch, nil
}

// The ESP algorithms of charon's default ESP proposal (strongSwan 5.9:
// proposal_create_default_aead and proposal_create_default for
// PROTO_ESP): charon proposes them whatever plugins are loaded, because
// the kernel does ESP. kernel-libipsec does ESP with charon's own crypto
// factory instead, so there they must be in get-algorithms.
var defaultESP = []espAlg{
	{"aead", "AES_GCM_16", "aes128gcm16"},
	{"encryption", "AES_CBC", "aes128"},
	{"integrity", "HMAC_SHA2_256_128", "sha256"},
}

// espAlg is one ESP algorithm: its get-algorithms kind and name, and a
// proposal keyword that selects it.
type espAlg struct{ kind, name, keyword string }

// espKeywords maps proposal keywords to the algorithm they select. Only
// the common ones: a keyword not listed here is not checked.
var espKeywords = func() map[string]espAlg {
	m := map[string]espAlg{}
	add := func(kind, name string, words ...string) {
		for _, w := range words {
			m[w] = espAlg{kind, name, w}
		}
	}
	add("encryption", "AES_CBC", "aes", "aes128", "aes192", "aes256")
	add("encryption", "AES_CTR", "aes128ctr", "aes192ctr", "aes256ctr")
	add("encryption", "NULL", "null")
	add("aead", "AES_GCM_16", "aes128gcm16", "aes192gcm16", "aes256gcm16", "aes128gcm128", "aes192gcm128", "aes256gcm128", "aes128gcm", "aes192gcm", "aes256gcm")
	add("aead", "AES_GCM_12", "aes128gcm12", "aes192gcm12", "aes256gcm12", "aes128gcm96", "aes192gcm96", "aes256gcm96")
	add("aead", "AES_GCM_8", "aes128gcm8", "aes192gcm8", "aes256gcm8", "aes128gcm64", "aes192gcm64", "aes256gcm64")
	add("aead", "AES_CCM_16", "aes128ccm16", "aes192ccm16", "aes256ccm16", "aes128ccm", "aes192ccm", "aes256ccm")
	add("aead", "CHACHA20_POLY1305", "chacha20poly1305")
	add("integrity", "HMAC_SHA1_96", "sha", "sha1")
	add("integrity", "HMAC_SHA2_256_128", "sha256", "sha2_256")
	add("integrity", "HMAC_SHA2_384_192", "sha384", "sha2_384")
	add("integrity", "HMAC_SHA2_512_256", "sha512", "sha2_512")
	add("integrity", "AES_XCBC_96", "aesxcbc")
	add("integrity", "AES_CMAC_96", "aescmac")
	return m
}()

// ESPProblems says why charon may be unable to install a CHILD_SA with
// the given esp_proposals (swanctl.conf's value, split at commas; nil for
// charon's default proposal), or nothing. It finds one case for sure:
// kernel-libipsec, which does ESP with charon's own crypto plugins, and a
// proposal algorithm no loaded plugin provides. charon then negotiates the
// algorithm (it does not check ESP algorithms against its plugins) and
// fails to install the SA ("unsupported AEAD algorithm AES_GCM_16"), so the
// child fails with NO_PROPOSAL_CHOSEN. With the kernel's ESP
// (kernel-netlink) the kernel's algorithms count, which VICI does not tell.
func (c *Charon) ESPProblems(proposals []string) []string {
	if !c.HasPlugin("kernel-libipsec") {
		return nil
	}
	var want []espAlg
	what := "charon's default ESP proposal"
	if len(proposals) == 0 {
		want = defaultESP
	} else {
		what = fmt.Sprintf("esp_proposals = %s", strings.Join(proposals, ", "))
		for _, p := range proposals {
			for _, w := range strings.Split(strings.TrimSpace(p), "-") {
				if a, ok := espKeywords[strings.ToLower(w)]; ok && !slices.Contains(want, a) {
					want = append(want, a)
				}
			}
		}
	}
	var missing []string
	for _, a := range want {
		if a.name == "NULL" || c.HasAlgorithm(a.kind, a.name) {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (%s)", a.name, a.keyword))
	}
	if len(missing) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("charon does ESP itself (kernel-libipsec) but no loaded plugin provides %s, which %s offers: "+
		"a CHILD_SA negotiated with it cannot be installed and fails with NO_PROPOSAL_CHOSEN; "+
		"load the plugins that provide it (Debian: install libstrongswan-standard-plugins for gcm and openssl, "+
		"libstrongswan-extra-plugins for chapoly) or restrict the child's esp_proposals to algorithms charon has",
		strings.Join(missing, ", "), what)}
}

// InitiateChild asks charon to establish the CHILD_SA child of connection
// ike (over the IKE SA it has for it, or a new one) and returns at once,
// without waiting for the outcome (initiate with timeout -1): what charon
// says about it arrives in its log event (Watcher.OnChildFailure), and
// the CHILD_SA, if it comes up, in child-updown.
func (c *Client) InitiateChild(ctx context.Context, ike, child string) error {
	m := govici.NewMessage()
	for _, kv := range [...][2]string{{"ike", ike}, {"child", child}, {"timeout", "-1"}} {
		if err := m.Set(kv[0], kv[1]); err != nil {
			return fmt.Errorf("vici: initiate: %w", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.s.Call(ctx, "initiate", m)
	if err != nil {
		return fmt.Errorf("vici: initiate child %s of %s: %w", child, ike, err)
	}
	if ok, _ := r.Get("success").(string); ok != "yes" {
		msg, _ := r.Get("errmsg").(string)
		return fmt.Errorf("vici: initiate child %s of %s: charon said %q", child, ike, msg)
	}
	return nil
}
