package vici

import (
	"fmt"
	"strconv"
	"strings"

	govici "github.com/strongswan/govici/vici"
)

// EventLog is the VICI event that carries charon's log messages (those of
// level 1 and below, "control", in every group) to subscribed sessions.
const EventLog = "log"

// LogEvent is one of charon's log messages as the log event carries it.
type LogEvent struct {
	// Group is charon's debug group: "IKE", "CHD", "CFG", "KNL", "ESP"
	// (libipsec), "LIB", ...
	Group string
	// Level is the message's level (0 audit, 1 control).
	Level int
	// IKEName and IKEUniqueID name the IKE SA the message was logged
	// for: its connection and unique id; empty and 0 for messages
	// outside an IKE SA's context.
	IKEName     string
	IKEUniqueID uint32
	// Msg is the message text.
	Msg string
}

// String formats the event as charon's file log does: "[CHD] msg".
func (e LogEvent) String() string { return "[" + e.Group + "] " + e.Msg }

// ParseLogEvent parses a log event.
func ParseLogEvent(m *govici.Message) (LogEvent, error) {
	str := func(k string) string { s, _ := m.Get(k).(string); return s }
	e := LogEvent{Group: str("group"), IKEName: str("ikesa-name"), Msg: str("msg")}
	if e.Msg == "" {
		return LogEvent{}, fmt.Errorf("vici: log event without msg")
	}
	if l := str("level"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return LogEvent{}, fmt.Errorf("vici: log event: level %q: %w", l, err)
		}
		e.Level = n
	}
	if id := str("ikesa-uniqueid"); id != "" {
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return LogEvent{}, fmt.Errorf("vici: log event: ikesa-uniqueid %q: %w", id, err)
		}
		e.IKEUniqueID = uint32(n)
	}
	return e, nil
}

// childFailureMarks are fragments of charon's messages (strongSwan 5.9)
// that say why a CHILD_SA was not established or not installed, or went
// away: NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE and the like from the peer,
// the local failures to select a proposal or traffic selectors, and
// failures to install the SA (kernel-libipsec's "unsupported ...
// algorithm", the kernel's "unable to install").
var childFailureMarks = []string{
	"no CHILD_SA built",
	"failed to establish CHILD_SA",
	"NO_PROPOSAL_CHOSEN",
	"TS_UNACCEPTABLE",
	"SINGLE_PAIR_REQUIRED",
	"INTERNAL_ADDRESS_FAILURE",
	"FAILED_CP_REQUIRED",
	"no acceptable proposal found",
	"traffic selectors",
	"unsupported",
	"unable to install",
	"unable to add SAD entry",
	"unable to add policy",
	"failed to install",
	"received DELETE for ESP CHILD_SA",
	"received AUTHENTICATION_FAILED",
}

// childCloseMarks are fragments of charon's messages that say a CHILD_SA
// was closed: charon logs them at every delete, each rekey's included, so
// alone they are routine; they explain a control child only once it is
// known to be missing.
var childCloseMarks = []string{
	"CHILD_SA closed",
	"closing CHILD_SA",
}

// ChildFailure reports whether the message is one of those that say why a
// CHILD_SA failed, was not installed or went down (see childFailureMarks
// and childCloseMarks): a reason worth showing an operator whose control
// child is missing.
func (e LogEvent) ChildFailure() bool {
	return e.IKEName != "" && ExplainsChildFailure(e.Msg)
}

// ChildClosed reports whether the message only says that a CHILD_SA was
// closed (childCloseMarks), which charon logs at every delete and rekey:
// worth showing for a child known to be missing, noise otherwise.
func (e LogEvent) ChildClosed() bool {
	return contains(e.Msg, childCloseMarks) && !contains(e.Msg, childFailureMarks)
}

// ExplainsChildFailure reports whether a message of charon's (from the
// log event or a line of its log file) is one that says why a CHILD_SA
// failed, was not installed or went down.
func ExplainsChildFailure(msg string) bool {
	return contains(msg, childFailureMarks) || contains(msg, childCloseMarks)
}

// contains reports whether msg contains one of marks.
func contains(msg string, marks []string) bool {
	for _, m := range marks {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}
