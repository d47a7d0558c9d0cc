// Package server is mpsad's engine, embeddable like gobgp's pkg/server: it
// watches charon over VICI, runs the MPSA control exchange as controller or
// member, drives the member SA lifecycle into a data plane, and answers
// status queries. cmd/mpsad wires it to flags, signals and systemd.
package server
