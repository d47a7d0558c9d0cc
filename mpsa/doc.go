// Package mpsa implements the protocol of draft-yamaya-ipsecme-mpsa, the
// multi-point security association, as a pure library: the IKEv2 wire codec
// for V(MPSA) and N(MPSA_PUT), key derivation (prf+ and KEYMAT), the ESP
// algorithm registry, the controller's group SA manager and the member's SA
// lifecycle with rollover. Nothing here touches the network or the kernel;
// time comes from an injected Clock.
package mpsa
