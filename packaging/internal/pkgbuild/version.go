package pkgbuild

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	describeRE = regexp.MustCompile(`^(.+)-([0-9]+)-g([0-9a-f]{4,40})$`)
	hashRE     = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
	tagRE      = regexp.MustCompile(`^[0-9][0-9A-Za-z.]*(-[0-9A-Za-z.-]+)?$`)
	// validRE is what both dpkg and rpm accept as an upstream version
	// without an epoch or a release: a leading digit, no hyphen, no colon.
	validRE = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`)
)

// PackageVersion turns the output of `git describe --tags --always
// --dirty` into an upstream version that dpkg and rpm both accept and
// order correctly; commits is `git rev-list --count HEAD`, used when no
// tag exists.
//
//	v1.2.0                    1.2.0
//	v1.2.0-rc1                1.2.0~rc1          (before 1.2.0)
//	v1.2.0-5-gabc1234         1.2.0+git5.gabc1234 (after 1.2.0, before 1.2.1)
//	v1.2.0-5-gabc1234-dirty   1.2.0+git5.gabc1234.dirty
//	abc1234 (no tag yet)      0.0.0~git42.gabc1234 (before any release)
//	dev (not a git checkout)  0.0.0~dev
func PackageVersion(describe string, commits int) (string, error) {
	d := strings.TrimSpace(describe)
	dirty := strings.HasSuffix(d, "-dirty")
	d = strings.TrimSuffix(d, "-dirty")
	var v string
	switch {
	case d == "" || d == "dev":
		v = "0.0.0~dev"
	case describeRE.MatchString(d):
		m := describeRE.FindStringSubmatch(d)
		base, err := tagVersion(m[1])
		if err != nil {
			return "", err
		}
		v = fmt.Sprintf("%s+git%s.g%s", base, m[2], m[3])
	case hashRE.MatchString(d):
		// git describe --always abbreviates to at least 7 digits (hashRE
		// wants 7 to 40); a release tag has dots.
		v = fmt.Sprintf("0.0.0~git%d.g%s", commits, d)
	default:
		base, err := tagVersion(d)
		if err != nil {
			return "", err
		}
		v = base
	}
	if dirty {
		if strings.Contains(v, "+") || strings.Contains(v, "~git") {
			v += ".dirty"
		} else {
			v += "+dirty"
		}
	}
	if !validRE.MatchString(v) {
		return "", fmt.Errorf("pkgbuild: version %q from %q is not valid for dpkg and rpm", v, describe)
	}
	return v, nil
}

// tagVersion turns a release tag (v1.2.0, 1.2.0-rc.1) into an upstream
// version; a pre-release suffix sorts before the release (~).
func tagVersion(tag string) (string, error) {
	t := strings.TrimPrefix(tag, "v")
	if !tagRE.MatchString(t) {
		return "", fmt.Errorf("pkgbuild: tag %q is not a version (want v1.2.3 or v1.2.3-rc1)", tag)
	}
	base, pre, ok := strings.Cut(t, "-")
	if !ok {
		return base, nil
	}
	return base + "~" + strings.ReplaceAll(pre, "-", "."), nil
}
