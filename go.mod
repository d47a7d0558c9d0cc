module github.com/mpsa/mpsa

go 1.26.0

require (
	github.com/strongswan/govici v0.8.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require github.com/coreos/go-systemd/v22 v22.7.0
