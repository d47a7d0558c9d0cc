package charon

import (
	"strings"
	"testing"
)

// TestStrongswanConfSettings: Config.Settings go into the charon section,
// after the plugin list and before the plugins' own sections.
func TestStrongswanConfSettings(t *testing.T) {
	conf := strongswanConf("/run/x", Config{Settings: []string{"ikesa_table_size = 4096", "threads = 16"}})
	load := strings.Index(conf, "  load = ")
	set := strings.Index(conf, "\n  ikesa_table_size = 4096\n  threads = 16\n")
	plugins := strings.Index(conf, "  plugins {")
	if !strings.HasPrefix(conf[strings.Index(conf, "charon {"):], "charon {\n") || load < 0 || set < load || plugins < set {
		t.Errorf("settings not in the charon section after load:\n%s", conf)
	}
	if plain := strongswanConf("/run/x", Config{}); strings.Contains(plain, "ikesa_table_size") {
		t.Errorf("settings without Settings:\n%s", plain)
	}
}
