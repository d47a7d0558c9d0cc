// PLACEHOLDER, for the packaging tests only: a stand-in for cmd/mpsad in
// trees where the daemon does not exist yet. It has mpsad's --help and
// --version and nothing else. The tests use the real cmd/mpsad whenever
// the tree has it, and say in their log which one they packaged.
package main

import (
	"fmt"
	"os"

	"github.com/mpsa/mpsa/internal/version"
)

const usage = `Usage: mpsad [--config FILE]
       mpsad --version

PLACEHOLDER for the packaging tests: cmd/mpsad is not in this tree.

Options:
  --config FILE  configuration file
  --version      print the version and exit
  --help         print this help and exit
`

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--help" {
		fmt.Print(usage)
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println(version.String("mpsad"))
		return
	}
	fmt.Fprint(os.Stderr, usage)
	os.Exit(2)
}
