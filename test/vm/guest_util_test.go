//go:build mpsavm

package vm

import (
	"net"
	"strings"
)

func containsModule(procModules, name string) bool {
	for _, line := range strings.Split(procModules, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return true
		}
	}
	return false
}

func ipnet(cidr string) *net.IPNet {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	return n
}
