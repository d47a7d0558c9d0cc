//go:build mpsavm

package vm

import "strings"

func containsModule(procModules, name string) bool {
	for _, line := range strings.Split(procModules, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return true
		}
	}
	return false
}
