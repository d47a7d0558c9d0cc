package pkgbuild

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/internal/testenv"
)

func TestPackageVersion(t *testing.T) {
	for _, tc := range []struct {
		describe string
		commits  int
		want     string
	}{
		{"v1.2.0", 0, "1.2.0"},
		{"1.2.0", 0, "1.2.0"},
		{"v1.2.0-rc1", 0, "1.2.0~rc1"},
		{"v1.2.0-rc.1", 0, "1.2.0~rc.1"},
		{"v1.2.0-beta-2", 0, "1.2.0~beta.2"},
		{"v1.2.0-5-gabc1234", 0, "1.2.0+git5.gabc1234"},
		{"v1.2.0-rc1-5-gabc1234", 0, "1.2.0~rc1+git5.gabc1234"},
		{"v1.2.0-5-gabc1234-dirty", 0, "1.2.0+git5.gabc1234.dirty"},
		{"v1.2.0-dirty", 0, "1.2.0+dirty"},
		{"abc1234", 42, "0.0.0~git42.gabc1234"},
		{"1753eef-dirty", 8, "0.0.0~git8.g1753eef.dirty"},
		{"dev", 0, "0.0.0~dev"},
		{"", 0, "0.0.0~dev"},
	} {
		got, err := PackageVersion(tc.describe, tc.commits)
		if err != nil || got != tc.want {
			t.Errorf("PackageVersion(%q, %d) = %q, %v; want %q", tc.describe, tc.commits, got, err, tc.want)
		}
	}
}

func TestPackageVersionRejectsNonVersionTags(t *testing.T) {
	for _, d := range []string{"release-one", "vX", "v1.2:3", "v1.2.0_final-3-gabc1234"} {
		if v, err := PackageVersion(d, 1); err == nil {
			t.Errorf("PackageVersion(%q) = %q, want an error", d, v)
		}
	}
}

// ordered lists git describe outputs from oldest to newest.
var ordered = []struct {
	describe string
	commits  int
}{
	{"abc1234", 9},
	{"abc1235", 10},
	{"v0.1.0-rc1", 0},
	{"v0.1.0-rc1-2-gabc1236", 0},
	{"v0.1.0", 0},
	{"v0.1.0-dirty", 0},
	{"v0.1.0-1-gabc1237", 0},
	{"v0.1.0-12-gabc1238", 0},
	{"v0.1.1", 0},
	{"v0.10.0", 0},
}

// TestVersionsOrderInDpkg asks dpkg itself that each version sorts after
// the one before, so that upgrades go forward.
func TestVersionsOrderInDpkg(t *testing.T) {
	dpkg := testenv.NeedCommand(t, "dpkg")
	prev := ""
	for _, o := range ordered {
		v, err := PackageVersion(o.describe, o.commits)
		if err != nil {
			t.Fatal(err)
		}
		if err := exec.Command(dpkg, "--validate-version", v).Run(); err != nil {
			t.Errorf("dpkg rejects version %q (from %q)", v, o.describe)
		}
		if prev != "" {
			if err := exec.Command(dpkg, "--compare-versions", prev, "lt", v).Run(); err != nil {
				t.Errorf("dpkg: %q is not older than %q", prev, v)
			}
		}
		prev = v
	}
}

// TestVersionsOrderInRPM does the same with rpm's vercmp.
func TestVersionsOrderInRPM(t *testing.T) {
	rpm := testenv.NeedCommand(t, "rpm")
	var vs []string
	for _, o := range ordered {
		v, err := PackageVersion(o.describe, o.commits)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	var lua strings.Builder
	for i := 1; i < len(vs); i++ {
		fmt.Fprintf(&lua, "print(rpm.vercmp(%q, %q) .. \" \") ", vs[i-1], vs[i])
	}
	out, err := exec.Command(rpm, "--eval", "%{lua: "+lua.String()+"}").Output()
	if err != nil {
		t.Fatalf("rpm --eval: %v", err)
	}
	got := strings.Fields(string(out))
	if len(got) != len(vs)-1 {
		t.Fatalf("rpm printed %q, want %d results", out, len(vs)-1)
	}
	for i, r := range got {
		if r != "-1" {
			t.Errorf("rpm: %q is not older than %q (vercmp %s)", vs[i], vs[i+1], r)
		}
	}
}
