package bgp

import "github.com/mpsa/mpsa/swanctl"

// MemberConfigFor returns the MemberConfig of a member group's bgp { }
// section; controlInterface is the global control_interface (charon's TUN
// device with kernel-libipsec, or empty). The engine adds Logger and
// OnChange.
func MemberConfigFor(b *swanctl.BGP, controlInterface string) MemberConfig {
	return MemberConfig{
		ASN:           b.ASN,
		RouterID:      b.RouterID,
		Port:          b.Port,
		HoldTime:      b.HoldTime.Std(),
		RestartTime:   b.RestartTime.Std(),
		StaleTime:     b.StaleTime.Std(),
		BindInterface: controlInterface,
	}
}

// ReflectorConfigFor returns the ReflectorConfig of a controller group's
// bgp { } section; controlInterface is the global control_interface. The
// engine adds Logger.
func ReflectorConfigFor(b *swanctl.BGP, controlInterface string) ReflectorConfig {
	return ReflectorConfig{
		ASN:           b.ASN,
		RouterID:      b.RouterID,
		Port:          b.Port,
		HoldTime:      b.HoldTime.Std(),
		RestartTime:   b.RestartTime.Std(),
		DeferralTime:  b.DeferralTime.Std(),
		BindInterface: controlInterface,
		Policy:        b.Rules(),
		CheckNextHop:  b.NextHop != swanctl.NextHopAny,
	}
}
