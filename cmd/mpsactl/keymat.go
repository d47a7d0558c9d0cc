package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mpsa/mpsa/mpsa"
)

// maxSKdInput bounds what keymat reads as SK_d: a PRF key is at most 64
// octets, 128 hex digits; the rest is room for whitespace.
const maxSKdInput = 4096

func runKeymat(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("keymat", "keymat --proposal PROPOSAL [--prf PRF] --sk-d-file FILE|- --nonce HEX", stderr)
	proposal := fs.String("proposal", "", "ESP proposal in strongSwan keywords, e.g. aes256-sha256 (required)")
	prfName := fs.String("prf", "", "PRF keyword: "+strings.Join(mpsa.PRFKeywords(), ", ")+"; by default it follows the integrity algorithm (sha256 gives prfsha256)")
	skdFile := fs.String("sk-d-file", "", "read SK_d, in hex, from `FILE`, or from stdin with - (required)")
	fs.String("sk-d", "", "refused: a secret on the command line is visible to other users (ps, /proc) and kept in shell history; use --sk-d-file")
	nonceHex := fs.String("nonce", "", "Nonce as hex (required)")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "mpsactl keymat: unexpected argument %q\n", pos[0])
		return 2
	}
	skdGiven := false
	fs.Visit(func(f *flag.Flag) { skdGiven = skdGiven || f.Name == "sk-d" })
	if skdGiven {
		// Never echoed: the value is a secret.
		fmt.Fprintln(stderr, "mpsactl keymat: --sk-d is refused: SK_d on the command line is visible to every user of this machine (ps, /proc/PID/cmdline) and stays in your shell history; "+
			"write it in hex to a file only you can read and pass --sk-d-file FILE, or pipe it in with --sk-d-file -")
		return 2
	}
	for _, req := range []struct{ name, value string }{{"--proposal", *proposal}, {"--sk-d-file", *skdFile}, {"--nonce", *nonceHex}} {
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
	skd, err := readSKd(*skdFile, stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mpsactl keymat: --sk-d-file: %v\n", err)
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

// readSKd reads SK_d in hex from the file at path, or from stdin for "-":
// surrounding whitespace is ignored. What it read is wiped once decoded.
// A file that others can read draws a warning on stderr.
func readSKd(path string, stdin io.Reader, stderr io.Writer) ([]byte, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(stderr, "mpsactl keymat: warning: %s holds a secret but others may read it (mode %04o); chmod 600 it\n", path, st.Mode().Perm())
		}
		r = f
	}
	buf := make([]byte, maxSKdInput+1)
	defer clear(buf)
	n, err := io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	default:
		return nil, fmt.Errorf("more than %d octets: not SK_d in hex", maxSKdInput)
	}
	text := bytes.TrimSpace(buf[:n])
	skd := make([]byte, hex.DecodedLen(len(text)))
	if _, err := hex.Decode(skd, text); err != nil || len(skd) == 0 {
		clear(skd)
		return nil, errors.New("not hex: want SK_d as hex digits, such as the sk_d of mpsactl decode --show-keys")
	}
	return skd, nil
}
