// Package scale is the scale harness of mpsa with real charon (`make
// scale`): a controller namespace runs charon and mpsad as in production;
// a member-farm namespace runs ONE charon that initiates N IKE SAs to the
// controller (N connections, N identities, N control addresses) and ONE
// load generator that speaks the member side of the control exchange for
// all N. The load generator (RunFarm, `mpsa-scale farm`) is the
// project's own engine, server.Server in the member role with one group
// per farm connection, over a recording data plane (Recorder): it is not a
// second implementation of the protocol.
//
// A Harness runs three phases and measures each: Join (the N IKE SAs come
// up and every member acknowledges the group SA), Rekey (`mpsactl rekey`
// until all N acknowledged the new SA) and Restart (the controller's mpsad
// is stopped and started again and pushes its new SA to all N). Result
// sums them up; Result.Line is the machine-readable last line of
// `make scale`. The package's test runs it with a small N and asserts
// correctness only; the figures are in docs/scale.md.
package scale
