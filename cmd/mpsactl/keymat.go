package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/mpsa/mpsa/mpsa"
)

func runKeymat(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("keymat", "keymat --proposal PROPOSAL [--prf PRF] --sk-d HEX --nonce HEX", stderr)
	proposal := fs.String("proposal", "", "ESP proposal in strongSwan keywords, e.g. aes256-sha256 (required)")
	prfName := fs.String("prf", "", "PRF keyword: "+strings.Join(mpsa.PRFKeywords(), ", ")+"; by default it follows the integrity algorithm (sha256 gives prfsha256)")
	skdHex := fs.String("sk-d", "", "SK_d as hex (required)")
	nonceHex := fs.String("nonce", "", "Nonce as hex (required)")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "mpsactl keymat: unexpected argument %q\n", pos[0])
		return 2
	}
	for _, req := range []struct{ name, value string }{{"--proposal", *proposal}, {"--sk-d", *skdHex}, {"--nonce", *nonceHex}} {
		if req.value == "" {
			fmt.Fprintf(stderr, "mpsactl keymat: %s is required\n", req.name)
			return 2
		}
	}
	p := *proposal
	if *prfName != "" {
		// Only a PRF keyword: appended to the proposal, any other
		// keyword would be taken for what it names there ("sha256" as
		// a second integrity algorithm, or as the only one).
		if _, ok := mpsa.LookupPRFKeyword(*prfName); !ok {
			fmt.Fprintf(stderr, "mpsactl keymat: --prf: %q is not a PRF keyword (%s)\n", *prfName, strings.Join(mpsa.PRFKeywords(), ", "))
			return 1
		}
		p += "-" + *prfName
	}
	suite, err := mpsa.ParseProposal(p)
	if err != nil {
		fmt.Fprintf(stderr, "mpsactl keymat: %v\n", err)
		return 1
	}
	skd, err := hex.DecodeString(*skdHex)
	if err != nil || len(skd) == 0 {
		fmt.Fprintln(stderr, "mpsactl keymat: --sk-d: not hex")
		return 1
	}
	nonce, err := hex.DecodeString(*nonceHex)
	if err != nil || len(nonce) == 0 {
		fmt.Fprintln(stderr, "mpsactl keymat: --nonce: not hex")
		return 1
	}
	defer clear(skd)
	defer clear(nonce)
	prf, _ := mpsa.LookupPRF(suite.PRF)
	if len(skd) != prf.KeyBytes {
		fmt.Fprintf(stderr, "mpsactl keymat: warning: SK_d has %d octets; MPSA_PUT carries %d for %s\n", len(skd), prf.KeyBytes, prf.Name)
	}
	if len(nonce) < mpsa.MinNonceLen || len(nonce) > mpsa.MaxNonceLen {
		fmt.Fprintf(stderr, "mpsactl keymat: warning: Nonce has %d octets; MPSA_PUT carries %d to %d\n", len(nonce), mpsa.MinNonceLen, mpsa.MaxNonceLen)
	}
	keys, err := mpsa.DeriveKeys(&mpsa.Put{Suite: suite, SKd: skd, Nonce: nonce})
	if err != nil {
		fmt.Fprintf(stderr, "mpsactl keymat: %v\n", err)
		return 1
	}
	defer keys.Zero()
	fmt.Fprintf(stdout, "encr_key=%x\ninteg_key=%x\n", keys.Encr, keys.Integ)
	return 0
}
