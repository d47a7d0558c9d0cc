// Package vici is mpsad's view of strongSwan's charon over VICI, built on
// github.com/strongswan/govici.
//
// It offers typed views of IKE and CHILD SAs ([IKESA], [ChildSA]), pure
// parsers from VICI messages to those views ([ParseSA], [ParseEvent]), a
// [Client] that connects with retry and exponential backoff, and a
// [Watcher] that keeps a consistent [Snapshot] of charon's SAs: it
// resynchronises with list-sas after every (re)connect, applies ike-updown
// and child-updown events in between, resynchronises again on rekey events,
// when events may have been dropped, and periodically, and delivers an
// [Update] after each change.
//
// SPIs are numbers in network byte order: an IKE SPI uint64 written with
// binary.BigEndian gives the 8 octets of the IKE header, a CHILD SPI uint32
// the 4 octets of the ESP header.
package vici
