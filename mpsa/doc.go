// Package mpsa implements the protocol of draft-yamaya-ipsecme-mpsa, the
// multi-point security association, as a pure library: the IKEv2 wire codec
// for V(MPSA) and N(MPSA_PUT), key derivation (prf+ and KEYMAT), the ESP
// algorithm registry, the controller's group SA manager, the member's SA
// lifecycle with rollover and the control exchange. Nothing here touches
// the network or the kernel, and nothing reads the clock: Member, Group and
// Session take the current time as the `now` argument of each call that
// depends on it, and tell when they next need a call (Member.NextDeadline,
// Group.NextRekey, Session.NextDeadline). A Group draws its SPIs and keys
// from the io.Reader passed to NewGroup (crypto/rand when nil).
package mpsa
