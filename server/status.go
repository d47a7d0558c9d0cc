package server

import (
	"context"

	"github.com/mpsa/mpsa/api"
)

// The status API lives in package api, which clients such as mpsactl use
// without linking the engine. These names keep the server's earlier API
// for embedders and tests that use it.
type (
	// Status is api.Status.
	Status = api.Status
	// GroupStatus is api.GroupStatus.
	GroupStatus = api.GroupStatus
	// MemberStatus is api.MemberStatus.
	MemberStatus = api.MemberStatus
	// SAStatus is api.SAStatus.
	SAStatus = api.SAStatus
	// PeerLink is api.PeerLink.
	PeerLink = api.PeerLink
	// Peer is api.Peer.
	Peer = api.Peer
	// Counter is api.Counter.
	Counter = api.Counter
	// API is api.API.
	API = api.API
	// Client is api.Client.
	Client = api.Client
)

// ErrNoGroup is api.ErrNoGroup.
var ErrNoGroup = api.ErrNoGroup

// ServeStatus is api.Serve.
func ServeStatus(ctx context.Context, path string, impl API, up chan<- error) error {
	return api.Serve(ctx, path, impl, up)
}

// NewClient is api.NewClient.
func NewClient(path string) *Client { return api.NewClient(path) }
